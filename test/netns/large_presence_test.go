//go:build netns && linux

package netnstest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// largeInfo is a user_info of about 2 KB, under the default 2 KB member limit.
func largeInfo(user string) map[string]string {
	return map[string]string{"name": user, "bio": strings.Repeat("x", 1950-len(user))}
}

// percentile is the value at rank q·(n−1), rounded, of sorted values.
func percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(q*float64(len(sorted)-1)+0.5)]
}

// connectMany connects clients ids[k] to host k%3, in parallel; quiet
// clients report no events.
func connectMany(t *testing.T, c *raftCluster, cl *clients, ids []string, quiet bool) {
	t.Helper()
	replies := make([]<-chan reply, len(ids))
	for k, id := range ids {
		host, port := wsAddr(c.nodes[k%3])
		replies[k] = cl.send(map[string]any{"op": "connect", "id": id, "host": host, "port": port, "quiet": quiet})
	}
	for k, r := range replies {
		if rep := <-r; !rep.OK {
			t.Fatalf("connect %s: %s", ids[k], rep.Error)
		}
	}
}

// latencies summarises join latencies in ms.
func latencies(ms []float64) string {
	if len(ms) == 0 {
		return "n=0"
	}
	s := slices.Sorted(slices.Values(ms))
	return fmt.Sprintf("n=%d p50=%.1fms p99=%.1fms max=%.1fms", len(s), percentile(s, 0.5), percentile(s, 0.99), s[len(s)-1])
}

func TestClusterPusher_LargePresence(t *testing.T) {
	c := newRaftCluster(t, "SOKETI_PRESENCE_MAX_MEMBERS=1000")
	cl := startClients(t)
	leader := c.waitFormed(formTimeout, c.all()...)

	// 100 members, about 33 per node, each with 2 KB of user_info, joined
	// one after the other: the latency of a join with nothing else going on.
	// A join on a follower is forwarded to the leader and answered once the
	// follower's replica has applied it.
	const ch, size = "presence-large", 100
	var ids, want []string
	for k := range size {
		ids = append(ids, fmt.Sprintf("m%03d", k))
		want = append(want, fmt.Sprintf("user-%03d", k))
	}
	connectMany(t, c, cl, ids, false)
	var onLeader, forwarded []float64
	for k, id := range ids {
		r := cl.join(id, ch, want[k], largeInfo(want[k]))
		if r.Count != k+1 {
			t.Fatalf("%s joined with count %d, want %d", id, r.Count, k+1)
		}
		if k%3 == leader {
			onLeader = append(onLeader, r.MS)
		} else {
			forwarded = append(forwarded, r.MS)
		}
	}
	t.Logf("MEASURE presence_join_latency pusher-js all: %s; on the leader: %s; on followers: %s (pusher-js subscribe to subscription_succeeded, one at a time, 2 KB user_info, channel growing to %d)",
		latencies(append(slices.Clone(onLeader), forwarded...)), latencies(onLeader), latencies(forwarded), size)
	c.waitUsers(deliveryTimeout, ch, want, c.all()...)

	// The same through bare WebSockets from Go: the server's own latency,
	// without the Node.js process that runs every pusher-js client on the
	// two cores the nodes use.
	rawSeq := dialRaw(t, c, size)
	var rawLeader, rawForwarded []float64
	for k := range size {
		one := &rawSockets{conns: rawSeq.conns[k : k+1], sockets: rawSeq.sockets[k : k+1]}
		_, lat := one.joinAll(t, "presence-large-raw", []string{fmt.Sprintf("raw-user-%03d", k)}, func(u string) any { return largeInfo(u) })
		if k%3 == leader {
			rawLeader = append(rawLeader, lat[0])
		} else {
			rawForwarded = append(rawForwarded, lat[0])
		}
	}
	t.Logf("MEASURE presence_join_latency websocket all: %s; on the leader: %s; on followers: %s (bare WebSocket subscribe to subscription_succeeded, one at a time, 2 KB user_info, channel growing to %d)",
		latencies(append(slices.Clone(rawLeader), rawForwarded...)), latencies(rawLeader), latencies(rawForwarded), size)

	// A newcomer on each node sees every member with its user_info.
	for _, i := range c.all() {
		id, user := fmt.Sprintf("late%d", i), fmt.Sprintf("user-late%d", i)
		cl.connect(id, c.nodes[i])
		want = append(want, user)
		if r := cl.join(id, ch, user, largeInfo(user)); r.Count != len(want) {
			t.Fatalf("newcomer on node %d: count %d, want %d", i, r.Count, len(want))
		}
		m := cl.members(id, ch)
		if m.Count != len(want) || len(m.Members["user-042"]) < 1900 {
			t.Fatalf("newcomer on node %d: pusher-js lists %d members (want %d), user-042's info %d bytes",
				i, m.Count, len(want), len(m.Members["user-042"]))
		}
	}
	c.waitUsers(deliveryTimeout, ch, want, c.all()...)
	for _, id := range []string{"m000", "m001", "m002"} {
		if m := cl.members(id, ch); m.Count != len(want) {
			t.Fatalf("%s's pusher-js member list has %d members, want %d", id, m.Count, len(want))
		}
	}

	// Bursts: 300 sockets, 100 per node, join one channel at once, through
	// pusher-js (all in one Node.js process, sharing the two cores with the
	// nodes) and through bare WebSockets from Go. Every subscription_succeeded
	// lists every member so far, so with 2 KB of user_info a 300-join burst
	// moves O(n²) bytes (about 90 MB) and its tail reaches the 3 s apply
	// timeout on this machine: the bursts use a small user_info.
	const burst = 300
	small := func(user string) any { return map[string]string{"name": user} }
	var bids, bwant []string
	for k := range burst {
		bids = append(bids, fmt.Sprintf("b%03d", k))
		bwant = append(bwant, fmt.Sprintf("burst-%03d", k))
	}
	connectMany(t, c, cl, bids, true)
	replies := make([]<-chan reply, burst)
	start := time.Now()
	for k, id := range bids {
		replies[k] = cl.send(joinCmd(id, "presence-burst", bwant[k], small(bwant[k])))
	}
	var lat []float64
	for k, r := range replies {
		rep := <-r
		if !rep.OK {
			t.Fatalf("burst join %s: %s", bids[k], rep.Error)
		}
		lat = append(lat, rep.MS)
	}
	elapsed := time.Since(start)
	t.Logf("MEASURE presence_join_burst pusher-js: %d joins in %s = %.0f joins/s, %s (small user_info)",
		burst, elapsed.Round(time.Millisecond), burst/elapsed.Seconds(), latencies(lat))
	c.waitUsers(deliveryTimeout, "presence-burst", bwant, c.all()...)

	raw := dialRaw(t, c, burst)
	var rwant []string
	for k := range burst {
		rwant = append(rwant, fmt.Sprintf("raw-%03d", k))
	}
	elapsed, lat = raw.joinAll(t, "presence-raw", rwant, small)
	t.Logf("MEASURE presence_join_burst websocket: %d joins in %s = %.0f joins/s, %s (small user_info)",
		burst, elapsed.Round(time.Millisecond), burst/elapsed.Seconds(), latencies(lat))
	c.waitUsers(deliveryTimeout, "presence-raw", rwant, c.all()...)
}
