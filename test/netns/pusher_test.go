//go:build netns && linux

package netnstest

import (
	"fmt"
	"testing"
)

func TestClusterPusher_CrossNode(t *testing.T) {
	c := newRaftCluster(t)
	cl := startClients(t)
	crossNodePublish(t, c, cl)
	crossNodeClientEvents(t, c, cl)
	crossNodePresence(t, c, cl)
}

// crossNodePublish: publishes through each node reach every subscriber
// exactly once.
func crossNodePublish(t *testing.T, c *raftCluster, cl *clients) {
	subs := []string{"pub0", "pub1", "pub2"}
	for i, id := range subs {
		cl.connect(id, c.nodes[i])
		cl.subscribe(id, "news")
	}
	msgs := map[string]int{}
	for i := range c.all() {
		for k := range 5 {
			msgs[fmt.Sprintf("via%d-msg%d", i, k)] = i
		}
	}
	publishOnce(t, cl, c, "news", subs, msgs)
}

// crossNodeClientEvents: client events cross nodes; senders do not get
// their own.
func crossNodeClientEvents(t *testing.T, c *raftCluster, cl *clients) {
	ids := []string{"chat0", "chat1", "chat2"}
	for i, id := range ids {
		cl.connect(id, c.nodes[i])
		cl.subscribe(id, "private-chat")
	}
	from := cl.mark()
	cl.clientEvent("chat0", "private-chat", "client-typing", "from-chat0")
	cl.clientEvent("chat2", "private-chat", "client-typing", "from-chat2")
	for _, id := range ids {
		for _, sender := range []string{"chat0", "chat2"} {
			if id != sender {
				cl.waitEvent(from, deliveryTimeout, "client event on "+id, appEvent(id, "private-chat", "client-typing", "from-"+sender))
			}
		}
	}
	fence(t, cl, c, "private-chat", ids, 0, 2)
	got := countEvents(cl, from, ids, func(id string) func(event) bool { return frame(id, "private-chat", "client-typing") })
	if got["chat0"] != 1 || got["chat1"] != 2 || got["chat2"] != 1 {
		t.Fatalf("client events received = %v, want chat0 1, chat1 2, chat2 1", got)
	}
}

// crossNodePresence: members join on different nodes; a user with sockets
// on two nodes is one member, removed when its last socket leaves.
func crossNodePresence(t *testing.T, c *raftCluster, cl *clients) {
	const ch = "presence-room"
	watchers := []string{"w0", "w1", "w2"}
	for i, id := range watchers {
		cl.connect(id, c.nodes[i])
		if r := cl.join(id, ch, id, map[string]string{"name": id}); r.Count != i+1 {
			t.Fatalf("%s joined with count %d, want %d", id, r.Count, i+1)
		}
	}
	c.waitUsers(deliveryTimeout, ch, watchers, c.all()...)
	m := cl.members("w0", ch)
	if m.Count != 3 || string(m.Members["w2"]) != `{"name":"w2"}` {
		t.Fatalf("w0's pusher-js members = %+v", m)
	}

	// The same user joins on node 1, then on node 2.
	cl.connect("x1", c.nodes[1])
	cl.connect("x2", c.nodes[2])
	from := cl.mark()
	if r := cl.join("x1", ch, "ux", map[string]string{"name": "ux"}); r.Count != 4 {
		t.Fatalf("x1 joined with count %d, want 4", r.Count)
	}
	for _, id := range watchers {
		cl.waitEvent(from, deliveryTimeout, "member_added ux on "+id, memberEvent(id, ch, memberAdded, "ux"))
	}
	if r := cl.join("x2", ch, "ux", map[string]string{"name": "ux"}); r.Count != 4 {
		t.Fatalf("ux's second socket (node 2) joined with count %d, want 4", r.Count)
	}
	if m := cl.members("x2", ch); m.Count != 4 || m.Me != "ux" {
		t.Fatalf("x2's pusher-js members = count %d me %q, want 4 ux", m.Count, m.Me)
	}
	fence(t, cl, c, ch, watchers, 1, 2)
	added := countEvents(cl, from, watchers, func(id string) func(event) bool {
		return memberEvent(id, ch, memberAdded, "ux")
	})
	for _, n := range added {
		if n != 1 {
			t.Fatalf("member_added ux counts = %v, want 1 each", added)
		}
	}
	users := append([]string{"ux"}, watchers...)
	c.waitUsers(deliveryTimeout, ch, users, c.all()...)

	// The first socket leaves: ux is still there through node 2.
	from = cl.mark()
	cl.unsubscribe("x1", ch)
	c.waitSubscriptions(deliveryTimeout, c.nodes[1], ch, 4)
	fence(t, cl, c, ch, watchers, 1)
	c.waitUsers(deliveryTimeout, ch, users, c.all()...)
	if got := cl.matching(from, memberEvent("", ch, memberRemoved, "ux")); len(got) != 0 {
		t.Fatalf("member_removed while ux still has a socket:%s", describe(got))
	}

	// The last socket leaves: removed once, everywhere.
	cl.disconnect("x2")
	for _, id := range watchers {
		cl.waitEvent(from, deliveryTimeout, "member_removed ux on "+id, memberEvent(id, ch, memberRemoved, "ux"))
	}
	fence(t, cl, c, ch, watchers, 2)
	removed := countEvents(cl, from, watchers, func(id string) func(event) bool {
		return memberEvent(id, ch, memberRemoved, "ux")
	})
	for _, n := range removed {
		if n != 1 {
			t.Fatalf("member_removed ux counts = %v, want 1 each", removed)
		}
	}
	c.waitUsers(deliveryTimeout, ch, watchers, c.all()...)
	for _, id := range watchers {
		if m := cl.members(id, ch); m.Count != 3 {
			t.Fatalf("%s's pusher-js members count = %d, want 3", id, m.Count)
		}
	}
}
