//go:build netns && linux

package netnstest

import (
	"testing"
	"time"
)

// Subscription counts and watchlists on the namespace LAN, through
// pusher-js: counts over three hosts, a watched user online on another
// host, and offline once that host is SIGKILLed and its entries reaped.
func TestClusterPusher_CountsAndWatchlists(t *testing.T) {
	c := newRaftCluster(t, "SOKETI_DEFAULT_APP_ENABLE_SUBSCRIPTION_COUNT=true")
	cl := startClients(t)

	subs := []string{"s0", "s1", "s2"}
	for i, id := range subs {
		cl.connect(id, c.nodes[i])
		cl.subscribe(id, "room")
	}
	from := cl.mark()
	for _, id := range subs {
		cl.waitEvent(0, deliveryTimeout, id+" counting 3", countEvent(id, "room", 3))
	}

	cl.connect("w", c.nodes[0])
	cl.signin("w", map[string]any{"id": "w", "watchlist": []string{"u"}})
	cl.waitEvent(from, deliveryTimeout, "w's first watchlist event", watchlistEvent("w", "offline", "u"))
	cl.connect("u", c.nodes[1])
	cl.signin("u", map[string]any{"id": "u"})
	cl.waitEvent(from, deliveryTimeout, "u online for w", watchlistEvent("w", "online", "u"))

	killed := time.Now()
	from = cl.mark()
	c.nodes[1].kill()
	cl.waitEvent(from, nodeTimeout+reapDelay+slack, "u offline for w", watchlistEvent("w", "offline", "u"))
	t.Logf("u offline for w %v after its host was SIGKILLed (node timeout %v, reap delay %v)",
		time.Since(killed).Round(10*time.Millisecond), nodeTimeout, reapDelay)
	for _, id := range []string{"s0", "s2"} {
		cl.waitEvent(from, nodeTimeout+slack, id+" counting 2", countEvent(id, "room", 2))
	}
	if n := len(cl.matching(from, watchlistEvent("w", "online", "u"))); n != 0 {
		t.Fatalf("w heard u online again %d times after the kill", n)
	}
}
