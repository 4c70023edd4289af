package consensus

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testutil"
	"github.com/soketi-go/soketi/pkg/clusternet"
)

// testKey is the cluster key of the test clusters: they run behind mutual
// TLS as a keyed production cluster does.
var testKey = []byte("consensus-test-key-32-bytes-long")

// fakeMembership is a node's membership view, fed by the test.
type fakeMembership struct {
	mu     sync.Mutex
	alive  map[string]Peer
	events chan MemberEvent
}

func newFakeMembership() *fakeMembership {
	return &fakeMembership{alive: map[string]Peer{}, events: make(chan MemberEvent, 64)}
}

func (f *fakeMembership) Alive() []Peer {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Peer, 0, len(f.alive))
	for _, p := range f.alive {
		out = append(out, p)
	}
	return out
}

func (f *fakeMembership) Events() <-chan MemberEvent { return f.events }

// emit never blocks: like gossip, it drops the oldest event when full.
func (f *fakeMembership) emit(ev MemberEvent) {
	for {
		select {
		case f.events <- ev:
			return
		default:
		}
		select {
		case <-f.events:
		default:
		}
	}
}

func (f *fakeMembership) up(p Peer) {
	f.mu.Lock()
	f.alive[p.ID] = p
	f.mu.Unlock()
	f.emit(MemberEvent{Type: PeerJoin, Peer: p})
}

func (f *fakeMembership) down(id string, typ MemberEventType) {
	f.mu.Lock()
	p, ok := f.alive[id]
	delete(f.alive, id)
	f.mu.Unlock()
	if ok {
		f.emit(MemberEvent{Type: typ, Peer: p})
	}
}

// testLogWriter sends slog output to t.Log until the test ends.
type testLogWriter struct {
	t    testing.TB
	done *atomic.Bool
}

func (w testLogWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

type tnode struct {
	id    string
	dir   string
	addr  string
	inc   uint64
	port  *clusternet.Port
	n     *Node
	m     *fakeMembership
	stop  context.CancelFunc
	done  chan struct{}
	added atomic.Int32 // MemberAdded results seen by this node's observer
	gone  atomic.Int32 // MemberRemoved and purge removals seen
	regs  atomic.Int32 // OnRegistered calls
	// local is this node's "local sockets": re-proposed on registration.
	mu    sync.Mutex
	local map[string]PresenceJoin
}

type tcluster struct {
	t      testing.TB
	log    *slog.Logger
	nodes  []*tnode
	tweak  func(*Config)
	expect int
	key    []byte // nil: a plaintext cluster port
}

func newTestCluster(t testing.TB, n, expect int) *tcluster {
	t.Helper()
	done := &atomic.Bool{}
	t.Cleanup(func() { done.Store(true) }) // runs last: after the nodes stopped
	c := &tcluster{
		t:      t,
		log:    slog.New(slog.NewTextHandler(testLogWriter{t, done}, &slog.HandlerOptions{Level: slog.LevelInfo})),
		expect: expect,
		key:    testKey,
	}
	for i := range n {
		c.nodes = append(c.nodes, &tnode{id: fmt.Sprintf("node-%c", 'a'+i), dir: t.TempDir(), addr: "127.0.0.1:0", local: map[string]PresenceJoin{}})
	}
	return c
}

func (c *tcluster) config(tn *tnode) Config {
	cfg := Config{
		NodeID:            tn.id,
		Incarnation:       tn.inc,
		Dir:               tn.dir,
		Port:              tn.port,
		ExpectedServers:   c.expect,
		MasterTimeout:     time.Second,
		ReapDelay:         2 * time.Second,
		ReconcileInterval: 300 * time.Millisecond,
		ApplyTimeout:      5 * time.Second,
		Logger:            c.log,
		OnApply: func(r Result) {
			if r.MemberAdded {
				tn.added.Add(1)
			}
			if r.MemberRemoved {
				tn.gone.Add(1)
			}
			tn.gone.Add(int32(len(r.Removed)))
		},
		OnRegistered: func(ctx context.Context) {
			tn.regs.Add(1)
			tn.mu.Lock()
			joins := make([]PresenceJoin, 0, len(tn.local))
			for _, j := range tn.local {
				joins = append(joins, j)
			}
			tn.mu.Unlock()
			for _, j := range joins {
				j.Incarnation = tn.n.Incarnation()
				if _, err := tn.n.Apply(ctx, j); err != nil {
					c.t.Logf("%s: re-propose %s: %v", tn.id, j.UserID, err)
				}
			}
		},
	}
	if c.tweak != nil {
		c.tweak(&cfg)
	}
	return cfg
}

// start creates node i (with a new incarnation) and runs it; its
// membership view starts with itself only.
func (c *tcluster) start(i int) *tnode {
	c.t.Helper()
	tn := c.nodes[i]
	tn.inc = uint64(time.Now().UnixNano())
	tn.m = newFakeMembership()
	tn.port = c.listen(tn.id, tn.addr)
	n, err := New(c.config(tn), tn.m)
	if err != nil {
		tn.port.Close()
		c.t.Fatalf("start %s: %v", tn.id, err)
	}
	tn.n = n
	tn.addr = n.Addr() // a restart binds the same address
	tn.m.up(tn.peer())
	ctx, cancel := context.WithCancel(context.Background())
	tn.stop, tn.done = cancel, make(chan struct{})
	go func() {
		defer close(tn.done)
		_ = n.Run(ctx)
	}()
	c.t.Cleanup(func() { c.kill(tn) })
	return tn
}

// listen binds a cluster port for node id, secured when the cluster has a key.
func (c *tcluster) listen(id, addr string) *clusternet.Port {
	c.t.Helper()
	var creds *clusternet.Credentials
	if c.key != nil {
		var err error
		if creds, err = clusternet.DeriveCredentials(c.key, id); err != nil {
			c.t.Fatal(err)
		}
	}
	p, err := clusternet.Listen(clusternet.Config{BindAddr: addr, Credentials: creds, Logger: c.log})
	if err != nil {
		c.t.Fatalf("listen %s: %v", id, err)
	}
	p.Start()
	return p
}

func (tn *tnode) peer() Peer { return Peer{ID: tn.id, RaftAddr: tn.n.Addr(), Incarnation: tn.inc} }

// kill stops a node without a leadership transfer, like a crash.
func (c *tcluster) kill(tn *tnode) {
	if tn.n == nil {
		return
	}
	tn.n.shutdown(false)
	tn.stop()
	<-tn.done
	tn.port.Close()
	tn.n = nil
}

// link makes each listed node see all the others alive.
func (c *tcluster) link(idx ...int) {
	for _, i := range idx {
		for _, j := range idx {
			if i != j && c.nodes[i].n != nil && c.nodes[j].n != nil {
				c.nodes[i].m.up(c.nodes[j].peer())
			}
		}
	}
}

// down tells every running node that tn is gone.
func (c *tcluster) down(tn *tnode, typ MemberEventType) {
	for _, o := range c.nodes {
		if o != tn && o.n != nil {
			o.m.down(tn.id, typ)
		}
	}
}

func (c *tcluster) running() []*tnode {
	var out []*tnode
	for _, tn := range c.nodes {
		if tn.n != nil {
			out = append(out, tn)
		}
	}
	return out
}

// leader returns the running node that leads and is recognised by every
// running node, or nil.
func (c *tcluster) leader() *tnode {
	var lead *tnode
	for _, tn := range c.running() {
		if tn.n.IsLeader() {
			if lead != nil {
				return nil
			}
			lead = tn
		}
	}
	if lead == nil {
		return nil
	}
	for _, tn := range c.running() {
		if id, _ := tn.n.Leader(); id != lead.id {
			return nil
		}
	}
	return lead
}

func (c *tcluster) waitLeader(timeout time.Duration) *tnode {
	c.t.Helper()
	var lead *tnode
	testutil.WaitFor(c.t, timeout, "a leader known to all", func() bool { lead = c.leader(); return lead != nil })
	return lead
}

func (c *tcluster) follower() *tnode {
	for _, tn := range c.running() {
		if !tn.n.IsLeader() {
			return tn
		}
	}
	return nil
}

func (c *tcluster) waitRegistered(timeout time.Duration) {
	c.t.Helper()
	testutil.WaitFor(c.t, timeout, "every node registered everywhere", func() bool {
		for _, tn := range c.running() {
			for _, o := range c.running() {
				if inc, ok := tn.n.FSM().Incarnation(o.id); !ok || inc != o.inc {
					return false
				}
			}
		}
		return true
	})
}

// voters returns the sorted voter ids in tn's configuration.
func voters(tn *tnode) []string {
	var ids []string
	for _, s := range tn.n.Status().Voters {
		ids = append(ids, s.ID)
	}
	slices.Sort(ids)
	return ids
}

// joinLocal proposes a join as if a socket of user subscribed on tn, and
// remembers it as local state for re-registration.
func (c *tcluster) joinLocal(tn *tnode, channel, user string) Result {
	c.t.Helper()
	j := PresenceJoin{App: "app", Channel: channel, UserID: json.RawMessage(user), Node: tn.id, Incarnation: tn.inc}
	res, err := tn.n.Apply(context.Background(), j)
	if err != nil {
		c.t.Fatalf("%s: join %s: %v", tn.id, user, err)
	}
	tn.mu.Lock()
	tn.local[channel+"/"+user] = j
	tn.mu.Unlock()
	return res
}

func (c *tcluster) leaveLocal(tn *tnode, channel, user string) Result {
	c.t.Helper()
	res, err := tn.n.Apply(context.Background(), PresenceLeave{App: "app", Channel: channel, UserID: json.RawMessage(user), Node: tn.id, Incarnation: tn.inc})
	if err != nil {
		c.t.Fatalf("%s: leave %s: %v", tn.id, user, err)
	}
	tn.mu.Lock()
	delete(tn.local, channel+"/"+user)
	tn.mu.Unlock()
	return res
}

func memberIDs(ms []Member) []string {
	out := []string{}
	for _, m := range ms {
		out = append(out, string(m.UserID))
	}
	return out
}

// waitMembers waits until every running node's replica has exactly want.
func (c *tcluster) waitMembers(timeout time.Duration, channel string, want ...string) {
	c.t.Helper()
	if want == nil {
		want = []string{}
	}
	testutil.WaitFor(c.t, timeout, fmt.Sprintf("members of %s = %v on every node", channel, want), func() bool {
		for _, tn := range c.running() {
			if !slices.Equal(memberIDs(tn.n.FSM().Members("app", channel)), want) {
				return false
			}
		}
		return true
	})
}
