package cluster_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testcluster"
	"github.com/soketi-go/soketi/pkg/pusher"
)

// countsUntil reads a client's subscription_count events until one says
// want, failing if a count moves away from want on the way (a change is
// never seen backwards).
func countsUntil(t *testing.T, c *testcluster.Client, want int, rising bool) {
	t.Helper()
	last := -1
	for i := 0; i < 20; i++ {
		m := c.Expect("pusher_internal:subscription_count")
		var d struct {
			N int `json:"subscription_count"`
		}
		if err := json.Unmarshal([]byte(m["data"].(string)), &d); err != nil {
			t.Fatal(err)
		}
		if last >= 0 && ((rising && d.N < last) || (!rising && d.N > last)) {
			t.Fatalf("count went %d → %d on the way to %d", last, d.N, want)
		}
		if last = d.N; d.N == want {
			return
		}
	}
	t.Fatalf("never saw subscription_count %d (last %d)", want, last)
}

// Subscribers on every node hear the cluster-wide count within about a
// second of each change, and a killed node's subscribers drop out of it.
func TestSubscriptionCount_AcrossNodes(t *testing.T) {
	app, _ := pusher.ParseApp(map[string]any{"enableSubscriptionCount": true}, pusher.DefaultAppLimits)
	c := testcluster.NewWithOptions(t, 3, testcluster.Options{App: app})
	c.WaitReady(20 * time.Second)
	victim := 2
	if c.Leader() == victim {
		victim = 1
	}
	var subs []*testcluster.Client
	for i, n := range c.Nodes {
		s := n.Connect(t)
		start := time.Now()
		s.Subscribe("room")
		subs = append(subs, s)
		for _, w := range subs {
			countsUntil(t, w, i+1, true)
		}
		t.Logf("count %d seen on every node %v after the subscribe", i+1, time.Since(start).Round(time.Millisecond))
	}
	killed := time.Now()
	c.Kill(victim)
	for i, s := range subs {
		if i != victim {
			countsUntil(t, s, 2, false)
		}
	}
	t.Logf("count 2 seen %v after the kill", time.Since(killed).Round(time.Millisecond))
	// A presence channel is not counted.
	p := c.Nodes[0].Connect(t)
	p.JoinPresence("presence-room", "1")
	p.ExpectNone("pusher_internal:subscription_count", 500*time.Millisecond)
}
