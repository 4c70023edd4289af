package rediscache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/config"
	"github.com/soketi-go/soketi/internal/testredis"
	"github.com/soketi-go/soketi/internal/testutil"
	"github.com/soketi-go/soketi/pkg/pusher"
	"github.com/soketi-go/soketi/pkg/redisconn"
	"github.com/soketi-go/soketi/pkg/wstransport"
)

// node is one pusher.Server behind HTTP, with its own Redis client.
type node struct {
	*pusher.Server
	url   string
	cache *Cache
}

func newNode(t *testing.T, addr, prefix string, app *pusher.App, ttl time.Duration) *node {
	t.Helper()
	rc, err := redisconn.Open(redisconn.Options{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Close() })
	apps, err := pusher.NewStaticApps([]*pusher.App{app})
	if err != nil {
		t.Fatal(err)
	}
	cache := New(Options{KeyPrefix: prefix}, rc)
	s := pusher.New(pusher.Options{Apps: apps, ChannelCache: cache, ChannelCacheTTL: ttl, WebSocket: wstransport.New()})
	h := httptest.NewServer(s.Router())
	t.Cleanup(func() {
		h.CloseClientConnections()
		h.Close()
		s.Close()
	})
	return &node{Server: s, url: h.URL, cache: cache}
}

func testApp(t *testing.T) *pusher.App {
	t.Helper()
	a, err := pusher.ParseApp(map[string]any{}, pusher.DefaultAppLimits)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// publish triggers an event through n's HTTP API, signed as the SDKs do.
func (n *node) publish(t *testing.T, app *pusher.App, channel, event, data string) int {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"name": event, "channel": channel, "data": data})
	path := "/apps/" + app.ID + "/events"
	q := pusher.SignedQuery(app.Key, app.Secret, "POST", path, nil, body, time.Now())
	resp, err := http.Post(n.url+path+"?"+q.Encode(), "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// subscribe connects to n, subscribes to channel and returns the client
// after subscription_succeeded.
func (n *node) subscribe(t *testing.T, app *pusher.App, channel string) *testutil.Client {
	t.Helper()
	c := testutil.Dial(t, "ws"+strings.TrimPrefix(n.url, "http")+"/app/"+app.Key+"?protocol=7")
	c.Established()
	c.Send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": channel}})
	c.Expect("pusher_internal:subscription_succeeded")
	return c
}

// first is the frame a new subscriber gets right after subscription_succeeded.
func first(t *testing.T, c *testutil.Client) map[string]any {
	t.Helper()
	m, ok := c.Next(5 * time.Second)
	if !ok {
		t.Fatal("no frame after subscription_succeeded")
	}
	return m
}

func TestCache_TwoNodesShareTheLastEvent(t *testing.T) {
	srv := testredis.Start(t)
	prefix := testredis.Prefix(t)
	app := testApp(t)
	a := newNode(t, srv.Addr, prefix, app, time.Hour)
	b := newNode(t, srv.Addr, prefix, app, time.Hour)

	if m := first(t, b.subscribe(t, app, "cache-news")); m["event"] != "pusher:cache_miss" {
		t.Fatalf("nothing published yet: %v", m)
	}
	for _, data := range []string{"first", "second"} {
		if st := a.publish(t, app, "cache-news", "headline", data); st != 200 {
			t.Fatalf("publish: %d", st)
		}
		m := first(t, b.subscribe(t, app, "cache-news"))
		if m["event"] != "headline" || m["channel"] != "cache-news" || m["data"] != data {
			t.Fatalf("new subscriber on the other node got %v, want headline %q", m, data)
		}
	}

	// Redis holds the event's JSON under the app's hash tag, for the TTL.
	rc := srv.Client()
	key := prefix + "cache:{" + app.ID + "}:cache-news"
	v, err := rc.Get(context.Background(), key).Result()
	if err != nil || v != `{"event":"headline","channel":"cache-news","data":"second"}` {
		t.Fatalf("%s = %q, %v", key, v, err)
	}
	if ttl := rc.PTTL(context.Background(), key).Val(); ttl <= 59*time.Minute || ttl > time.Hour {
		t.Fatalf("PTTL %s, want about 1h", ttl)
	}
}

func TestCache_TTL(t *testing.T) {
	srv := testredis.Start(t)
	prefix := testredis.Prefix(t)
	app := testApp(t)
	n := newNode(t, srv.Addr, prefix, app, 300*time.Millisecond)
	n.publish(t, app, "cache-news", "headline", "soon gone")
	if m := first(t, n.subscribe(t, app, "cache-news")); m["event"] != "headline" {
		t.Fatalf("within the TTL: %v", m)
	}
	testutil.WaitFor(t, 3*time.Second, "the cached event to expire", func() bool {
		f, err := n.cache.Get(context.Background(), app.ID, "cache-news")
		return err == nil && f == nil
	})
	if m := first(t, n.subscribe(t, app, "cache-news")); m["event"] != "pusher:cache_miss" {
		t.Fatalf("after the TTL: %v", m)
	}

	// soketi's -1 and 0 keep the event until the next one: no expiry.
	ctx := context.Background()
	rc := srv.Client()
	f := pusher.TextFrame([]byte(`{"event":"e","channel":"cache-x"}`))
	for _, ttl := range []time.Duration{0, -1, config.NeverExpires} {
		if err := n.cache.Put(ctx, app.ID, "cache-x", f, ttl); err != nil {
			t.Fatal(err)
		}
		if got := rc.PTTL(ctx, n.cache.key(app.ID, "cache-x")).Val(); got != -1 {
			t.Fatalf("ttl %s stored with PTTL %s, want none", ttl, got)
		}
	}
	if got, err := n.cache.Get(ctx, app.ID, "cache-x"); err != nil || !bytes.Equal(got, f) {
		t.Fatalf("Get = %q, %v; want the frame put", got, err)
	}
}

func TestCache_SizeBound(t *testing.T) {
	srv := testredis.Start(t)
	ctx := context.Background()
	rc, _ := redisconn.Open(redisconn.Options{Addr: srv.Addr})
	t.Cleanup(func() { rc.Close() })
	c := New(Options{KeyPrefix: testredis.Prefix(t)}, rc)

	big := bytes.Repeat([]byte("x"), MaxEventBytes)
	if err := c.Put(ctx, "app", "cache-big", pusher.TextFrame(big), time.Minute); err != nil {
		t.Fatalf("an event of exactly 1 MiB: %v", err)
	}
	if f, err := c.Get(ctx, "app", "cache-big"); err != nil || len(f.Payload()) != MaxEventBytes {
		t.Fatalf("Get of 1 MiB: %d bytes, %v", len(f), err)
	}
	over := append(big, 'x')
	if err := c.Put(ctx, "app", "cache-over", pusher.TextFrame(over), time.Minute); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Put over 1 MiB: %v", err)
	}
	// A value written by something else is read no further than the bound.
	srv.Client().Set(ctx, c.key("app", "cache-planted"), over, time.Minute)
	if _, err := c.Get(ctx, "app", "cache-planted"); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Get of a planted value over 1 MiB: %v", err)
	}
}

func TestCache_RedisDownIsACacheMissThenRecovers(t *testing.T) {
	srv := testredis.Start(t)
	app := testApp(t)
	n := newNode(t, srv.Addr, testredis.Prefix(t), app, time.Hour)
	n.publish(t, app, "cache-news", "headline", "before")

	srv.Kill()
	start := time.Now()
	if m := first(t, n.subscribe(t, app, "cache-news")); m["event"] != "pusher:cache_miss" {
		t.Fatalf("redis down: %v", m)
	}
	if d := time.Since(start); d > DefaultTimeout+time.Second {
		t.Fatalf("subscription with redis down took %s", d)
	}
	if st := n.publish(t, app, "cache-news", "headline", "while down"); st != 200 {
		t.Fatalf("publish with redis down: %d, want 200 (the event still goes out)", st)
	}

	srv.Restart() // empty: the events before are gone
	if m := first(t, n.subscribe(t, app, "cache-news")); m["event"] != "pusher:cache_miss" {
		t.Fatalf("empty redis: %v", m)
	}
	testutil.WaitFor(t, 5*time.Second, "a publish to reach redis again", func() bool {
		n.publish(t, app, "cache-news", "headline", "after")
		f, err := n.cache.Get(context.Background(), app.ID, "cache-news")
		return err == nil && f != nil
	})
	if m := first(t, n.subscribe(t, app, "cache-news")); m["event"] != "headline" || m["data"] != "after" {
		t.Fatalf("after recovery: %v", m)
	}
}

// TestCache_StalledServerBoundedByTimeout: a server that accepts and never
// answers holds a call for the timeout only, though the client's own
// timeout is 5 s.
func TestCache_StalledServerBoundedByTimeout(t *testing.T) {
	addr := testredis.Stalled(t)

	rc, err := redisconn.Open(redisconn.Options{Addr: addr, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Close() })
	const timeout = 100 * time.Millisecond
	c := New(Options{Timeout: timeout}, rc)
	ctx := context.Background()
	for name, call := range map[string]func() error{
		"Get": func() error { _, err := c.Get(ctx, "app", "cache-x"); return err },
		"Put": func() error { return c.Put(ctx, "app", "cache-x", pusher.TextFrame([]byte(`{}`)), time.Minute) },
	} {
		start := time.Now()
		if err := call(); err == nil {
			t.Fatalf("%s on a stalled server succeeded", name)
		}
		if d := time.Since(start); d < timeout || d > timeout+150*time.Millisecond {
			t.Fatalf("%s took %s, timeout %s", name, d, timeout)
		}
	}
}
