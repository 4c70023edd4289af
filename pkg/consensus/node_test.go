package consensus

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testutil"
)

func TestDeriveTiming(t *testing.T) {
	for _, tt := range []struct {
		master time.Duration
		want   Timing
	}{
		{2 * time.Second, Timing{time.Second, time.Second, time.Second, 5 * time.Millisecond}},
		{time.Second, Timing{500 * time.Millisecond, 500 * time.Millisecond, 500 * time.Millisecond, 5 * time.Millisecond}},
		{100 * time.Millisecond, Timing{200 * time.Millisecond, 200 * time.Millisecond, 200 * time.Millisecond, 5 * time.Millisecond}},
	} {
		got := DeriveTiming(tt.master)
		if got != tt.want {
			t.Errorf("DeriveTiming(%s) = %+v, want %+v", tt.master, got, tt.want)
		}
		if got.LeaderLease > got.Heartbeat || 2*got.Heartbeat > max(tt.master, 400*time.Millisecond) {
			t.Errorf("DeriveTiming(%s): lease or detection out of bounds: %+v", tt.master, got)
		}
	}
}

func TestGroupWins(t *testing.T) {
	for _, tt := range []struct {
		a, b []string
		want bool
	}{
		{[]string{"a"}, []string{"b"}, true},
		{[]string{"b"}, []string{"a"}, false},
		{[]string{"a", "c"}, []string{"b"}, true},
		{[]string{"c", "d"}, []string{"b", "z"}, false},
		{[]string{"a"}, nil, true},
		{nil, []string{"a"}, false},
	} {
		if got := groupWins(tt.a, tt.b); got != tt.want {
			t.Errorf("groupWins(%v, %v) = %v", tt.a, tt.b, got)
		}
	}
}

func TestNode_SingleNodeWorksAlone(t *testing.T) {
	c := newTestCluster(t, 1, 1)
	a := c.start(0)
	c.waitLeader(10 * time.Second)
	c.waitRegistered(10 * time.Second)
	res := c.joinLocal(a, "presence-x", `"u1"`)
	if !res.MemberAdded || !slices.Equal(memberIDs(a.n.FSM().Members("app", "presence-x")), []string{`"u1"`}) {
		t.Fatalf("join result %+v", res)
	}
	if a.regs.Load() != 1 {
		t.Fatalf("OnRegistered called %d times", a.regs.Load())
	}
	st := a.n.Status()
	if st.State != "leader" || st.LeaderID != "node-a" || len(st.Voters) != 1 || st.AppliedIndex < res.Index || st.Term == 0 {
		t.Fatalf("status %+v", st)
	}
	if _, err := a.n.Apply(context.Background(), PresenceJoin{App: "app", Channel: "p", UserID: []byte(`1`), Node: "node-a", Incarnation: 1}); !errors.Is(err, ErrStale) {
		t.Fatalf("stale join: err %v", err)
	}
}

func TestNode_ApplyWithoutLeaderFailsFast(t *testing.T) {
	c := newTestCluster(t, 1, 3) // waits for three members that never come
	a := c.start(0)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := a.n.Apply(ctx, NodeUp{Node: "x", Incarnation: 1})
	if !errors.Is(err, ErrNoLeader) {
		t.Fatalf("err = %v, want ErrNoLeader", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Apply took %s", d)
	}
	if a.n.Stats().NoLeader != 1 {
		t.Fatalf("stats %+v", a.n.Stats())
	}
}

func TestCluster_BootstrapForwardAndReadYourWrites(t *testing.T) {
	c := newTestCluster(t, 3, 3)
	for i := range 3 {
		c.start(i)
	}
	c.link(0, 1, 2)
	lead := c.waitLeader(15 * time.Second)
	c.waitRegistered(10 * time.Second)
	for _, tn := range c.running() {
		if got := voters(tn); !slices.Equal(got, []string{"node-a", "node-b", "node-c"}) {
			t.Fatalf("%s voters %v", tn.id, got)
		}
		if s := tn.n.Stats().Bootstraps; (s == 1) != (tn.id == "node-a") {
			t.Fatalf("%s bootstrapped %d times", tn.id, s)
		}
	}

	// A join on a follower is forwarded and readable there at once.
	f := c.follower()
	res := c.joinLocal(f, "presence-x", `"u1"`)
	if !res.MemberAdded || res.Node != f.id || res.Index == 0 {
		t.Fatalf("forwarded join result %+v", res)
	}
	if f.n.Stats().Forwards == 0 || lead.n.Stats().ForwardsServed == 0 {
		t.Fatalf("not forwarded: follower %+v leader %+v", f.n.Stats(), lead.n.Stats())
	}
	if !f.n.FSM().IsMember("app", "presence-x", []byte(`"u1"`)) {
		t.Fatal("read-your-writes: member not on the follower's replica after Apply")
	}
	c.waitMembers(5*time.Second, "presence-x", `"u1"`)

	// The same user on two nodes is added once and removed once.
	var other *tnode
	for _, tn := range c.running() {
		if tn != f {
			other = tn
			break
		}
	}
	if res := c.joinLocal(other, "presence-x", `"u1"`); res.MemberAdded {
		t.Fatal("second node's join of the same user added it again")
	}
	if res := c.leaveLocal(f, "presence-x", `"u1"`); res.MemberRemoved {
		t.Fatal("removed while another node still has a socket")
	}
	if res := c.leaveLocal(other, "presence-x", `"u1"`); !res.MemberRemoved {
		t.Fatal("last leave did not remove the member")
	}
	c.waitMembers(5*time.Second, "presence-x")
	testutil.WaitFor(t, 5*time.Second, "one member_added and one member_removed per node", func() bool {
		for _, tn := range c.running() {
			if tn.added.Load() != 1 || tn.gone.Load() != 1 {
				return false
			}
		}
		return true
	})

	// Occupancy is decided once, cluster-wide.
	for i, tn := range c.running() {
		res, err := tn.n.Apply(context.Background(), Occupancy{App: "app", Channel: "c", Node: tn.id, Incarnation: tn.inc, Occupied: true})
		if err != nil || res.ChannelOccupied != (i == 0) {
			t.Fatalf("%s occupancy: %+v %v", tn.id, res, err)
		}
		if !tn.n.FSM().ChannelOccupied("app", "c") {
			t.Fatalf("%s: occupancy not visible after Apply", tn.id)
		}
	}
	st := f.n.Status()
	if st.LeaderID != lead.id || st.LeaderAddress != lead.n.Addr() || st.State != "follower" || st.LastContactMs < 0 || st.CommitIndex == 0 {
		t.Fatalf("follower status %+v", st)
	}
}

func TestCluster_LeaderLossFailoverAndReap(t *testing.T) {
	c := newTestCluster(t, 3, 3)
	c.tweak = func(cfg *Config) { cfg.MasterTimeout = DefaultMasterTimeout }
	for i := range 3 {
		c.start(i)
	}
	c.link(0, 1, 2)
	old := c.waitLeader(15 * time.Second)
	c.waitRegistered(10 * time.Second)
	c.joinLocal(old, "presence-x", `"on-leader"`)
	var want []string
	for _, tn := range c.running() {
		if tn != old {
			c.joinLocal(tn, "presence-x", `"`+tn.id+`"`)
			want = append(want, `"`+tn.id+`"`)
		}
	}
	slices.Sort(want)
	c.waitMembers(5*time.Second, "presence-x", append(slices.Clone(want), `"on-leader"`)...)

	master := old.n.Timing().Heartbeat * 2
	killed := time.Now()
	c.kill(old)
	c.down(old, PeerDead)
	lead := c.waitLeader(10 * time.Second)
	took := time.Since(killed)
	t.Logf("leader %s lost; %s elected after %s (master timeout %s, bound %s)", old.id, lead.id, took, master, master+time.Second)

	// Writes keep working, on the leader and forwarded.
	for _, tn := range c.running() {
		c.joinLocal(tn, "presence-y", `"after-`+tn.id+`"`)
	}

	// After the reap delay the dead leader's member is purged everywhere
	// and the node forgotten by the FSM; it stays a voter, since nothing
	// can be promoted in its place (see TestCluster_DeadVoterKeptUntilReplaced).
	c.waitMembers(15*time.Second, "presence-x", want...)
	testutil.WaitFor(t, 10*time.Second, "dead node forgotten by the FSM", func() bool {
		for _, tn := range c.running() {
			if _, ok := tn.n.FSM().Incarnation(old.id); ok {
				return false
			}
		}
		return true
	})
	for _, tn := range c.running() {
		if !slices.Contains(voters(tn), old.id) {
			t.Fatalf("%s: dead voter %s removed with no replacement: voters %v", tn.id, old.id, voters(tn))
		}
	}
	for _, tn := range c.running() {
		if tn.gone.Load() != 1 {
			t.Fatalf("%s saw %d removals, want 1 (the dead leader's member)", tn.id, tn.gone.Load())
		}
	}
}

func TestCluster_RestartRejoinsWithLogAndPurgesGhosts(t *testing.T) {
	c := newTestCluster(t, 3, 3)
	for i := range 3 {
		c.start(i)
	}
	c.link(0, 1, 2)
	c.waitLeader(15 * time.Second)
	c.waitRegistered(10 * time.Second)
	f := c.follower()
	c.joinLocal(f, "presence-x", `"ghost"`)
	c.waitMembers(5*time.Second, "presence-x", `"ghost"`)
	lastIndex := f.n.Status().LastLogIndex

	// Crash and restart with the same Dir and address, before the reap
	// delay: still a voter, it rejoins with its own log. Its new
	// incarnation purges what its previous life left behind.
	i := slices.Index(c.nodes, f)
	c.kill(f)
	f.local = map[string]PresenceJoin{} // the crash lost the sockets
	c.start(i)
	if got := f.n.raft().LastIndex(); got < lastIndex {
		t.Fatalf("restarted with last index %d, had %d: log lost", got, lastIndex)
	}
	if f.n.Stats().Bootstraps != 0 {
		t.Fatal("restarted node bootstrapped")
	}
	c.link(0, 1, 2)
	c.waitLeader(15 * time.Second)
	c.waitRegistered(15 * time.Second)
	c.waitMembers(10*time.Second, "presence-x")
	if got := voters(f); len(got) != 3 {
		t.Fatalf("voters after restart %v", got)
	}
	res := c.joinLocal(f, "presence-x", `"alive"`)
	if !res.MemberAdded {
		t.Fatalf("join after restart %+v", res)
	}
	c.waitMembers(5*time.Second, "presence-x", `"alive"`)
}

func TestCluster_MergeSeparateGroups(t *testing.T) {
	c := newTestCluster(t, 2, 1)
	a, b := c.start(0), c.start(1)
	// Alone, each bootstraps its own group.
	testutil.WaitFor(t, 10*time.Second, "two single-node groups", func() bool { return a.n.IsLeader() && b.n.IsLeader() })
	testutil.WaitFor(t, 10*time.Second, "both registered", func() bool { return a.n.Registered() && b.n.Registered() })
	c.joinLocal(a, "presence-x", `"from-a"`)
	c.joinLocal(b, "presence-x", `"from-b"`)

	// They find each other: node-a's group (lower id) wins, node-b wipes
	// its state, is added, re-registers and re-proposes its local state.
	c.link(0, 1)
	testutil.WaitFor(t, 20*time.Second, "one group of two", func() bool {
		return slices.Equal(voters(a), []string{"node-a", "node-b"}) && slices.Equal(voters(b), []string{"node-a", "node-b"})
	})
	if lead := c.waitLeader(10 * time.Second); lead != a {
		t.Fatalf("leader %s, want node-a", lead.id)
	}
	c.waitRegistered(10 * time.Second)
	c.waitMembers(10*time.Second, "presence-x", `"from-a"`, `"from-b"`)
	if b.n.Stats().Resets != 1 || a.n.Stats().Resets != 0 {
		t.Fatalf("resets a=%d b=%d", a.n.Stats().Resets, b.n.Stats().Resets)
	}
	if b.regs.Load() != 2 {
		t.Fatalf("node-b OnRegistered called %d times, want 2", b.regs.Load())
	}
	// Writes work from the absorbed node.
	if res := c.joinLocal(b, "presence-y", `1`); !res.MemberAdded {
		t.Fatalf("join on node-b after merge %+v", res)
	}
}

// A node that leaves gracefully has its presence purged at once, but stays
// a voter for the reap delay: most often it is being restarted, and comes
// back a voter.
func TestCluster_GracefulLeavePurgedAtOnceVoterAfterReapDelay(t *testing.T) {
	c := newTestCluster(t, 3, 3)
	const reap = 3 * time.Second
	c.tweak = func(cfg *Config) { cfg.ReapDelay = reap }
	for i := range 3 {
		c.start(i)
	}
	c.link(0, 1, 2)
	lead := c.waitLeader(15 * time.Second)
	c.waitRegistered(10 * time.Second)
	c.joinLocal(lead, "presence-x", `"leaver"`)

	// The leader shuts down gracefully: it hands leadership over, gossip
	// reports a leave, and the new leader purges its presence at once.
	lead.n.Shutdown()
	c.down(lead, PeerLeft)
	left := time.Now()
	lead.stop()
	<-lead.done
	lead.n = nil
	next := c.waitLeader(10 * time.Second)
	testutil.WaitFor(t, 2*time.Second, "left node's presence purged", func() bool {
		return next.n.FSM().MemberCount("app", "presence-x") == 0
	})
	if !slices.Contains(voters(next), lead.id) && time.Since(left) < reap {
		t.Fatalf("left voter removed after %s, before the reap delay", time.Since(left))
	}
	testutil.WaitFor(t, 10*time.Second, "left voter removed after the reap delay", func() bool {
		return !slices.Contains(voters(next), lead.id)
	})
	if took := time.Since(left); took < reap {
		t.Fatalf("left voter removed after %s, before the reap delay %s", took, reap)
	}
	c.waitMembers(5*time.Second, "presence-x")
}

// A voter restarted gracefully within the reap delay (a rolling deploy) is
// a voter again as soon as it is back, with no re-admission.
func TestCluster_RestartedLeaverIsAVoterAtOnce(t *testing.T) {
	c := newTestCluster(t, 3, 3)
	c.tweak = func(cfg *Config) { cfg.ReapDelay = time.Minute }
	for i := range 3 {
		c.start(i)
	}
	c.link(0, 1, 2)
	lead := c.waitLeader(15 * time.Second)
	c.waitRegistered(10 * time.Second)
	f := c.follower()
	c.leave(f)
	// The leader has acted on the leave once it purged the node's entries.
	testutil.WaitFor(t, 5*time.Second, "the leaver purged", func() bool {
		_, registered := lead.n.FSM().Incarnation(f.id)
		return !registered
	})
	if !slices.Contains(voters(lead), f.id) {
		t.Fatalf("a left voter was removed before the reap delay: voters %v", voters(lead))
	}
	c.start(slices.Index(c.nodes, f))
	back := time.Now()
	c.link(0, 1, 2)
	c.waitRegistered(10 * time.Second)
	t.Logf("restarted leaver registered %s after its return", time.Since(back).Round(time.Millisecond))
	if v := voters(lead); len(v) != 3 {
		t.Fatalf("voters %v after the restart", v)
	}
}
