package consensus

import (
	"slices"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testutil"
)

func TestSeesAsLowest(t *testing.T) {
	for _, tt := range []struct {
		alive   []string
		ignored map[string]bool
		want    bool
	}{
		{[]string{"b", "c"}, nil, true},
		{[]string{"c", "d"}, nil, false},                            // does not see b
		{[]string{"a", "b", "c"}, nil, false},                       // waits for a
		{[]string{"a", "b", "c"}, map[string]bool{"a": true}, true}, // a does not answer
		{nil, nil, false},
	} {
		if got := seesAsLowest(tt.alive, "b", tt.ignored); got != tt.want {
			t.Errorf("seesAsLowest(%v, b, %v) = %v", tt.alive, tt.ignored, got)
		}
	}
}

// Three nodes started together with ExpectedServers 1 find each other and
// bootstrap one group of three voters, before the discovery window ends:
// nobody bootstraps alone, so no merge wipes anything.
func TestCluster_FormsOneGroupWithoutExpectedServers(t *testing.T) {
	c := newTestCluster(t, 3, 1)
	c.tweak = func(cfg *Config) { cfg.MasterTimeout = DefaultMasterTimeout } // default timing and window
	for i := range c.nodes {
		c.start(i)
	}
	last := time.Now()
	c.link(0, 1, 2)
	all := []string{"node-a", "node-b", "node-c"}
	testutil.WaitFor(t, 10*time.Second, "one group of three voters with a leader known to all", func() bool {
		if c.leader() == nil {
			return false
		}
		for _, tn := range c.running() {
			if !slices.Equal(voters(tn), all) {
				return false
			}
		}
		return true
	})
	took := time.Since(last)
	c.waitRegistered(5 * time.Second)
	ready := testutil.WaitFor(t, 5*time.Second, "every node ready", func() bool {
		for _, tn := range c.running() {
			if !tn.n.Ready() {
				return false
			}
		}
		return true
	})
	t.Logf("MEASURE formation=%s (last start until three voters and one leader on every node; discovery window %s); ready %s later",
		took.Round(time.Millisecond), DefaultDiscoveryWindow, ready.Round(time.Millisecond))
	var boots uint64
	for _, tn := range c.running() {
		st := tn.n.Stats()
		boots += st.Bootstraps
		if st.Resets != 0 {
			t.Fatalf("%s wiped its state %d times: groups formed apart and merged", tn.id, st.Resets)
		}
	}
	if boots != 1 {
		t.Fatalf("%d bootstraps in total, want 1", boots)
	}
	if took >= DefaultDiscoveryWindow {
		t.Fatalf("formation took %s: the nodes waited for the whole discovery window", took)
	}
}

// A node that arrives after a group formed (inside the window of the
// first ones) joins it instead of bootstrapping, and becomes a voter.
func TestCluster_LateNodeJoinsFormedGroup(t *testing.T) {
	c := newTestCluster(t, 3, 1)
	c.start(1)
	c.start(2)
	c.link(1, 2)
	testutil.WaitFor(t, 10*time.Second, "node-b and node-c in one group", func() bool {
		return slices.Equal(voters(c.nodes[1]), []string{"node-b", "node-c"}) && c.leader() != nil
	})
	// node-a has the lowest id, but the others already have a group.
	c.start(0)
	c.link(0, 1, 2)
	testutil.WaitFor(t, 10*time.Second, "three voters", func() bool {
		for _, tn := range c.running() {
			if !slices.Equal(voters(tn), []string{"node-a", "node-b", "node-c"}) {
				return false
			}
		}
		return c.leader() != nil
	})
	c.waitRegistered(5 * time.Second)
	for _, tn := range c.running() {
		if st := tn.n.Stats(); st.Resets != 0 || (tn.id != "node-b" && st.Bootstraps != 0) {
			t.Fatalf("%s stats %+v", tn.id, st)
		}
	}
}
