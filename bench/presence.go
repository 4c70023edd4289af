package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/soketi-go/soketi/pkg/pusher"
)

// Presence churn: a pool of sockets joins the presence channel at a fixed
// rate, each time as a new user id, and leaves after -presence-hold.
// Observers stay on the channel for the whole run; every successful join must
// show up as exactly one member_added on each observer, every leave as one
// member_removed.

const observerPrefix = "obs-"

// presencePool is the number of churn sockets: enough to keep the target rate
// going while members are held, a multiple of the server count so joins
// spread evenly.
func (c *config) presencePool() int {
	if c.presenceChurn <= 0 {
		return 0
	}
	n := len(c.targets)
	pool := int(math.Ceil(c.presenceChurn*(c.presenceHold.Seconds()+1))) + n
	pool = min(pool, 5000)
	return (pool + n - 1) / n * n
}

// presenceSockets is every connection presence churn opens.
func (c *config) presenceSockets() int {
	if c.presenceChurn <= 0 {
		return 0
	}
	return c.presencePool() + c.presenceObservers
}

// memberRec is what the churn did with one user id. Guarded by presence.mu.
type memberRec struct {
	node      int
	joinSent  int64 // unix nanos
	leaveSent int64 // 0 until the leave was sent
	ok        bool  // subscription_succeeded received
}

// memberSeen counts one observer's member_added and member_removed per user.
type memberSeen struct{ added, removed int }

type presence struct {
	st      *runState
	channel string
	unsub   []byte

	pool      []*churnSock
	observers []*observer
	readers   sync.WaitGroup

	nextUser  atomic.Int64
	attempted atomic.Int64
	joined    atomic.Int64
	failed    atomic.Int64
	left      atomic.Int64
	joinLat   []histogram // per server of the joining socket
	addLat    histogram   // join sent -> member_added at an observer
	removeLat histogram   // leave sent -> member_removed at an observer

	mu      sync.Mutex
	members map[string]*memberRec
	start   time.Time
	elapsed time.Duration
}

type churnSock struct {
	node     int
	sub      *subscriber // nil after a failed join, redialled on the next one
	socketID string
}

type observer struct {
	node     int
	user     string
	sub      *subscriber
	seen     map[string]*memberSeen // guarded by presence.mu
	unknown  int64                  // frames that were not understood
	lostConn atomic.Bool
}

func newPresence(st *runState) *presence {
	cfg := st.cfg
	q, _ := json.Marshal(cfg.presenceChannel)
	return &presence{
		st:      st,
		channel: cfg.presenceChannel,
		unsub:   []byte(`{"event":"pusher:unsubscribe","data":{"channel":` + string(q) + `}}`),
		joinLat: make([]histogram, len(cfg.targets)),
		members: map[string]*memberRec{},
	}
}

// subscribeFrame is a signed presence subscribe for user on socketID.
func (p *presence) subscribeFrame(socketID, user string) []byte {
	cfg := p.st.cfg
	cd, _ := json.Marshal(map[string]any{"user_id": user, "user_info": map[string]string{"name": "bench " + user}})
	auth := cfg.key + ":" + pusher.Sign(cfg.secret, socketID+":"+p.channel+":"+string(cd))
	b, _ := json.Marshal(map[string]any{
		"event": "pusher:subscribe",
		"data":  map[string]string{"channel": p.channel, "auth": auth, "channel_data": string(cd)},
	})
	return b
}

// dial opens a connection to server node and returns it with its socket id.
func (p *presence) dial(ctx context.Context, d *websocket.Dialer, node int) (*subscriber, string, error) {
	cfg := p.st.cfg
	ctx, cancel := context.WithTimeout(ctx, cfg.connectTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	s := &subscriber{node: node, target: cfg.targets[node]}
	conn, _, err := d.DialContext(ctx, p.st.wsURL(s.target), nil)
	if err != nil {
		return nil, "", fmt.Errorf("presence dial: %w", err)
	}
	s.conn = conn
	conn.SetReadDeadline(deadline)
	m, err := s.await(p.st, "pusher:connection_established", "")
	if err != nil {
		conn.Close()
		return nil, "", fmt.Errorf("presence connection_established: %w", err)
	}
	var est struct {
		SocketID string `json:"socket_id"`
	}
	if err := unmarshalData(m.Data, &est); err != nil || est.SocketID == "" {
		conn.Close()
		return nil, "", fmt.Errorf("presence connection_established: no socket_id in %.80s", m.Data)
	}
	conn.SetReadDeadline(time.Time{})
	return s, est.SocketID, nil
}

// unmarshalData decodes an event's data, which Pusher sends as a JSON string.
func unmarshalData(raw json.RawMessage, v any) error {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		raw = json.RawMessage(s)
	}
	return json.Unmarshal(raw, v)
}

// connect subscribes the observers (one after another, so they are all on
// the channel before the churn starts) and dials the churn pool.
func (p *presence) connect(ctx context.Context, d *websocket.Dialer, log io.Writer) error {
	cfg := p.st.cfg
	for i := range cfg.presenceObservers {
		o := &observer{node: i % len(cfg.targets), user: observerPrefix + strconv.Itoa(i), seen: map[string]*memberSeen{}}
		s, sid, err := p.dial(ctx, d, o.node)
		if err != nil {
			return fmt.Errorf("observer %d: %w", i, err)
		}
		o.sub = s
		s.conn.SetReadDeadline(time.Now().Add(cfg.connectTimeout))
		err = s.write(p.subscribeFrame(sid, o.user))
		if err == nil {
			_, err = s.await(p.st, "pusher_internal:subscription_succeeded", p.channel)
		}
		if err != nil {
			s.conn.Close()
			return fmt.Errorf("observer %d subscribe: %w", i, err)
		}
		s.conn.SetReadDeadline(time.Time{})
		p.observers = append(p.observers, o)
		p.readers.Add(1)
		go p.observe(o)
	}

	p.pool = make([]*churnSock, cfg.presencePool())
	var (
		wg   sync.WaitGroup
		next atomic.Int64
		fail atomic.Int64
	)
	for range min(cfg.connectWorkers, len(p.pool)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(p.pool) && ctx.Err() == nil; i = int(next.Add(1) - 1) {
				c := &churnSock{node: i % len(cfg.targets)}
				p.pool[i] = c
				s, sid, err := p.dial(ctx, d, c.node)
				if err != nil {
					fail.Add(1)
					p.st.errs.add(err.Error())
					continue
				}
				c.sub, c.socketID = s, sid
			}
		}()
	}
	wg.Wait()
	fmt.Fprintf(log, "presence: %d observers on %s, %d churn sockets (%d failed)\n",
		len(p.observers), p.channel, len(p.pool), fail.Load())
	return nil
}

// observe counts member events on one observer until its connection closes.
func (p *presence) observe(o *observer) {
	defer p.readers.Done()
	for {
		_, b, err := o.sub.conn.ReadMessage()
		if err != nil {
			if !p.st.closing.Load() {
				o.lostConn.Store(true)
				p.st.lost.Add(1)
				p.st.errs.add("presence observer connection lost: " + err.Error())
			}
			return
		}
		now := time.Now().UnixNano()
		var m wireMsg
		if json.Unmarshal(b, &m) != nil {
			o.unknown++
			continue
		}
		switch m.Event {
		case "pusher:ping":
			o.sub.write(pongFrame)
			continue
		case "pusher_internal:member_added", "pusher_internal:member_removed":
		default:
			continue
		}
		if m.Channel != p.channel {
			continue
		}
		var md struct {
			UserID json.RawMessage `json:"user_id"`
		}
		if unmarshalData(m.Data, &md) != nil {
			o.unknown++
			continue
		}
		user := string(md.UserID)
		var s string
		if json.Unmarshal(md.UserID, &s) == nil {
			user = s
		}
		p.memberEvent(o, user, m.Event == "pusher_internal:member_added", now)
	}
}

func (p *presence) memberEvent(o *observer, user string, added bool, now int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := o.seen[user]
	if c == nil {
		c = &memberSeen{}
		o.seen[user] = c
	}
	rec := p.members[user]
	if added {
		c.added++
		if rec != nil && c.added == 1 {
			p.addLat.record(uint64(max(now-rec.joinSent, 0) / 1000))
		}
	} else {
		c.removed++
		if rec != nil && rec.leaveSent > 0 && c.removed == 1 {
			p.removeLat.record(uint64(max(now-rec.leaveSent, 0) / 1000))
		}
	}
}

// run drives the churn until stop ends, then lets every member leave.
func (p *presence) run(ctx context.Context, d *websocket.Dialer) {
	cfg := p.st.cfg
	stop, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()
	tokens := make([]chan struct{}, len(cfg.targets))
	for i := range tokens {
		tokens[i] = make(chan struct{})
	}
	p.start = time.Now()
	var wg sync.WaitGroup
	for _, c := range p.pool {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.worker(ctx, stop, d, c, tokens[c.node])
		}()
	}
	pace(stop, cfg.presenceChurn, tokens)
	wg.Wait()
	p.elapsed = time.Since(p.start)
}

// worker joins as a new user for each token, holds, and leaves; the hold is
// cut short when stop ends. A failed join closes the socket (its state is
// unknown) and the next token redials it.
func (p *presence) worker(ctx, stop context.Context, d *websocket.Dialer, c *churnSock, tokens <-chan struct{}) {
	cfg := p.st.cfg
	for {
		select {
		case <-tokens:
		case <-stop.Done():
			return
		}
		if c.sub == nil {
			s, sid, err := p.dial(ctx, d, c.node)
			if err != nil {
				p.attempted.Add(1)
				p.failed.Add(1)
				p.st.errs.add(err.Error())
				p.st.tl.join(time.Now().UnixNano(), 0, true)
				continue
			}
			c.sub, c.socketID = s, sid
		}
		user := "u" + strconv.FormatInt(p.nextUser.Add(1), 10)
		frame := p.subscribeFrame(c.socketID, user)
		rec := &memberRec{node: c.node}
		t0 := time.Now()
		p.mu.Lock()
		rec.joinSent = t0.UnixNano()
		p.members[user] = rec
		p.mu.Unlock()
		p.attempted.Add(1)

		c.sub.conn.SetReadDeadline(t0.Add(cfg.connectTimeout))
		err := c.sub.write(frame)
		if err == nil {
			_, err = c.sub.await(p.st, "pusher_internal:subscription_succeeded", p.channel)
		}
		lat := time.Since(t0)
		if err != nil {
			p.failed.Add(1)
			p.st.errs.add("presence join: " + err.Error())
			p.st.tl.join(t0.UnixNano(), 0, true)
			c.sub.conn.Close()
			c.sub = nil
			continue
		}
		p.mu.Lock()
		rec.ok = true
		p.mu.Unlock()
		p.joined.Add(1)
		p.joinLat[c.node].record(uint64(lat / time.Microsecond))
		p.st.tl.join(t0.UnixNano(), uint64(lat/time.Microsecond), false)

		sleepCtx(stop, cfg.presenceHold)
		p.mu.Lock()
		rec.leaveSent = time.Now().UnixNano()
		p.mu.Unlock()
		if err := c.sub.write(p.unsub); err != nil {
			p.st.errs.add("presence leave: " + err.Error())
			c.sub.conn.Close()
			c.sub = nil
		}
		p.left.Add(1)
	}
}

// complete reports whether every observer has seen every expected event.
func (p *presence) complete() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, o := range p.observers {
		add, rem, _, _ := accountMembers(p.members, o.seen)
		if add.Missing > 0 || rem.Missing > 0 {
			return false
		}
	}
	return true
}

// close ends the observers and churn sockets and waits for the observers'
// read loops; st.closing must already be set.
func (p *presence) close() {
	deadline := time.Now().Add(time.Second)
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	for _, o := range p.observers {
		o.sub.conn.WriteControl(websocket.CloseMessage, msg, deadline)
		o.sub.conn.Close()
	}
	for _, c := range p.pool {
		if c != nil && c.sub != nil {
			c.sub.conn.Close()
		}
	}
	p.readers.Wait()
}

// conns returns the open sockets, for the pinger.
func (p *presence) conns() []*subscriber {
	var out []*subscriber
	for _, o := range p.observers {
		out = append(out, o.sub)
	}
	for _, c := range p.pool {
		if c != nil && c.sub != nil {
			out = append(out, c.sub)
		}
	}
	return out
}

// memberEvents compares expected and seen events of one kind.
type memberEvents struct {
	Expected int64 `json:"expected"`
	Seen     int64 `json:"seen"`
	Missing  int64 `json:"missing"` // expected but not seen
	Extra    int64 `json:"extra"`   // seen more often than expected
}

func (m *memberEvents) add(o memberEvents) {
	m.Expected += o.Expected
	m.Seen += o.Seen
	m.Missing += o.Missing
	m.Extra += o.Extra
}

func (m *memberEvents) count(expected, seen int) {
	m.Expected += int64(expected)
	m.Seen += int64(seen)
	if seen < expected {
		m.Missing += int64(expected - seen)
	} else {
		m.Extra += int64(seen - expected)
	}
}

// accountMembers compares one observer's events with the churn's records:
// a successful join expects one member_added, a leave after it one
// member_removed. Events for joins that failed (the server may still have
// added the member) and for user ids the churn never used are counted apart.
// Observers' own ids are ignored.
func accountMembers(members map[string]*memberRec, seen map[string]*memberSeen) (added, removed memberEvents, failedJoin, unknown int64) {
	for user, rec := range members {
		s := seen[user]
		if s == nil {
			s = &memberSeen{}
		}
		if !rec.ok {
			failedJoin += int64(s.added + s.removed)
			continue
		}
		added.count(1, s.added)
		wantRemoved := 0
		if rec.leaveSent > 0 {
			wantRemoved = 1
		}
		removed.count(wantRemoved, s.removed)
	}
	for user, s := range seen {
		if _, ok := members[user]; !ok && !strings.HasPrefix(user, observerPrefix) {
			unknown += int64(s.added + s.removed)
		}
	}
	return added, removed, failedJoin, unknown
}

type presenceReport struct {
	Channel          string           `json:"channel"`
	TargetRate       float64          `json:"target_rate"`
	Hold             string           `json:"hold"`
	Sockets          int              `json:"sockets"`
	Attempted        int64            `json:"attempted"`
	Joined           int64            `json:"joined"`
	Failed           int64            `json:"failed"` // subscription errors, timeouts, redial failures
	Left             int64            `json:"left"`
	JoinsPerSec      float64          `json:"joins_per_sec"`
	JoinLatencyUS    latencySummary   `json:"join_latency_us"` // subscribe sent -> subscription_succeeded
	MemberAdded      memberEvents     `json:"member_added"`
	MemberRemoved    memberEvents     `json:"member_removed"`
	Mismatches       int64            `json:"mismatches"` // missing + extra, both kinds, all observers
	FailedJoinEvent  int64            `json:"failed_join_events"`
	UnknownEvents    int64            `json:"unknown_events"`
	AddedLatencyUS   latencySummary   `json:"added_latency_us"`   // join sent -> member_added at an observer
	RemovedLatencyUS latencySummary   `json:"removed_latency_us"` // leave sent -> member_removed
	Observers        []observerReport `json:"observers"`
}

type observerReport struct {
	Target        string       `json:"target"`
	MemberAdded   memberEvents `json:"member_added"`
	MemberRemoved memberEvents `json:"member_removed"`
	ConnLost      bool         `json:"connection_lost,omitempty"`
}

// report runs after close, when no observer reads any more.
func (p *presence) report() *presenceReport {
	cfg := p.st.cfg
	r := &presenceReport{
		Channel:    p.channel,
		TargetRate: cfg.presenceChurn,
		Hold:       cfg.presenceHold.String(),
		Sockets:    len(p.pool),
		Attempted:  p.attempted.Load(),
		Joined:     p.joined.Load(),
		Failed:     p.failed.Load(),
		Left:       p.left.Load(),
	}
	if p.elapsed > 0 {
		r.JoinsPerSec = float64(r.Joined) / p.elapsed.Seconds()
	}
	all := newSnapshot()
	for i := range p.joinLat {
		all.add(&p.joinLat[i])
	}
	r.JoinLatencyUS = all.summary()
	r.AddedLatencyUS = snapshotOf(&p.addLat).summary()
	r.RemovedLatencyUS = snapshotOf(&p.removeLat).summary()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, o := range p.observers {
		add, rem, fj, unk := accountMembers(p.members, o.seen)
		r.Observers = append(r.Observers, observerReport{
			Target: cfg.targets[o.node], MemberAdded: add, MemberRemoved: rem, ConnLost: o.lostConn.Load(),
		})
		r.MemberAdded.add(add)
		r.MemberRemoved.add(rem)
		r.FailedJoinEvent += fj
		r.UnknownEvents += unk + o.unknown
	}
	r.Mismatches = r.MemberAdded.Missing + r.MemberAdded.Extra + r.MemberRemoved.Missing + r.MemberRemoved.Extra
	sort.SliceStable(r.Observers, func(i, j int) bool { return r.Observers[i].Target < r.Observers[j].Target })
	return r
}

// joinSummary is the join latency of sockets on server node.
func (p *presence) joinSummary(node int) latencySummary {
	return snapshotOf(&p.joinLat[node]).summary()
}

func snapshotOf(h *histogram) *histSnapshot {
	s := newSnapshot()
	s.add(h)
	return s
}

// newDialer is the dialer for all of the tool's WebSocket connections.
func newDialer(cfg *config) *websocket.Dialer {
	return &websocket.Dialer{
		NetDialContext:   (&net.Dialer{}).DialContext,
		HandshakeTimeout: cfg.connectTimeout,
		// Small buffers and a shared write pool keep the tool's own memory
		// per connection low; frames here are small.
		ReadBufferSize:  1024,
		WriteBufferSize: 512,
		WriteBufferPool: &sync.Pool{},
	}
}
