package cluster_test

import (
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testcluster"
	"github.com/soketi-go/soketi/internal/testutil"
	"github.com/soketi-go/soketi/pkg/pusher"
)

func TestCluster_PublishReachesEveryNodeOnce(t *testing.T) {
	c := testcluster.New(t, 3)
	c.WaitReady(20 * time.Second)
	subs := make([]*testcluster.Client, 3)
	for i, n := range c.Nodes {
		subs[i] = n.Connect(t)
		subs[i].Subscribe("news")
	}
	for i, n := range c.Nodes {
		n.Trigger(t, "news", "update", fmt.Sprintf("from-%d", i))
	}
	for _, s := range subs {
		got := map[string]int{}
		for i := 0; i < 3; i++ {
			got[s.Expect("update")["data"].(string)]++
		}
		s.ExpectNone("update", 200*time.Millisecond)
		for i := 0; i < 3; i++ {
			if got[fmt.Sprintf("from-%d", i)] != 1 {
				t.Fatalf("deliveries = %v", got)
			}
		}
	}
}

func TestCluster_ClientEventsAcrossNodes(t *testing.T) {
	c := testcluster.New(t, 3)
	c.WaitReady(20 * time.Second)
	a := c.Nodes[0].Connect(t)
	b := c.Nodes[1].Connect(t)
	a.SubscribePrivate("private-chat")
	b.SubscribePrivate("private-chat")
	a.Send(map[string]any{"event": "client-typing", "channel": "private-chat", "data": map[string]any{"x": 1}})
	if m := b.Expect("client-typing"); m["channel"] != "private-chat" {
		t.Fatalf("client event = %v", m)
	}
	a.ExpectNone("client-typing", 200*time.Millisecond)
}

func TestCluster_PresenceIsOneListAcrossNodes(t *testing.T) {
	c := testcluster.New(t, 3)
	c.WaitReady(20 * time.Second)
	const ch = "presence-room"
	a := c.Nodes[0].Connect(t)
	if p := a.JoinPresence(ch, "1"); p.Count != 1 {
		t.Fatalf("first join: %+v", p)
	}
	b := c.Nodes[1].Connect(t)
	if p := b.JoinPresence(ch, "2"); p.Count != 2 {
		t.Fatalf("second join on another node: %+v", p)
	}
	if got := testcluster.MemberEvent(a.Expect("pusher_internal:member_added")); got != "2" {
		t.Fatalf("member_added on node 0 = %s", got)
	}

	// The same user on a third node is counted once.
	b2 := c.Nodes[2].Connect(t)
	if p := b2.JoinPresence(ch, "2"); p.Count != 2 {
		t.Fatalf("same user on a third node: %+v", p)
	}
	a.ExpectNone("pusher_internal:member_added", 300*time.Millisecond)
	for _, n := range c.Nodes {
		code, body := n.API(t, "GET", "/apps/app-id/channels/"+ch, url.Values{"info": {"user_count"}}, nil)
		if code != 200 || body["user_count"] != float64(2) || body["subscription_count"] != float64(3) {
			t.Fatalf("node %d channel info = %d %v", n.Index, code, body)
		}
	}

	// User 2 leaves node 1: still present through node 2, so no member_removed.
	b.Unsubscribe(ch)
	a.ExpectNone("pusher_internal:member_removed", 300*time.Millisecond)
	// Its last socket leaves: removed once, seen on every node.
	b2.Close()
	if got := testcluster.MemberEvent(a.Expect("pusher_internal:member_removed")); got != "2" {
		t.Fatalf("member_removed = %s", got)
	}
	a.ExpectNone("pusher_internal:member_removed", 300*time.Millisecond)
	testutil.WaitFor(t, 5*time.Second, "one member left everywhere", func() bool {
		for _, n := range c.Nodes {
			_, body := n.API(t, "GET", "/apps/app-id/channels/"+ch+"/users", nil, nil)
			if users, _ := body["users"].([]any); len(users) != 1 {
				return false
			}
		}
		return true
	})
	if n := c.Hooks.Count(pusher.WebhookMemberRemoved, ch); n != 1 {
		t.Fatalf("member_removed webhooks = %d, want 1", n)
	}
	if n := c.Hooks.Count(pusher.WebhookMemberAdded, ch); n != 2 {
		t.Fatalf("member_added webhooks = %d, want 2", n)
	}
}

func TestCluster_OccupancyWebhooksOnce(t *testing.T) {
	c := testcluster.New(t, 3)
	c.WaitReady(20 * time.Second)
	var clients []*testcluster.Client
	for _, n := range c.Nodes {
		cl := n.Connect(t)
		cl.Subscribe("busy")
		clients = append(clients, cl)
	}
	code, body := c.Nodes[2].API(t, "GET", "/apps/app-id/channels", nil, nil)
	chans, _ := body["channels"].(map[string]any)
	if code != 200 || chans["busy"].(map[string]any)["subscription_count"] != float64(3) {
		t.Fatalf("channels = %d %v", code, body)
	}
	for _, cl := range clients {
		cl.Unsubscribe("busy")
	}
	testutil.WaitFor(t, 5*time.Second, "channel_vacated", func() bool {
		return c.Hooks.Count(pusher.WebhookChannelVacated, "busy") >= 1
	})
	time.Sleep(300 * time.Millisecond)
	if o, v := c.Hooks.Count(pusher.WebhookChannelOccupied, "busy"), c.Hooks.Count(pusher.WebhookChannelVacated, "busy"); o != 1 || v != 1 {
		t.Fatalf("occupied %d, vacated %d webhooks; want 1 and 1", o, v)
	}
}

// The last event of a cache channel published through one node reaches a
// new subscriber on another.
func TestCluster_CacheChannelSharedAcrossNodes(t *testing.T) {
	c := testcluster.New(t, 2)
	c.WaitReady(20 * time.Second)
	c.Nodes[0].Trigger(t, "cache-news", "headline", "hello")
	var m map[string]any
	testutil.WaitFor(t, 5*time.Second, "cached event on the other node", func() bool {
		s := c.Nodes[1].Connect(t)
		s.Subscribe("cache-news")
		m = s.ExpectEither("headline", "pusher:cache_miss")
		return m["event"] == "headline"
	})
	if m["data"] != "hello" {
		t.Fatalf("cached event = %v", m)
	}
}
