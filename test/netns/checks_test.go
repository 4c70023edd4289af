//go:build netns && linux

package netnstest

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// deliveryTimeout bounds how long a message or presence event may take to
// reach a client on another node.
const deliveryTimeout = 5 * time.Second

// The presence events as the server sends them.
const (
	memberAdded   = "pusher_internal:member_added"
	memberRemoved = "pusher_internal:member_removed"
)

// fence publishes a marker through each of the nodes and waits until every
// client in ids has it. Streams are ordered per origin, so once a node's
// fence has arrived, anything that node sent earlier (duplicates included)
// has arrived too: counts taken after a fence are final.
func fence(t *testing.T, cl *clients, c *raftCluster, channel string, ids []string, via ...int) {
	t.Helper()
	from := cl.mark()
	tag := fmt.Sprintf("fence-%d", time.Now().UnixNano())
	for _, i := range via {
		cl.trigger(c.nodes[i], channel, "fence", fmt.Sprintf("%s-%d", tag, i))
	}
	for _, id := range ids {
		for _, i := range via {
			cl.waitEvent(from, deliveryTimeout, "fence on "+id, appEvent(id, channel, "fence", fmt.Sprintf("%s-%d", tag, i)))
		}
	}
}

// publishOnce publishes msgs as event "update" on channel, each through the
// node msgs maps it to, and checks that every subscriber in subs receives
// each exactly once, and no earlier message a second time.
func publishOnce(t *testing.T, cl *clients, c *raftCluster, channel string, subs []string, msgs map[string]int) {
	t.Helper()
	from := cl.mark()
	via := map[int]bool{}
	for data, i := range msgs {
		cl.trigger(c.nodes[i], channel, "update", data)
		via[i] = true
	}
	for _, id := range subs {
		for data := range msgs {
			cl.waitEvent(from, deliveryTimeout, fmt.Sprintf("%s on %s", data, id), appEvent(id, channel, "update", data))
		}
	}
	var nodes []int
	for i := range via {
		nodes = append(nodes, i)
	}
	fence(t, cl, c, channel, subs, nodes...)
	for _, id := range subs {
		got := updates(cl, from, id, channel)
		for data := range msgs {
			if got[data] != 1 {
				t.Fatalf("%s received %q %d times, want once (all: %v)", id, data, got[data], got)
			}
		}
		// A message from earlier may still arrive here for the first time:
		// one a node accepted while cut off reaches the other nodes'
		// subscribers once its streams resume (at-least-once, late). A
		// second copy of anything is a duplicate.
		all := updates(cl, 0, id, channel)
		for data, n := range got {
			if _, ours := msgs[data]; ours {
				continue
			}
			if earlier := all[data] - n; n > 1 || earlier > 0 {
				t.Fatalf("%s received %q again (%d before, %d now): all %v", id, data, earlier, n, got)
			}
			t.Logf("%s received %q, published earlier, for the first time", id, data)
		}
	}
}

// updates counts the update messages id received from position from on.
func updates(cl *clients, from int, id, channel string) map[string]int {
	got := map[string]int{}
	for _, ev := range cl.matching(from, frame(id, channel, "update")) {
		var s string
		json.Unmarshal(ev.Data, &s)
		got[s]++
	}
	return got
}

// countEvents counts matching events since from for each client.
func countEvents(cl *clients, from int, ids []string, match func(id string) func(event) bool) map[string]int {
	out := map[string]int{}
	for _, id := range ids {
		out[id] = len(cl.matching(from, match(id)))
	}
	return out
}
