package limiter

import (
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/soketi-go/soketi/pkg/pusher"
)

// Defaults of ClusterOptions.
const (
	// DefaultMaxWait bounds how long a request that finds no tokens waits
	// for a grant before it is refused.
	DefaultMaxWait = 50 * time.Millisecond
	// DefaultAskTimeout is how long an ask may stay unanswered before the
	// master counts as unreachable and new windows use local shares.
	DefaultAskTimeout = 250 * time.Millisecond
	// DefaultHorizon is how far ahead a node asks: a grant is sized to its
	// demand over this long, and it asks again when a quarter is left
	// (50 ms of demand, far more than a round trip), so a busy key costs
	// about 7 asks a second whatever its rate.
	DefaultHorizon = 200 * time.Millisecond

	// minRateSample keeps the first requests of a window from suggesting
	// an absurd rate.
	minRateSample = 10 * time.Millisecond
	// maxStatusKeys bounds the keys listed by Status.
	maxStatusKeys = 100
)

// Transport carries asks to the master; pkg/cluster implements it over the
// inter-node streams and answers come back through HandleGrant.
type Transport interface {
	// Master returns the master's node id ("" when none is known) and
	// whether this node is the master now.
	Master() (id string, self bool)
	// Send queues a for the master and returns without waiting.
	Send(master string, a Ask) error
	// Share returns this node's rank among the alive nodes and their
	// number, for local shares.
	Share() (rank, nodes int)
}

// ClusterOptions configures a Cluster limiter. Zero values get defaults.
type ClusterOptions struct {
	MaxKeys    int           // keys tracked (DefaultMaxKeys), on each side
	MaxWait    time.Duration // DefaultMaxWait
	AskTimeout time.Duration // DefaultAskTimeout
	Horizon    time.Duration // DefaultHorizon
	Now        func() time.Time
	Logger     *slog.Logger
}

// Cluster is the RATE_LIMITER_DRIVER=cluster limiter: an app's limit holds
// for the whole cluster. The master (Raft leader) owns each window's points
// and grants nodes leases of tokens; a node spends its lease with no network
// round trip and asks for more before it runs out. While no master answers,
// a node spends its local share of the limit instead. See DESIGN.md.
type Cluster struct {
	opts   ClusterOptions
	t      Transport
	quota  *Quota
	log    *slog.Logger
	ids    atomic.Uint64
	shards [shardCount]cshard

	hmu             sync.Mutex
	master          string
	firstUnanswered time.Time // first ask to master still unanswered; zero if none
	lastProbe       time.Time
	shareMode       bool

	asks, grants, served, waits, rejected, evictions atomic.Uint64
}

type cshard struct {
	mu        sync.Mutex
	buckets   map[windowKey]*bucket
	lastSweep time.Time
	perShard  int
}

type fund uint8

const (
	fundNone  fund = iota // no tokens for the current window yet
	fundLease             // tokens granted by the master for window
	fundShare             // this node's local share of window
)

func (f fund) String() string {
	switch f {
	case fundLease:
		return "lease"
	case fundShare:
		return "local-share"
	}
	return "none"
}

// bucket is one (app, key) on this node. A window is funded one way only,
// lease or local share, so the two are never added up in one window.
type bucket struct {
	fund    fund
	window  int64
	expires time.Time // tokens are void from here on
	tokens  int
	left    int // the master's ungranted tokens in window, as of the last grant
	limit   int // as of the last consume

	since              time.Time // start of the demand sample
	demand, prevDemand int       // points asked for in this sample and the previous one
	lastUse            time.Time

	asking  bool // one ask in flight at a time
	askID   uint64
	askedAt time.Time
	ready   chan struct{} // closed when the ask in flight ends
}

// NewCluster returns a cluster limiter over t.
func NewCluster(opts ClusterOptions, t Transport) *Cluster {
	if opts.MaxKeys <= 0 {
		opts.MaxKeys = DefaultMaxKeys
	}
	if opts.MaxWait <= 0 {
		opts.MaxWait = DefaultMaxWait
	}
	if opts.AskTimeout <= 0 {
		opts.AskTimeout = DefaultAskTimeout
	}
	if opts.Horizon <= 0 {
		opts.Horizon = DefaultHorizon
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	c := &Cluster{opts: opts, t: t, quota: NewQuota(opts.MaxKeys),
		log: opts.Logger.With("component", "rate_limiter")}
	per := max(1, (opts.MaxKeys+shardCount-1)/shardCount)
	for i := range c.shards {
		c.shards[i].buckets = make(map[windowKey]*bucket)
		c.shards[i].perShard = per
	}
	return c
}

var _ pusher.RateLimiter = (*Cluster)(nil)

// Consume spends points of appID's key from this node's lease. A request
// that finds too few tokens waits up to MaxWait for a grant (never when the
// master said the window is spent, or cannot be reached) and is otherwise
// refused. A refused call spends nothing: tokens are the cluster's.
func (c *Cluster) Consume(appID, key string, points, limit int) pusher.LimitResult {
	if limit < 0 {
		return pusher.LimitResult{Allowed: true, Limit: limit, Remaining: -1}
	}
	points = max(points, 0)
	k := windowKey{appID, key}
	s := &c.shards[shardOf(appID, key)]
	now := c.opts.Now()
	var deadline time.Time // real time: waits use timers whatever the clock

	s.mu.Lock()
	b := c.bucket(s, k, now)
	b.roll(now)
	b.demand += points
	b.limit = limit
	for {
		b.lastUse = now
		if b.fund == fundNone && !c.reachable(now) {
			c.fundShare(b, limit, now)
		}
		if b.fund != fundNone && points <= b.tokens {
			b.tokens -= points
			res := b.result(limit, now, true)
			var ask *Ask
			if b.fund == fundLease && b.left > 0 && !b.asking && b.tokens <= c.chunk(b, now)/4 {
				ask = c.startAsk(b, k, limit, 0, now)
			}
			s.mu.Unlock()
			if ask != nil {
				c.send(*ask, now)
			}
			return res
		}
		if limit == 0 || b.fund == fundShare || (b.fund == fundLease && points > b.tokens+b.left) ||
			(!deadline.IsZero() && time.Until(deadline) <= 0) || !c.reachable(now) {
			return c.refuse(s, b, limit, now)
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(c.opts.MaxWait)
		}
		if b.asking && now.Sub(b.askedAt) > c.opts.AskTimeout {
			b.endAsk()
		}
		var ask *Ask
		if !b.asking {
			need := points
			if b.fund == fundLease {
				need -= b.tokens
			}
			ask = c.startAsk(b, k, limit, need, now)
		}
		ready := b.ready
		s.mu.Unlock()
		if ask != nil {
			c.send(*ask, now)
		}
		c.waits.Add(1)
		timer := time.NewTimer(time.Until(deadline))
		select {
		case <-ready:
		case <-timer.C:
		}
		timer.Stop()
		now = c.opts.Now()
		s.mu.Lock()
		b = c.bucket(s, k, now) // it may have been evicted meanwhile
		b.roll(now)
	}
}

func (c *Cluster) refuse(s *cshard, b *bucket, limit int, now time.Time) pusher.LimitResult {
	res := b.result(limit, now, false)
	s.mu.Unlock()
	c.rejected.Add(1)
	return res
}

// result reports an outcome. Remaining is this node's tokens plus what the
// master had left at its last grant: an estimate of the cluster's.
func (b *bucket) result(limit int, now time.Time, allowed bool) pusher.LimitResult {
	res := pusher.LimitResult{Allowed: allowed, Limit: limit}
	if allowed {
		res.Remaining = min(b.tokens+b.left, limit)
	}
	if b.fund != fundNone {
		res.ResetIn = b.expires.Sub(now)
	} else {
		res.ResetIn = windowEnd(WindowOf(now)).Sub(now)
	}
	return res
}

// roll voids tokens whose window ended and turns the demand sample over.
func (b *bucket) roll(now time.Time) {
	if b.fund != fundNone && !now.Before(b.expires) {
		b.fund, b.tokens, b.left = fundNone, 0, 0
	}
	if age := now.Sub(b.since); age >= Window {
		b.prevDemand = 0
		if age < 2*Window {
			b.prevDemand = b.demand
		}
		b.demand, b.since = 0, now
	}
}

// chunk is the demand expected over one Horizon: the larger of the last
// sample's rate and this one's so far. At least 1.
func (c *Cluster) chunk(b *bucket, now time.Time) int {
	rate := float64(b.prevDemand) // per Window
	if el := max(now.Sub(b.since), minRateSample); b.demand > 0 {
		rate = max(rate, float64(b.demand)*float64(Window)/float64(el))
	}
	return max(1, int(rate*float64(c.opts.Horizon)/float64(Window)+0.999))
}

// shareOf is rank's part of limit split among nodes: the remainder goes to
// the lowest ranks, so the shares add up to exactly limit.
func shareOf(limit, rank, nodes int) int {
	nodes = max(nodes, 1)
	s := limit / nodes
	if rank >= 0 && rank < limit%nodes {
		s++
	}
	return s
}

func (c *Cluster) fundShare(b *bucket, limit int, now time.Time) {
	rank, nodes := c.t.Share()
	w := WindowOf(now)
	b.fund, b.window, b.expires = fundShare, w, windowEnd(w)
	b.tokens, b.left = shareOf(limit, rank, nodes), 0
}

func (c *Cluster) startAsk(b *bucket, k windowKey, limit, need int, now time.Time) *Ask {
	b.asking, b.askID, b.askedAt = true, c.ids.Add(1), now
	b.ready = make(chan struct{})
	return &Ask{ID: b.askID, App: k.app, Key: k.key, Limit: limit, Want: max(c.chunk(b, now), need), Need: need}
}

func (b *bucket) endAsk() {
	if b.asking {
		b.asking = false
		close(b.ready)
	}
}

// send delivers an ask: served in place when this node is the master,
// else queued for the master. Never called with a shard lock held.
func (c *Cluster) send(a Ask, now time.Time) {
	master, self := c.t.Master()
	switch {
	case master == "":
		c.failAsk(a)
	case self:
		c.apply(c.Serve(master, a, true), now)
	default:
		c.hmu.Lock()
		if c.firstUnanswered.IsZero() {
			c.firstUnanswered = now
		}
		c.hmu.Unlock()
		c.asks.Add(1)
		if c.t.Send(master, a) != nil {
			c.failAsk(a)
		}
	}
}

func (c *Cluster) failAsk(a Ask) {
	s := &c.shards[shardOf(a.App, a.Key)]
	s.mu.Lock()
	if b := s.buckets[windowKey{a.App, a.Key}]; b != nil && b.asking && b.askID == a.ID {
		b.endAsk()
	}
	s.mu.Unlock()
}

// reachable reports whether asks can go to a master: one is known and, if
// remote, has not left an ask unanswered for AskTimeout. While it has, a
// probe goes out every AskTimeout; its answer makes the master reachable.
func (c *Cluster) reachable(now time.Time) bool {
	master, self := c.t.Master()
	c.hmu.Lock()
	if master != c.master {
		c.master, c.firstUnanswered = master, time.Time{}
	}
	ok := master != "" && (self || c.firstUnanswered.IsZero() || now.Sub(c.firstUnanswered) <= c.opts.AskTimeout)
	probe := !ok && master != "" && now.Sub(c.lastProbe) >= c.opts.AskTimeout
	if probe {
		c.lastProbe = now
	}
	if ok == c.shareMode {
		c.shareMode = !ok
		if ok {
			c.log.Info("rate limiter master reachable: spending leases", "master", master)
		} else {
			c.log.Warn("rate limiter master unreachable: spending local shares", "master", master,
				"ask_timeout", c.opts.AskTimeout)
		}
	}
	c.hmu.Unlock()
	if probe {
		c.asks.Add(1)
		_ = c.t.Send(master, Ask{ID: c.ids.Add(1)})
	}
	return ok
}

// HandleGrant takes the master's answer to an ask of this node.
func (c *Cluster) HandleGrant(from string, g Grant) {
	c.grants.Add(1)
	if g.Status != GrantNotMaster {
		c.hmu.Lock()
		if from == c.master {
			c.firstUnanswered = time.Time{}
		}
		c.hmu.Unlock()
	}
	if g.App != "" {
		c.apply(g, c.opts.Now())
	}
}

// apply funds the bucket from a grant answering its ask in flight. Tokens
// that cannot be used (their window ended in flight, or this window is
// funded by the local share) are dropped: never spent twice.
func (c *Cluster) apply(g Grant, now time.Time) {
	s := &c.shards[shardOf(g.App, g.Key)]
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buckets[windowKey{g.App, g.Key}]
	if b == nil || !b.asking || b.askID != g.ID {
		return
	}
	sent := b.askedAt
	b.endAsk()
	b.roll(now)
	switch g.Status {
	case GrantShare:
		if b.fund == fundNone {
			c.fundShare(b, b.limit, now)
		}
	case GrantLease:
		expires := sent.Add(g.EndsIn)
		if !now.Before(expires) {
			return
		}
		switch {
		case b.fund == fundLease && b.window == g.Window:
			b.tokens += g.Tokens
			if expires.After(b.expires) {
				b.expires = expires
			}
		case b.fund == fundNone || (b.fund == fundLease && g.Window > b.window):
			b.fund, b.window, b.tokens, b.expires = fundLease, g.Window, g.Tokens, expires
		default:
			return
		}
		b.left = g.Left
	}
}

// Serve answers a node's ask when this node is the master; leading is
// whether it leads now (a change starts or ends its term).
func (c *Cluster) Serve(from string, a Ask, leading bool) Grant {
	now := c.opts.Now()
	c.quota.Lead(leading, now)
	if from != "" && !c.isSelf(from) {
		c.served.Add(1)
	}
	return c.quota.Serve(from, a, now)
}

func (c *Cluster) isSelf(id string) bool {
	m, self := c.t.Master()
	return self && m == id
}

// SetLeading tells the master side whether this node leads; the transport
// calls it on every leadership change it sees.
func (c *Cluster) SetLeading(leading bool) { c.quota.Lead(leading, c.opts.Now()) }

// bucket returns k's bucket, creating it. Caller holds s.mu.
func (c *Cluster) bucket(s *cshard, k windowKey, now time.Time) *bucket {
	if now.Sub(s.lastSweep) >= idleAfter {
		s.sweep(now)
	}
	b := s.buckets[k]
	if b == nil {
		if len(s.buckets) >= s.perShard {
			c.evictOne(s, now)
		}
		b = &bucket{since: now}
		s.buckets[k] = b
	}
	return b
}

// idle: no ask in flight and unused for idleAfter, so its tokens are void.
func (b *bucket) idle(now time.Time) bool { return !b.asking && now.Sub(b.lastUse) >= idleAfter }

func (s *cshard) sweep(now time.Time) {
	s.lastSweep = now
	for k, b := range s.buckets {
		if b.idle(now) {
			delete(s.buckets, k)
		}
	}
}

// evictOne makes room as Local does. An evicted bucket's tokens are lost,
// which only refuses more; its waiters wake and start over.
func (c *Cluster) evictOne(s *cshard, now time.Time) {
	var victim windowKey
	n := 0
	for k, b := range s.buckets {
		if b.idle(now) {
			delete(s.buckets, k)
			return
		}
		if n == 0 {
			victim = k
		}
		if n++; n == 8 {
			break
		}
	}
	s.buckets[victim].endAsk()
	delete(s.buckets, victim)
	c.evictions.Add(1)
}

// Stats returns the counters shared with the local driver.
func (c *Cluster) Stats() Stats {
	st := Stats{Rejected: c.rejected.Load(), Evictions: c.evictions.Load()}
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		st.Keys += len(s.buckets)
		s.mu.Unlock()
	}
	return st
}

// ClusterStatus is the limiter's part of GET /cluster.
type ClusterStatus struct {
	Driver string `json:"driver"` // "cluster"
	// Mode is "leases" while a master answers, else "local-share": new
	// windows then get limit / alive nodes on each node.
	Mode       string      `json:"mode"`
	Master     string      `json:"master"`
	Leading    bool        `json:"leading"`
	AliveNodes int         `json:"alive_nodes"`
	Asks       uint64      `json:"asks_sent"`       // asks and probes sent to a remote master
	Grants     uint64      `json:"grants_received"` // answers received from a remote master
	Served     uint64      `json:"asks_served"`     // asks of other nodes answered as master
	Waits      uint64      `json:"waits"`           // requests that waited for a grant
	Rejected   uint64      `json:"rejected"`
	Keys       int         `json:"keys"`
	Apps       []KeyStatus `json:"apps"` // at most 100, sorted by app and key
}

// KeyStatus is one (app, key) bucket of this node.
type KeyStatus struct {
	App       string `json:"app_id"`
	Key       string `json:"key"`
	Fund      string `json:"fund"` // lease, local-share or none
	Window    int64  `json:"window"`
	Tokens    int    `json:"tokens"`
	ExpiresMs int64  `json:"expires_in_ms"`
}

// Status returns the limiter's view for GET /cluster.
func (c *Cluster) Status() ClusterStatus {
	now := c.opts.Now()
	master, self := c.t.Master()
	_, nodes := c.t.Share()
	st := ClusterStatus{Driver: "cluster", Mode: "leases", Master: master, Leading: self, AliveNodes: nodes,
		Asks: c.asks.Load(), Grants: c.grants.Load(), Served: c.served.Load(), Waits: c.waits.Load(),
		Rejected: c.rejected.Load(), Apps: []KeyStatus{}}
	if !c.reachable(now) {
		st.Mode = "local-share"
	}
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		st.Keys += len(s.buckets)
		for k, b := range s.buckets {
			b.roll(now)
			ks := KeyStatus{App: k.app, Key: k.key, Fund: b.fund.String(), Window: b.window, Tokens: b.tokens}
			if b.fund != fundNone {
				ks.ExpiresMs = b.expires.Sub(now).Milliseconds()
			}
			st.Apps = append(st.Apps, ks)
		}
		s.mu.Unlock()
	}
	sort.Slice(st.Apps, func(i, j int) bool {
		if st.Apps[i].App != st.Apps[j].App {
			return st.Apps[i].App < st.Apps[j].App
		}
		return st.Apps[i].Key < st.Apps[j].Key
	})
	if len(st.Apps) > maxStatusKeys {
		st.Apps = st.Apps[:maxStatusKeys]
	}
	return st
}
