// Package cluster is the pusher.Adapter of a cluster: it delivers messages to
// other nodes over the inter-node streams, keeps presence and channel
// occupancy in the Raft-replicated state, and answers cluster-wide queries.
package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/soketi-go/soketi/internal/logevery"

	"github.com/soketi-go/soketi/pkg/cluster/stream"
	"github.com/soketi-go/soketi/pkg/consensus"
	"github.com/soketi-go/soketi/pkg/pusher"
)

// Replica is the consensus layer as the adapter uses it.
type Replica interface {
	Apply(ctx context.Context, cmd consensus.Command) (consensus.Result, error)
	FSM() *consensus.FSM
	Registered() bool
	IsLeader() bool
	Leader() (id, addr string)
}

// Streams is the data plane as the adapter uses it.
type Streams interface {
	Send(ctx context.Context, peer string, m stream.Message) error
	Broadcast(ctx context.Context, m stream.Message, peers []string) error
	// BroadcastTo is Broadcast to peers, then best effort to also.
	BroadcastTo(ctx context.Context, m stream.Message, peers, also []string) error
}

// Config configures an Adapter.
type Config struct {
	NodeID      string
	Incarnation uint64
	// RequestTimeout bounds a cluster-wide query (ADAPTER_CLUSTER_REQUESTS_TIMEOUT).
	RequestTimeout time.Duration
	// ApplyTimeout bounds a presence or occupancy write made for a client.
	ApplyTimeout time.Duration
	// CountsInterval is how often socket counts are sent to the other nodes.
	CountsInterval time.Duration
	Logger         *slog.Logger
}

// Adapter implements pusher.Adapter for a cluster.
type Adapter struct {
	cfg     Config
	log     *slog.Logger
	local   *pusher.LocalAdapter
	replica Replica
	streams Streams

	handler atomic.Pointer[handlerBox]

	peersMu   sync.RWMutex
	peers     []string // alive peers with a stream address, self excluded
	lingering []string // peers declared dead whose streams are kept (node.go)

	countsMu sync.Mutex
	counts   map[string]nodeCounts // peer → its latest per-app socket counts

	queries   *queries
	subcounts *subCounts // other nodes' subscription counts (subcounts.go)
	retry     *retryQueue
	view      *memberView
	batch     *batcher // group commit of presence and occupancy writes

	// sendFailures counts messages other nodes did not get (back-pressure,
	// an unknown peer); they are logged at most once per logevery.Interval.
	sendFailures atomic.Uint64
	sendWarn     logevery.Limiter
	leases       atomic.Pointer[leases] // the cluster rate limiter's transport, if any
	// reporter answers the cluster page's report query (report.go); set
	// by Start before any peer can ask.
	reporter func() NodeReport
}

type handlerBox struct{ h pusher.Handler }

type nodeCounts struct {
	apps map[string]int
	at   time.Time
}

var _ pusher.Adapter = (*Adapter)(nil)

// New returns an adapter over local delivery, the replica and the streams.
// The streams' deliver callback must be wired to Deliver.
func New(cfg Config, local *pusher.LocalAdapter, replica Replica, streams Streams) *Adapter {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 2 * time.Second
	}
	if cfg.ApplyTimeout <= 0 {
		cfg.ApplyTimeout = 3 * time.Second
	}
	if cfg.CountsInterval <= 0 {
		cfg.CountsInterval = time.Second
	}
	a := &Adapter{
		cfg: cfg, log: cfg.Logger.With("component", "cluster"),
		local: local, replica: replica, streams: streams,
		counts: map[string]nodeCounts{},
	}
	a.queries = newQueries(a)
	a.subcounts = newSubCounts()
	a.retry = newRetryQueue(a)
	a.view = newMemberView(local)
	a.batch = newBatcher(defaultBatchLimits)
	return a
}

// SetHandler receives the server, which announces transitions.
func (a *Adapter) SetHandler(h pusher.Handler) { a.handler.Store(&handlerBox{h}) }

func (a *Adapter) announce(ctx context.Context, app string, t pusher.Transition) {
	if b := a.handler.Load(); b != nil {
		b.h.Announce(ctx, app, t)
	}
}

// Local returns the adapter of this node's own connections.
func (a *Adapter) Local() *pusher.LocalAdapter { return a.local }

// SetPeers sets the peers messages go to: the alive ones, which a publish
// must reach, and the lingering ones, declared dead but perhaps only cut
// off, which get messages best effort.
func (a *Adapter) SetPeers(alive, lingering []string) {
	peers := make([]string, 0, len(alive))
	for _, id := range alive {
		if id != a.cfg.NodeID {
			peers = append(peers, id)
		}
	}
	a.peersMu.Lock()
	a.peers, a.lingering = peers, lingering
	a.peersMu.Unlock()
	a.countsMu.Lock()
	up := map[string]bool{}
	for _, p := range peers {
		up[p] = true
	}
	for id := range a.counts {
		if !up[id] {
			delete(a.counts, id)
		}
	}
	a.countsMu.Unlock()
	a.peersChanged(peers)
}

func (a *Adapter) alivePeers() []string {
	a.peersMu.RLock()
	defer a.peersMu.RUnlock()
	return a.peers
}

func (a *Adapter) routes() (alive, lingering []string) {
	a.peersMu.RLock()
	defer a.peersMu.RUnlock()
	return a.peers, a.lingering
}

// Run sends this node's socket counts and retries failed replica writes
// until ctx ends.
func (a *Adapter) Run(ctx context.Context) {
	go a.retry.run(ctx)
	go a.sendHooks(ctx)
	go a.antiEntropy(ctx)
	go a.reportCounts(ctx)
	t := time.NewTicker(a.cfg.CountsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.sendCounts(ctx)
		}
	}
}

// AddSocket enforces the app's connection quota over the whole cluster:
// this node's exact count plus the others' latest reports.
func (a *Adapter) AddSocket(ctx context.Context, c *pusher.Conn) error {
	if limit := c.App.ConnectionLimit(); limit >= 0 {
		local, _ := a.local.SocketCount(ctx, c.App.ID)
		if local+a.remoteSockets(c.App.ID)+1 > limit {
			return pusher.ErrQuotaExceeded
		}
	}
	return a.local.AddSocket(ctx, c)
}

// Publish delivers locally and sends the frame to every other alive node,
// which delivers it to its own subscribers, if any.
//
// Routing by the replicated occupancy would spare nodes without subscribers,
// but a replica learns of a commit up to a heartbeat later: a node that just
// got its first subscriber would miss publishes made meanwhile through a
// node whose replica lags. A receiver with no subscriber drops a message
// with one map lookup, so every node gets every message.
//
// The other nodes are sent the frame first, so that their fan-out runs while
// this node writes to its own sockets. The local fan-out happens even when
// an alive node could not take the frame; the error (pusher.ErrUnavailable)
// then tells the API to answer 503.
func (a *Adapter) Publish(ctx context.Context, appID, channel string, f pusher.Frame, except string) (int, error) {
	err := a.toAll(ctx, stream.Message{Kind: stream.KindPublish, App: appID, Channel: channel, Except: except, Payload: f})
	if err != nil {
		a.warnSendFailure("publish to other nodes incomplete", appID, channel, err)
	}
	n, _ := a.local.Publish(ctx, appID, channel, f, except)
	return n, err
}

// kindCache carries the last event of a cache channel to the other nodes.
const kindCache stream.Kind = 16

// ShareCache gives the last event of a cache channel to every other node.
func (a *Adapter) ShareCache(ctx context.Context, appID, channel string, f pusher.Frame) {
	if err := a.toAll(ctx, stream.Message{Kind: kindCache, App: appID, Channel: channel, Payload: f}); err != nil {
		a.warnSendFailure("cache channel event not shared with every node", appID, channel, err)
	}
}

// SendToUser delivers to the user's connections on every node.
func (a *Adapter) SendToUser(ctx context.Context, appID, userID string, f pusher.Frame) (int, error) {
	n, _ := a.local.SendToUser(ctx, appID, userID, f)
	return n, a.toAll(ctx, stream.Message{Kind: stream.KindToUser, App: appID, Channel: userID, Payload: f})
}

// TerminateUser disconnects the user's connections on every node.
func (a *Adapter) TerminateUser(ctx context.Context, appID, userID string) error {
	_ = a.local.TerminateUser(ctx, appID, userID)
	return a.toAll(ctx, stream.Message{Kind: stream.KindTerminateUser, App: appID, Channel: userID})
}

// toAll queues m on the stream to every alive peer, then to every lingering
// one. Only the alive peers' failures are returned, wrapped in
// pusher.ErrUnavailable: a lingering peer's were expected (its stream
// counts what it drops).
func (a *Adapter) toAll(ctx context.Context, m stream.Message) error {
	alive, lingering := a.routes()
	if len(alive) == 0 && len(lingering) == 0 {
		return nil
	}
	if err := a.streams.BroadcastTo(ctx, m, alive, lingering); err != nil {
		return fmt.Errorf("%w: %w", pusher.ErrUnavailable, err)
	}
	return nil
}

// SocketCount is this node's count plus the others' latest reports.
func (a *Adapter) SocketCount(ctx context.Context, appID string) (int, error) {
	n, _ := a.local.SocketCount(ctx, appID)
	return n + a.remoteSockets(appID), nil
}

func (a *Adapter) remoteSockets(appID string) int {
	a.countsMu.Lock()
	defer a.countsMu.Unlock()
	total := 0
	for _, c := range a.counts {
		total += c.apps[appID]
	}
	return total
}

// Channels sums every alive node's subscription counts; user counts come
// from the replicated presence state.
func (a *Adapter) Channels(ctx context.Context, appID string) (map[string]pusher.ChannelInfo, error) {
	out, err := a.local.Channels(ctx, appID)
	if err != nil {
		return nil, err
	}
	for _, remote := range a.queries.gather(ctx, query{Op: opChannels, App: appID}) {
		for name, count := range remote.Channels {
			ci := out[name]
			ci.SubscriptionCount += count
			out[name] = ci
		}
	}
	users := a.replica.FSM().Channels(appID)
	for name, ci := range out {
		ci.UserCount = users[name].Users
		out[name] = ci
	}
	return out, nil
}

// Channel answers for one channel over the whole cluster.
func (a *Adapter) Channel(ctx context.Context, appID, channel string) (pusher.ChannelInfo, error) {
	ci, err := a.local.Channel(ctx, appID, channel)
	if err != nil {
		return ci, err
	}
	for _, remote := range a.queries.gather(ctx, query{Op: opChannel, App: appID, Channel: channel}) {
		ci.SubscriptionCount += remote.Channels[channel]
	}
	ci.UserCount = a.replica.FSM().MemberCount(appID, channel)
	return ci, nil
}

// Deliver handles a message from another node; it runs on the stream's
// reader and never blocks.
func (a *Adapter) Deliver(from string, m stream.Message) {
	ctx := context.Background()
	switch m.Kind {
	case stream.KindPublish:
		n, _ := a.local.Publish(ctx, m.App, m.Channel, pusher.Frame(m.Payload), m.Except)
		a.delivered(m.App, n, m.Payload)
	case stream.KindToUser:
		n, _ := a.local.SendToUser(ctx, m.App, m.Channel, pusher.Frame(m.Payload))
		a.delivered(m.App, n, m.Payload)
	case stream.KindTerminateUser:
		_ = a.local.TerminateUser(ctx, m.App, m.Channel)
	case stream.KindControl:
		a.control(from, m.Payload)
	case kindCache:
		if b := a.handler.Load(); b != nil {
			b.h.StoreCache(m.App, m.Channel, pusher.Frame(m.Payload))
		}
	}
}

func (a *Adapter) delivered(app string, n int, payload []byte) {
	if b := a.handler.Load(); b != nil && n > 0 {
		b.h.Delivered(app, n, pusher.Frame(payload))
	}
}

// control is the small JSON protocol nodes use besides messages: socket
// count reports, cluster-wide queries and rate-limit leases (limiter.go).
type control struct {
	Type  string         `json:"t"`
	Apps  map[string]int `json:"apps,omitempty"`
	Query *query         `json:"q,omitempty"`
	Reply *reply         `json:"r,omitempty"`
	// Counts is a subscription count report (subcounts.go).
	Counts []channelCount `json:"s,omitempty"`
}

const ctlSubCounts = "subcounts"

func (a *Adapter) control(from string, payload []byte) {
	var c control
	if json.Unmarshal(payload, &c) != nil {
		return
	}
	switch c.Type {
	case "counts":
		a.countsMu.Lock()
		if len(c.Apps) <= maxReportedApps {
			a.counts[from] = nodeCounts{apps: c.Apps, at: time.Now()}
		}
		a.countsMu.Unlock()
	case "query":
		if c.Query != nil {
			a.queries.answer(from, *c.Query)
		}
	case "reply":
		if c.Reply != nil {
			a.queries.resolve(from, *c.Reply)
		}
	case ctlSubCounts:
		a.receiveCounts(from, c.Counts)
	case ctlLeaseAsk, ctlLeaseGrant:
		if l := a.leases.Load(); l != nil {
			l.control(from, c.Type, payload)
		}
	}
}

// maxReportedApps bounds one node's count report.
const maxReportedApps = 100_000

func (a *Adapter) sendCounts(ctx context.Context) {
	peers := a.alivePeers()
	if len(peers) == 0 {
		return
	}
	b, err := json.Marshal(control{Type: "counts", Apps: a.local.AppSocketCounts()})
	if err != nil {
		return
	}
	_ = a.streams.Broadcast(ctx, stream.Message{Kind: stream.KindControl, Payload: b}, peers)
}

// warnSendFailure counts a message other nodes did not get; a slow peer
// refuses them by the thousand, so the warning is rate-limited.
func (a *Adapter) warnSendFailure(msg, appID, channel string, err error) {
	total := a.sendFailures.Add(1)
	a.sendWarn.Warn(a.log, msg, "app_id", appID, "channel", channel, "err", err, "failures_total", total)
}
