// Package redisadapter is the Redis adapter (ADAPTER_DRIVER=redis): nodes
// anywhere that reach one Redis server act as one server to clients.
// Messages travel on Redis Pub/Sub in soketi's format, so these nodes and
// soketi's can share a fleet during a migration; presence, occupancy, the
// online users of watchlists and connection counts live in Redis, changed
// by atomic scripts, so every transition is decided once (state.go).
package redisadapter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/soketi-go/soketi/internal/logevery"
	"github.com/soketi-go/soketi/pkg/pusher"
)

// Defaults for Config.
const (
	DefaultTimeout           = 5 * time.Second
	DefaultHeartbeatInterval = time.Second
	// DefaultNodeTTL is how long a node that stopped beating stays alive
	// in the shared state; then any node reaps its entries.
	DefaultNodeTTL = 5 * time.Second
	// resyncInterval is how often writes that failed are made again
	// from local truth.
	resyncInterval = 500 * time.Millisecond
)

// onlineChannel holds, as presence members, the users with a signed-in
// connection (watchlists). No client can subscribe to a "#" name.
const onlineChannel = "#online-users"

// Config configures an Adapter.
type Config struct {
	// NodeID names this process in the shared state; random when empty.
	NodeID string
	// Prefix is SOKETI_ADAPTER_REDIS_PREFIX: messages go on
	// "<prefix>#redis-adapter" ("redis-adapter" without one), as soketi's.
	Prefix string
	// KeyPrefix is prepended to every key (SOKETI_DB_REDIS_KEY_PREFIX).
	KeyPrefix string
	// Timeout bounds every wait on Redis (SOKETI_ADAPTER_REDIS_REQUESTS_TIMEOUT).
	Timeout           time.Duration
	HeartbeatInterval time.Duration
	NodeTTL           time.Duration
	Logger            *slog.Logger
}

// ErrUnavailable wraps failures to reach Redis for what needs the shared
// state (a presence join): the client gets 4302, as with the cluster
// adapter without a quorum.
var ErrUnavailable = errors.New("redisadapter: shared state unavailable")

// Adapter implements pusher.Adapter over Redis.
type Adapter struct {
	cfg   Config
	rdb   redis.UniversalClient
	local *pusher.LocalAdapter
	k     keys
	log   *slog.Logger

	// Pub/Sub channels: soketi's broadcast, request and response
	// channels, and this server's own control channel (which soketi's
	// nodes receive through their pattern and ignore).
	bcast, reqCh, resCh, ctlCh string

	handler atomic.Pointer[handlerBox]

	mu         sync.Mutex
	dirty      map[chanKey]struct{} // channels to resync from local truth
	dirtyUsers map[chanKey]struct{} // (app, user) online states to resync
	apps       map[string]bool      // apps recorded in node-apps
	live       []string             // live node ids, sorted (heartbeat)

	healthy    atomic.Bool // the last heartbeat reached Redis
	registered atomic.Bool // the shared state has this node
	warn       logevery.Limiter
	ownReqs    sync.Map // request ids this node sent (soketi requests)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	pubsub *redis.PubSub
}

type handlerBox struct{ h pusher.Handler }

type chanKey struct{ app, name string }

var (
	_ pusher.Adapter             = (*Adapter)(nil)
	_ pusher.SubscriptionCounter = (*Adapter)(nil)
	_ pusher.HandlerSetter       = (*Adapter)(nil)
)

// New returns an adapter over rdb; Start connects it.
func New(cfg Config, local *pusher.LocalAdapter, rdb redis.UniversalClient) *Adapter {
	if cfg.NodeID == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		cfg.NodeID = hex.EncodeToString(b[:])
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.NodeTTL <= 0 {
		cfg.NodeTTL = DefaultNodeTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	base := "redis-adapter"
	if cfg.Prefix != "" {
		base = cfg.Prefix + "#redis-adapter"
	}
	return &Adapter{
		cfg: cfg, rdb: rdb, local: local, k: keys{prefix: cfg.KeyPrefix},
		log:   cfg.Logger.With("component", "redis-adapter", "node_id", cfg.NodeID),
		bcast: base, reqCh: base + "#comms#req", resCh: base + "#comms#res", ctlCh: base + "#soketi-go",
		dirty: map[chanKey]struct{}{}, dirtyUsers: map[chanKey]struct{}{}, apps: map[string]bool{},
	}
}

// NodeID is this node's name in the shared state.
func (a *Adapter) NodeID() string { return a.cfg.NodeID }

// SetHandler receives the server.
func (a *Adapter) SetHandler(h pusher.Handler) { a.handler.Store(&handlerBox{h}) }

// Start subscribes to the channels and runs the heartbeat, the reaper and
// the resync until ctx ends or Close. Redis need not be up: the node
// serves its own sockets meanwhile and catches up when Redis answers.
func (a *Adapter) Start(ctx context.Context) {
	a.ctx, a.cancel = context.WithCancel(ctx)
	a.pubsub = a.rdb.Subscribe(a.ctx, a.bcast, a.reqCh, a.ctlCh)
	a.wg.Add(3)
	go func() { defer a.wg.Done(); a.receive() }()
	go func() { defer a.wg.Done(); a.beat() }()
	go func() { defer a.wg.Done(); a.resyncLoop() }()
}

// Close removes this node's entries from the shared state (its members
// leave and its channels vacate for the others at once) and stops.
func (a *Adapter) Close() {
	if a.cancel == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.Timeout)
	defer cancel()
	a.reapNode(ctx, a.cfg.NodeID)
	a.cancel()
	_ = a.pubsub.Close()
	a.wg.Wait()
}

// Ready reports whether the last heartbeat reached Redis: without it the
// node serves its own sockets and public channels, and refuses presence
// joins (4302). /ready reports it.
func (a *Adapter) Ready() bool { return a.healthy.Load() && a.registered.Load() }

// op bounds one wait on Redis.
func (a *Adapter) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, a.cfg.Timeout)
}

func (a *Adapter) handlerOf() pusher.Handler {
	if b := a.handler.Load(); b != nil {
		return b.h
	}
	return nil
}

func (a *Adapter) warnf(msg string, args ...any) { a.warn.Warn(a.log, msg, args...) }

// ---------------------------------------------------------------- sockets

// AddSocket enforces the app's connection quota over every node: this
// node's exact count plus the others' latest reports in Redis.
func (a *Adapter) AddSocket(ctx context.Context, c *pusher.Conn) error {
	if limit := c.App.ConnectionLimit(); limit >= 0 {
		local, _ := a.local.SocketCount(ctx, c.App.ID)
		if local+a.remoteSockets(ctx, c.App.ID)+1 > limit {
			return pusher.ErrQuotaExceeded
		}
	}
	return a.local.AddSocket(ctx, c)
}

// RemoveSocket forgets a local connection; its user goes offline here if
// it was the last.
func (a *Adapter) RemoveSocket(c *pusher.Conn) pusher.UserChange {
	if uc := a.local.RemoveSocket(c); uc.Offline != "" {
		a.setOnline(context.Background(), c.App.ID, uc.Offline)
	}
	return pusher.UserChange{Announced: true}
}

func (a *Adapter) remoteSockets(ctx context.Context, app string) int {
	ctx, cancel := a.op(ctx)
	defer cancel()
	counts, err := a.rdb.HGetAll(ctx, a.k.sockets(app)).Result()
	if err != nil {
		return 0 // without Redis the quota holds per node
	}
	total := 0
	for node, v := range counts {
		if node != a.cfg.NodeID {
			n, _ := strconv.Atoi(v)
			total += n
		}
	}
	return total
}

// SocketCount is this node's count plus the others' latest reports.
func (a *Adapter) SocketCount(ctx context.Context, appID string) (int, error) {
	n, _ := a.local.SocketCount(ctx, appID)
	return n + a.remoteSockets(ctx, appID), nil
}

// ---------------------------------------------------------------- messages

// busMessage is soketi's broadcast on the adapter channel.
type busMessage struct {
	UUID        string  `json:"uuid"`
	AppID       string  `json:"appId"`
	Channel     string  `json:"channel"`
	Data        string  `json:"data"`
	ExceptingID *string `json:"exceptingId"`
}

// Publish delivers locally and to every other node through Pub/Sub; a
// message that Redis did not take gets pusher.ErrUnavailable (503), after
// the local subscribers had it.
func (a *Adapter) Publish(ctx context.Context, appID, channel string, f pusher.Frame, except string) (int, error) {
	n, _ := a.local.Publish(ctx, appID, channel, f, except)
	return n, a.broadcast(ctx, appID, channel, f, except)
}

func (a *Adapter) broadcast(ctx context.Context, appID, channel string, f pusher.Frame, except string) error {
	m := busMessage{UUID: a.cfg.NodeID, AppID: appID, Channel: channel, Data: string(f.Payload())}
	if except != "" {
		m.ExceptingID = &except
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	ctx, cancel := a.op(ctx)
	defer cancel()
	if err := a.rdb.Publish(ctx, a.bcast, b).Err(); err != nil {
		a.warnf("publish to other nodes failed", "app_id", appID, "channel", channel, "err", err)
		return fmt.Errorf("%w: %w", pusher.ErrUnavailable, err)
	}
	return nil
}

// SendToUser delivers to the user's connections on every node, on
// soketi's #server-to-user- channel.
func (a *Adapter) SendToUser(ctx context.Context, appID, userID string, f pusher.Frame) (int, error) {
	n, _ := a.local.SendToUser(ctx, appID, userID, f)
	return n, a.broadcast(ctx, appID, pusher.PrefixServerToUser+userID, f, "")
}

// TerminateUser disconnects the user's connections on every node, with
// soketi's request (type 9), which soketi's nodes also obey.
func (a *Adapter) TerminateUser(ctx context.Context, appID, userID string) error {
	_ = a.local.TerminateUser(ctx, appID, userID)
	id := a.cfg.NodeID + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	a.ownReqs.Store(id, time.Now())
	b, _ := json.Marshal(soketiRequest{RequestID: id, AppID: appID, Type: reqTerminateUser,
		Opts: map[string]any{"userId": userID}})
	ctx, cancel := a.op(ctx)
	defer cancel()
	if err := a.rdb.Publish(ctx, a.reqCh, b).Err(); err != nil {
		return fmt.Errorf("%w: %w", pusher.ErrUnavailable, err)
	}
	return nil
}

// ---------------------------------------------------------------- queries

// Channels lists the app's occupied channels with their subscription
// counts over every node and, for presence channels, distinct users.
func (a *Adapter) Channels(ctx context.Context, appID string) (map[string]pusher.ChannelInfo, error) {
	ctx, cancel := a.op(ctx)
	defer cancel()
	names, err := a.rdb.SMembers(ctx, a.k.channels(appID)).Result()
	if err != nil {
		return a.local.Channels(ctx, appID) // this node's view, while Redis is away
	}
	pipe := a.rdb.Pipeline()
	subs := make([]*redis.MapStringStringCmd, len(names))
	users := make([]*redis.IntCmd, len(names))
	for i, ch := range names {
		subs[i] = pipe.HGetAll(ctx, a.k.subs(appID, ch))
		if pusher.KindOf(ch) == pusher.KindPresence {
			users[i] = pipe.HLen(ctx, a.k.members(appID, ch))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return a.local.Channels(ctx, appID)
	}
	out := make(map[string]pusher.ChannelInfo, len(names))
	for i, ch := range names {
		ci := pusher.ChannelInfo{SubscriptionCount: sum(subs[i].Val())}
		if users[i] != nil {
			ci.UserCount = int(users[i].Val())
		}
		if ci.SubscriptionCount > 0 {
			out[ch] = ci
		}
	}
	return out, nil
}

// Channel answers for one channel over every node.
func (a *Adapter) Channel(ctx context.Context, appID, channel string) (pusher.ChannelInfo, error) {
	ctx, cancel := a.op(ctx)
	defer cancel()
	counts, err := a.rdb.HGetAll(ctx, a.k.subs(appID, channel)).Result()
	if err != nil {
		return a.local.Channel(ctx, appID, channel)
	}
	ci := pusher.ChannelInfo{SubscriptionCount: sum(counts)}
	if pusher.KindOf(channel) == pusher.KindPresence {
		n, err := a.rdb.HLen(ctx, a.k.members(appID, channel)).Result()
		if err != nil {
			return a.local.Channel(ctx, appID, channel)
		}
		ci.UserCount = int(n)
	}
	return ci, nil
}

// Members lists a presence channel's users over every node.
func (a *Adapter) Members(ctx context.Context, appID, channel string) ([]pusher.Member, error) {
	ctx, cancel := a.op(ctx)
	defer cancel()
	all, err := a.rdb.HGetAll(ctx, a.k.members(appID, channel)).Result()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	out := make([]pusher.Member, 0, len(all))
	for user, info := range all {
		m := pusher.Member{UserID: json.RawMessage(user)}
		if info != "" {
			m.UserInfo = json.RawMessage(info)
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(x, y pusher.Member) int { return compareStrings(string(x.UserID), string(y.UserID)) })
	return out, nil
}

func sum(counts map[string]string) int {
	total := 0
	for _, v := range counts {
		n, _ := strconv.Atoi(v)
		total += n
	}
	return total
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
