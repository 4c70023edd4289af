package redisadapter_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testutil"
	"github.com/soketi-go/soketi/pkg/pusher"
)

func apiCall(t *testing.T, base string, app *pusher.App, method, path string, body any, params ...string) (int, map[string]any) {
	t.Helper()
	var raw []byte
	if body != nil {
		raw, _ = json.Marshal(body)
	}
	vals := url.Values{}
	for i := 0; i+1 < len(params); i += 2 {
		vals.Set(params[i], params[i+1])
	}
	q := pusher.SignedQuery(app.Key, app.Secret, method, path, vals, raw, time.Now())
	req, _ := http.NewRequest(method, base+path+"?"+q.Encode(), strings.NewReader(string(raw)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func memberEventUser(m map[string]any) string {
	var d struct {
		UserID json.RawMessage `json:"user_id"`
	}
	_ = json.Unmarshal([]byte(m["data"].(string)), &d)
	return string(d.UserID)
}

// A publish through any node reaches every node's subscribers once; the
// publishing node's own sockets do not get a second copy back from Redis.
func TestRedis_PublishReachesEveryNodeOnce(t *testing.T) {
	publishReachesEveryNodeOnce(t, newFleet(t, 3))
}

// The same on Redis Cluster: scripts run on each app's slot, Pub/Sub
// crosses the shards.
func TestRedisCluster_PublishAndPresence(t *testing.T) {
	f := newClusterFleet(t, 3)
	publishReachesEveryNodeOnce(t, f)
	presenceCountedOnce(t, f)
}

func publishReachesEveryNodeOnce(t *testing.T, f *fleet) {
	var subs []*testutil.Client
	for i := range f.nodes {
		s := f.connect(i)
		subscribe(s, "news")
		subs = append(subs, s)
	}
	for i := range f.nodes {
		if code, body := f.trigger(i, "news", "update", fmt.Sprintf("via-%d", i)); code != 200 {
			t.Fatalf("trigger via %d: %d %v", i, code, body)
		}
	}
	for _, s := range subs {
		got := map[string]int{}
		for i := 0; i < 3; i++ {
			got[s.Expect("update")["data"].(string)]++
		}
		s.ExpectNone("update", 300*time.Millisecond)
		for i := 0; i < 3; i++ {
			if got[fmt.Sprintf("via-%d", i)] != 1 {
				t.Fatalf("deliveries = %v", got)
			}
		}
	}
	// The API sees every node's subscriptions.
	if code, body := apiCall(t, f.nodes[0].http.URL, f.app, "GET", "/apps/"+f.app.ID+"/channels/news", nil,
		"info", "subscription_count"); code != 200 || body["subscription_count"] != float64(3) || body["occupied"] != true {
		t.Fatalf("channel info: %d %v", code, body)
	}
}

// A user on two nodes is one member: member_added and member_removed go
// out once, cluster-wide, and their webhooks once; the API counts it once.
func TestRedis_PresenceCountedOnce(t *testing.T) {
	presenceCountedOnce(t, newFleet(t, 3))
}

func presenceCountedOnce(t *testing.T, f *fleet) {
	const ch = "presence-room"
	watcher := f.connect(2)
	f.joinPresence(watcher, ch, `"w"`)
	a := f.connect(0)
	b := f.connect(1)
	if m := f.joinPresence(a, ch, `"u"`); m["event"] != "pusher_internal:subscription_succeeded" {
		t.Fatalf("a: %v", m)
	}
	if got := memberEventUser(watcher.Expect("pusher_internal:member_added")); got != `"u"` {
		t.Fatalf("member_added %s", got)
	}
	if m := f.joinPresence(b, ch, `"u"`); m["event"] != "pusher_internal:subscription_succeeded" {
		t.Fatalf("b: %v", m)
	}
	watcher.ExpectNone("pusher_internal:member_added", 400*time.Millisecond)
	code, body := apiCall(t, f.nodes[0].http.URL, f.app, "GET", "/apps/"+f.app.ID+"/channels/"+ch+"/users", nil)
	if code != 200 || len(body["users"].([]any)) != 2 {
		t.Fatalf("users: %d %v", code, body)
	}
	a.Close()
	watcher.ExpectNone("pusher_internal:member_removed", 400*time.Millisecond)
	b.Close()
	if got := memberEventUser(watcher.Expect("pusher_internal:member_removed")); got != `"u"` {
		t.Fatalf("member_removed %s", got)
	}
	watcher.ExpectNone("pusher_internal:member_removed", 300*time.Millisecond)
	testutil.WaitFor(t, 2*time.Second, "webhooks", func() bool {
		return f.hooks.Count(pusher.WebhookMemberAdded, ch) == 2 && f.hooks.Count(pusher.WebhookMemberRemoved, ch) == 1
	})
	time.Sleep(200 * time.Millisecond)
	if n := f.hooks.Count(pusher.WebhookMemberAdded, ch); n != 2 { // w and u
		t.Fatalf("member_added webhooks = %d, want 2", n)
	}
	if n := f.hooks.Count(pusher.WebhookChannelOccupied, ch); n != 1 {
		t.Fatalf("channel_occupied webhooks = %d, want 1", n)
	}
}

// A node that dies without a word has its members removed once its
// heartbeat deadline passes, by the nodes that remain.
func TestRedis_DeadNodesMembersAreReaped(t *testing.T) {
	f := newFleet(t, 3)
	const ch = "presence-room"
	watcher := f.connect(0)
	f.joinPresence(watcher, ch, `"w"`)
	victim := f.connect(2)
	f.joinPresence(victim, ch, `"v"`)
	memberEventUser(watcher.Expect("pusher_internal:member_added"))
	subscribe(victim, "news")

	killed := time.Now()
	f.stop(f.nodes[2], false)
	m := watcher.Expect("pusher_internal:member_removed")
	if got := memberEventUser(m); got != `"v"` {
		t.Fatalf("member_removed %s", got)
	}
	took := time.Since(killed)
	t.Logf("a dead node's member removed %v after it stopped beating (TTL %v, beat %v)", took.Round(time.Millisecond), nodeTTL, beat)
	if took < nodeTTL-2*beat {
		t.Fatalf("reaped after %v, before the TTL", took)
	}
	watcher.ExpectNone("pusher_internal:member_removed", 300*time.Millisecond)
	testutil.WaitFor(t, 2*time.Second, "news vacated", func() bool { return f.hooks.Count(pusher.WebhookChannelVacated, "news") == 1 })
}

// Redis restarts empty in the middle of traffic: nodes keep serving their
// own sockets, report not ready, refuse presence joins with 4302, write
// their state again when Redis is back, and deliver across nodes again.
func TestRedis_RestartInTheMiddleOfTraffic(t *testing.T) {
	f := newFleet(t, 2)
	s0, s1 := f.connect(0), f.connect(1)
	subscribe(s0, "news")
	subscribe(s1, "news")
	p0 := f.connect(0)
	f.joinPresence(p0, "presence-room", `"p0"`)

	f.redis.Kill()
	testutil.WaitFor(t, 3*time.Second, "not ready without redis", func() bool { return !f.nodes[0].adapter.Ready() })
	// Local delivery still works; the API says 503 for the other nodes.
	if code, _ := f.trigger(0, "news", "update", "during"); code != http.StatusServiceUnavailable {
		t.Fatalf("publish without redis: %d, want 503", code)
	}
	if s0.Expect("update")["data"] != "during" {
		t.Fatal("local subscriber missed a publish while redis was down")
	}
	late := f.connect(0)
	if m := f.joinPresence(late, "presence-room", `"late"`); m["event"] != "pusher:subscription_error" {
		t.Fatalf("presence join without redis: %v", m)
	}

	f.redis.Restart()
	testutil.WaitFor(t, 5*time.Second, "ready again", func() bool { return f.nodes[0].adapter.Ready() && f.nodes[1].adapter.Ready() })
	testutil.WaitFor(t, 5*time.Second, "state written again", func() bool {
		code, body := apiCall(t, f.nodes[1].http.URL, f.app, "GET", "/apps/"+f.app.ID+"/channels/presence-room/users", nil)
		return code == 200 && len(body["users"].([]any)) == 1
	})
	// Pub/Sub resubscribed: messages cross nodes again.
	testutil.WaitFor(t, 5*time.Second, "cross-node delivery after the restart", func() bool {
		code, _ := f.trigger(1, "news", "update", "after")
		if code != 200 {
			return false
		}
		m, ok := s0.Next(300 * time.Millisecond)
		return ok && m["event"] == "update" && m["data"] == "after"
	})
}

// The connection quota holds over every node.
func TestRedis_ConnectionQuotaAcrossNodes(t *testing.T) {
	f := newFleet(t, 2, func(a *pusher.App) { a.MaxConnections = 2 })
	f.connect(0)
	f.connect(1)
	// The counts reach Redis with the next beat.
	testutil.WaitFor(t, 2*time.Second, "both connections counted", func() bool {
		n, _ := f.nodes[0].adapter.SocketCount(context.Background(), f.app.ID)
		return n == 2
	})
	c := testutil.Dial(t, "ws"+strings.TrimPrefix(f.nodes[0].http.URL, "http")+"/app/"+f.app.Key+"?protocol=7")
	if m := c.Expect("pusher:error"); m["data"] == nil {
		t.Fatalf("third connection: %v", m)
	}
	c.ExpectClose(4100)
}
