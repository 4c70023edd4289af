package consensus

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/soketi-go/soketi/internal/testutil"
)

// nonVoters returns the sorted non-voter ids in tn's configuration.
func nonVoters(tn *tnode) []string {
	var ids []string
	for _, s := range tn.n.Status().NonVoters {
		ids = append(ids, s.ID)
	}
	slices.Sort(ids)
	return ids
}

// addressOf is id's address in tn's raft configuration.
func addressOf(tn *tnode, id string) string {
	st := tn.n.Status()
	for _, s := range append(st.Voters, st.NonVoters...) {
		if s.ID == id {
			return s.Address
		}
	}
	return ""
}

// leave shuts tn down gracefully: gossip reports a leave to the others.
func (c *tcluster) leave(tn *tnode) {
	tn.n.Shutdown()
	c.down(tn, PeerLeft)
	tn.stop()
	<-tn.done
	tn.port.Close()
	tn.n = nil
}

func TestAddrProvider(t *testing.T) {
	c := newTestCluster(t, 2, 2)
	a, b := c.start(0), c.start(1)
	c.link(0, 1)
	c.waitLeader(15 * time.Second)
	p := addrProvider{a.n}
	if got, err := p.ServerAddr("node-a"); err != nil || string(got) != a.n.Addr() {
		t.Fatalf("own address %q %v, want plain %s", got, err, a.n.Addr())
	}
	if got, err := p.ServerAddr("node-b"); err != nil || string(got) != "node-b@"+b.n.Addr() {
		t.Fatalf("member address %q %v", got, err)
	}
	// The membership's address wins over the configuration's.
	a.m.up(Peer{ID: "node-b", RaftAddr: "127.0.0.1:1"})
	if got, _ := p.ServerAddr("node-b"); got != "node-b@127.0.0.1:1" {
		t.Fatalf("member address after a move %q", got)
	}
	// Not alive: the configuration's address.
	a.m.down("node-b", PeerDead)
	if got, _ := p.ServerAddr("node-b"); got != raft.ServerAddress("node-b@"+b.n.Addr()) {
		t.Fatalf("configured address %q", got)
	}
	if got, err := p.ServerAddr("nobody"); err != nil || got != "nobody@" {
		t.Fatalf("unknown server resolved to %q %v, want no address", got, err)
	}
	for _, tt := range []struct{ in, id, addr string }{
		{"node-b@10.0.0.1:11004", "node-b", "10.0.0.1:11004"},
		{"us@er@[::1]:11004", "us@er", "[::1]:11004"},
		{"nobody@", "nobody", ""},
		{"10.0.0.1:11004", "", "10.0.0.1:11004"},
	} {
		id, addr, ok := untagAddr(tt.in)
		if id != tt.id || addr != tt.addr || ok != (tt.id != "") {
			t.Errorf("untagAddr(%q) = %q %q %v", tt.in, id, addr, ok)
		}
	}
	// Raft never dials a plain address but its own, nor a server with no address.
	l := newRaftLayer(a.port, a.id, a.n.memberAddr)
	if _, err := l.Dial("nobody@", time.Second); err == nil {
		t.Fatal("dialled a server with no address")
	}
	if _, err := l.Dial(raft.ServerAddress(b.n.Addr()), time.Second); err == nil {
		t.Fatal("dialled a plain address of another node")
	}
	if _, err := l.Dial(raft.ServerAddress("node-a@"+b.n.Addr()), time.Second); err == nil {
		t.Fatal("dialled node-b's port as node-a: the certificate check did not run")
	}
	// A dial to a server that is not alive waits until it is, then goes to
	// the address the membership has for it now.
	held := make(chan error, 1)
	go func() {
		c, err := l.Dial("node-b@127.0.0.1:1", time.Second)
		if err == nil {
			c.Close()
		}
		held <- err
	}()
	select {
	case err := <-held:
		t.Fatalf("dial to a dead server returned at once: %v", err)
	case <-time.After(3 * holdPoll):
	}
	a.m.up(b.peer())
	if err := <-held; err != nil {
		t.Fatalf("held dial after the server came back: %v", err)
	}

	// Parking closes the open connections to a server and refuses new ones.
	conn, err := l.Dial(raft.ServerAddress("node-b@"+b.n.Addr()), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	l.park("node-b")
	if _, err := conn.Write([]byte{0}); err == nil {
		t.Fatal("a parked server's connection is still open")
	}
	if _, err := l.Dial(raft.ServerAddress("node-b@"+b.n.Addr()), time.Second); !errors.Is(err, errParked) {
		t.Fatalf("dial to a parked server: %v", err)
	}
	l.unpark("node-b")
	conn, err = l.Dial(raft.ServerAddress("node-b@"+b.n.Addr()), time.Second)
	if err != nil {
		t.Fatalf("dial after unpark: %v", err)
	}
	conn.Close()

	// Stopping the layer releases a held dial.
	a.m.down("node-b", PeerDead)
	go func() {
		_, err := l.Dial(raft.ServerAddress("node-b@"+b.n.Addr()), time.Second)
		held <- err
	}()
	l.stop()
	if err := <-held; err == nil {
		t.Fatal("held dial succeeded after stop")
	}
}

// The leader of three dies and a follower restarts at a new port. The
// survivor has the longer log, so only it can win, and it needs the
// restarted node's vote: it must find it at the address the membership
// gives, not the one in the configuration.
func TestCluster_RestartAtNewAddressElectsLeader(t *testing.T) {
	c := newTestCluster(t, 3, 3)
	c.tweak = func(cfg *Config) { cfg.MasterTimeout = DefaultMasterTimeout }
	for i := range c.nodes {
		c.start(i)
	}
	c.link(0, 1, 2)
	lead := c.waitLeader(15 * time.Second)
	c.waitRegistered(10 * time.Second)
	var f, survivor *tnode
	for _, tn := range c.running() {
		switch {
		case tn == lead:
		case f == nil:
			f = tn
		default:
			survivor = tn
		}
	}

	// f crashes; the others commit without it, so its log falls behind.
	c.kill(f)
	c.down(f, PeerDead)
	res := c.joinLocal(lead, "presence-x", `"while-f-was-down"`)
	testutil.WaitFor(t, 5*time.Second, "the survivor to apply the join", func() bool {
		return survivor.n.FSM().AppliedIndex() >= res.Index
	})
	c.kill(lead)
	c.down(lead, PeerDead)

	oldAddr := f.addr
	f.addr = "127.0.0.1:0" // a new port
	c.start(slices.Index(c.nodes, f))
	restarted := time.Now()
	if f.addr == oldAddr {
		t.Fatalf("restarted at the same address %s", oldAddr)
	}
	if f.n.raft().LastIndex() >= survivor.n.raft().LastIndex() {
		t.Fatalf("restarted node's log (%d) is not behind the survivor's (%d)", f.n.raft().LastIndex(), survivor.n.raft().LastIndex())
	}
	survivor.m.up(f.peer())
	f.m.up(survivor.peer())
	next := c.waitLeader(15 * time.Second)
	took := time.Since(restarted)
	t.Logf("MEASURE restart_new_address_election=%s (restart at %s, was %s, until a leader known to both; master timeout %s)",
		took.Round(time.Millisecond), f.addr, oldAddr, DefaultMasterTimeout)
	if next != survivor {
		t.Fatalf("leader %s, want %s (the longer log)", next.id, survivor.id)
	}
	// The leader then moves f's address in the configuration.
	testutil.WaitFor(t, 10*time.Second, "f's new address in the configuration", func() bool {
		return addressOf(survivor, f.id) == f.addr && addressOf(f, f.id) == f.addr
	})
	c.waitRegistered(10 * time.Second)
	if res := c.joinLocal(f, "presence-y", `"after"`); !res.MemberAdded {
		t.Fatalf("join on the restarted node %+v", res)
	}
}

// A dead voter outlives the reap delay in the configuration when nothing
// can take its place (its presence entries are purged all the same), and
// it is a voter again at once when it comes back.
func TestCluster_DeadVoterKeptUntilReplaced(t *testing.T) {
	c := newTestCluster(t, 3, 3)
	for i := range c.nodes {
		c.start(i)
	}
	c.link(0, 1, 2)
	lead := c.waitLeader(15 * time.Second)
	c.waitRegistered(10 * time.Second)
	f := c.follower()
	c.joinLocal(f, "presence-x", `"on-f"`)
	c.waitMembers(5*time.Second, "presence-x", `"on-f"`)

	c.kill(f)
	c.down(f, PeerDead)
	killed := time.Now()
	reap := c.config(f).ReapDelay
	c.waitMembers(reap+10*time.Second, "presence-x")
	testutil.WaitFor(t, 5*time.Second, "the dead node forgotten by the FSM", func() bool {
		for _, tn := range c.running() {
			if _, ok := tn.n.FSM().Incarnation(f.id); ok {
				return false
			}
		}
		return true
	})
	purged := time.Since(killed)
	if purged < reap {
		t.Fatalf("purged after %s, before the reap delay %s", purged, reap)
	}
	// The purge runs in the pass after the removals: had the voter been
	// removed, it would be gone by now.
	for _, tn := range c.running() {
		if got := voters(tn); len(got) != 3 || !slices.Contains(got, f.id) {
			t.Fatalf("%s: voters %v after the purge (%s), want the dead voter kept", tn.id, got, purged)
		}
	}

	c.start(slices.Index(c.nodes, f))
	c.link(0, 1, 2)
	back := time.Now()
	if !slices.Contains(voters(lead), f.id) {
		t.Fatal("returning node is not a voter")
	}
	ready := testutil.WaitFor(t, 10*time.Second, "the returning voter registered and ready", func() bool {
		id, _ := f.n.Leader()
		return id != "" && f.n.Registered() && f.n.Ready()
	})
	t.Logf("MEASURE dead_voter_back=%s (restart of a voter dead for %s until it knows the leader and is registered)",
		ready.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	_ = back
	c.waitRegistered(10 * time.Second)
	if res := c.joinLocal(f, "presence-x", `"back"`); !res.MemberAdded {
		t.Fatalf("join on the returning voter %+v", res)
	}
}

// With four members (three voters and a non-voter), a dead voter is
// replaced by the non-voter after the reap delay: promoted first, then the
// dead one removed.
func TestCluster_DeadVoterReplacedByNonvoter(t *testing.T) {
	c := newTestCluster(t, 4, 3)
	for i := range c.nodes {
		c.start(i)
	}
	c.link(0, 1, 2, 3)
	lead := c.waitLeader(15 * time.Second)
	c.waitRegistered(10 * time.Second)
	testutil.WaitFor(t, 10*time.Second, "three voters and a non-voter", func() bool {
		return len(voters(lead)) == 3 && len(nonVoters(lead)) == 1
	})
	nv := nonVoters(lead)[0]
	var victim *tnode
	for _, tn := range c.running() {
		if tn != lead && tn.id != nv {
			victim = tn
			break
		}
	}
	c.kill(victim)
	c.down(victim, PeerDead)
	killed := time.Now()
	var want []string
	for _, tn := range c.running() {
		want = append(want, tn.id)
	}
	slices.Sort(want)
	took := testutil.WaitFor(t, 15*time.Second, "the non-voter promoted in place of the dead voter", func() bool {
		for _, tn := range c.running() {
			if !slices.Equal(voters(tn), want) || len(nonVoters(tn)) != 0 {
				return false
			}
		}
		return true
	})
	reap := c.config(victim).ReapDelay
	t.Logf("dead voter %s replaced by %s after %s (reap delay %s)", victim.id, nv, took.Round(time.Millisecond), reap)
	if time.Since(killed) < reap {
		t.Fatalf("replaced after %s, before the reap delay %s", took, reap)
	}
}

// A member that left (removed after a short reap delay) and comes back is
// admitted as a non-voter and promoted within a second of being caught up.
func TestCluster_ReturningNonvoterPromotedFast(t *testing.T) {
	c := newTestCluster(t, 3, 3)
	c.tweak = func(cfg *Config) {
		cfg.MasterTimeout = DefaultMasterTimeout // the default 500 ms tick
		cfg.ReapDelay = 300 * time.Millisecond
	}
	for i := range c.nodes {
		c.start(i)
	}
	c.link(0, 1, 2)
	lead := c.waitLeader(15 * time.Second)
	c.waitRegistered(10 * time.Second)
	f := c.follower()
	c.leave(f)
	testutil.WaitFor(t, 10*time.Second, "the left node removed", func() bool {
		return addressOf(lead, f.id) == ""
	})
	for i := range 20 { // something to catch up on
		c.joinLocal(lead, "presence-x", `"u`+string(rune('a'+i))+`"`)
	}

	c.start(slices.Index(c.nodes, f))
	back := time.Now()
	c.link(0, 1, 2)
	var caught time.Time
	testutil.WaitFor(t, 10*time.Second, "the returning node promoted", func() bool {
		if caught.IsZero() && slices.Contains(nonVoters(lead), f.id) &&
			f.n.raft().LastIndex()+promoteLag >= lead.n.raft().LastIndex() {
			caught = time.Now()
		}
		return slices.Contains(voters(lead), f.id)
	})
	promoted := time.Now()
	if caught.IsZero() { // caught up and promoted between two polls
		caught = promoted
	}
	t.Logf("MEASURE promotion=%s after catching up (%s after its return; tick %s)",
		promoted.Sub(caught).Round(time.Millisecond), promoted.Sub(back).Round(time.Millisecond), lead.n.tickInterval())
	if d := promoted.Sub(caught); d > time.Second {
		t.Fatalf("promoted %s after catching up, want within 1 s", d)
	}
}
