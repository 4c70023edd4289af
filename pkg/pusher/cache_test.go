package pusher

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testutil"
)

func TestMemoryCache_TTLAndBound(t *testing.T) {
	ctx := context.Background()
	c := newMemoryCache(2)
	f := TextFrame([]byte(`{"event":"e","channel":"cache-a"}`))
	if err := c.Put(ctx, "app", "cache-a", f, 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := c.Put(ctx, "app", "cache-b", f, 0); err != nil { // until the next one
		t.Fatal(err)
	}
	if err := c.Put(ctx, "app", "cache-c", f, time.Hour); !errors.Is(err, errCacheFull) {
		t.Fatalf("a third channel at a bound of 2: %v", err)
	}
	if err := c.Put(ctx, "app", "cache-b", f, 0); err != nil {
		t.Fatalf("replacing a cached channel at the bound: %v", err)
	}
	if got, _ := c.Get(ctx, "app", "cache-a"); string(got) != string(f) {
		t.Fatalf("cache-a = %q", got)
	}
	testutil.WaitFor(t, 2*time.Second, "cache-a to expire", func() bool {
		got, _ := c.Get(ctx, "app", "cache-a")
		return got == nil
	})
	c.expire(time.Now().Add(100 * 365 * 24 * time.Hour))
	if got, _ := c.Get(ctx, "app", "cache-b"); got == nil {
		t.Fatal("an event kept until the next one expired")
	}
	if len(c.entries) != 1 {
		t.Fatalf("%d entries after the sweep, want 1", len(c.entries))
	}
}

// fakeCache is a ChannelCache that a test can break, and shared or not.
type fakeCache struct {
	mu     sync.Mutex
	shared bool
	err    error
	puts   int
	frames map[string]Frame
}

func (c *fakeCache) Get(_ context.Context, _, channel string) (Frame, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return nil, c.err
	}
	return c.frames[channel], nil
}

func (c *fakeCache) Put(_ context.Context, _, channel string, f Frame, _ time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.puts++
	if c.err != nil {
		return c.err
	}
	if c.frames == nil {
		c.frames = map[string]Frame{}
	}
	c.frames[channel] = f
	return nil
}

func (c *fakeCache) Shared() bool { return c.shared }

func (c *fakeCache) set(err error) {
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
}

func TestChannelCache_FailureIsACacheMiss(t *testing.T) {
	app := testApp(func(a *App) {
		a.Webhooks = []Webhook{{URL: "http://127.0.0.1:1", EventTypes: []string{WebhookCacheMiss}}}
	})
	cache := &fakeCache{}
	hooks := &recordingHooks{}
	ts := newTestServer(t, Options{ChannelCache: cache, Webhooks: hooks}, app)
	cache.set(errors.New("cache down"))
	if r := ts.trigger(t, app, "cache-news", "headline", "hi"); r.status != 200 {
		t.Fatalf("publish with the cache down: %d", r.status)
	}
	a := ts.connect(t, app.Key)
	a.subscribe("cache-news")
	a.Expect("pusher_internal:subscription_succeeded")
	a.Expect("pusher:cache_miss")
	testutil.WaitFor(t, 2*time.Second, "the cache_miss webhook", func() bool {
		for _, ev := range hooks.snapshot() {
			if ev.Name == WebhookCacheMiss && ev.Channel == "cache-news" {
				return true
			}
		}
		return false
	})

	cache.set(nil)
	ts.trigger(t, app, "cache-news", "headline", "again")
	b := ts.connect(t, app.Key)
	b.subscribe("cache-news")
	b.Expect("pusher_internal:subscription_succeeded")
	if m := b.Expect("headline"); m["data"] != "again" {
		t.Fatalf("cached event after recovery = %v", m)
	}
}

// sharingAdapter counts the events it is asked to hand to other nodes.
type sharingAdapter struct {
	*LocalAdapter
	mu     sync.Mutex
	shared int
}

func (a *sharingAdapter) ShareCache(context.Context, string, string, Frame) {
	a.mu.Lock()
	a.shared++
	a.mu.Unlock()
}

func TestChannelCache_SharedIsNotHandedToOtherNodes(t *testing.T) {
	for _, shared := range []bool{false, true} {
		app := testApp()
		cache := &fakeCache{shared: shared}
		ad := &sharingAdapter{LocalAdapter: NewLocalAdapter()}
		ts := newTestServer(t, Options{ChannelCache: cache, Adapter: ad}, app)
		ts.trigger(t, app, "cache-news", "headline", "hi")
		ts.StoreCache(app.ID, "cache-news", TextFrame([]byte(`{}`))) // as from another node
		ad.mu.Lock()
		handed := ad.shared
		ad.mu.Unlock()
		cache.mu.Lock()
		puts := cache.puts
		cache.mu.Unlock()
		if shared && (handed != 0 || puts != 1) {
			t.Fatalf("shared cache: handed to the adapter %d times, %d puts; want 0 and 1", handed, puts)
		}
		if !shared && (handed != 1 || puts != 2) {
			t.Fatalf("node's cache: handed to the adapter %d times, %d puts; want 1 and 2", handed, puts)
		}
	}
}
