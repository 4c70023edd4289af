package cluster_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testcluster"
	"github.com/soketi-go/soketi/pkg/consensus"
)

// A watched user is online while one of their connections is signed in on
// any node: watchers on every node hear each change once, and a user
// whose node is killed goes offline within the reap delay.
func TestWatchlist_AcrossNodesAndANodesDeath(t *testing.T) {
	c := testcluster.New(t, 3)
	c.WaitReady(20 * time.Second)
	victim := 2
	if c.Leader() == victim {
		victim = 1
	}
	other := 3 - victim // the node that is neither 0 nor the victim

	w0 := c.Nodes[0].Connect(t)
	w0.SignIn(`{"id":"w0","watchlist":["u"]}`)
	if got := w0.ExpectWatchlist(); !reflect.DeepEqual(got, map[string][]string{"offline": {"u"}}) {
		t.Fatalf("w0's first event: %v", got)
	}
	wv := c.Nodes[victim].Connect(t)
	wv.SignIn(`{"id":"wv","watchlist":["u","w0"]}`)
	if got := wv.ExpectWatchlist(); !reflect.DeepEqual(got, map[string][]string{"online": {"w0"}, "offline": {"u"}}) {
		t.Fatalf("wv's first event: %v", got)
	}

	// u signs in on two nodes: one online event per watcher.
	uOther := c.Nodes[other].Connect(t)
	uOther.SignIn(`{"id":"u"}`)
	for _, w := range []*testcluster.Client{w0, wv} {
		if got := w.ExpectWatchlist(); !reflect.DeepEqual(got, map[string][]string{"online": {"u"}}) {
			t.Fatalf("u online: %v", got)
		}
	}
	uVictim := c.Nodes[victim].Connect(t)
	uVictim.SignIn(`{"id":"u"}`)
	uOther.Close()
	w0.ExpectNone("pusher_internal:watchlist_events", 500*time.Millisecond)

	// u's last connection is on the victim: killing it takes u offline
	// once the reap delay has passed, and only then.
	killed := time.Now()
	c.Kill(victim)
	if got := w0.ExpectWatchlist(); !reflect.DeepEqual(got, map[string][]string{"offline": {"u"}}) {
		t.Fatalf("after the kill: %v", got)
	}
	t.Logf("u offline %v after its node was killed (reap delay 2 s)", time.Since(killed).Round(10*time.Millisecond))
	w0.ExpectNone("pusher_internal:watchlist_events", 500*time.Millisecond)
	for _, n := range c.Alive() {
		if n.Cluster.Raft().FSM().IsMember("app-id", consensus.OnlineChannel, []byte(`"u"`)) {
			t.Fatalf("node %d still has u online", n.Index)
		}
	}
	// Sign-ins send no webhooks.
	for _, e := range c.Hooks.Snapshot() {
		if e.Channel == consensus.OnlineChannel {
			t.Fatalf("a webhook for the online channel: %+v", e)
		}
	}

	// A watcher that signs in after all this sees the settled state.
	late := c.Nodes[other].Connect(t)
	late.SignIn(`{"id":"late","watchlist":["u","w0","wv"]}`)
	if got := late.ExpectWatchlist(); !reflect.DeepEqual(got, map[string][]string{"online": {"w0"}, "offline": {"u", "wv"}}) {
		t.Fatalf("a late watcher's first event: %v", got)
	}
}
