package limiter

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/soketi-go/soketi/pkg/pusher"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestLocal_Consume(t *testing.T) {
	type step struct {
		advance   time.Duration
		key       string
		points    int
		limit     int
		allowed   bool
		remaining int
		resetIn   time.Duration
	}
	ev := pusher.LimitBackendEvents
	tests := []struct {
		name  string
		steps []step
	}{
		{"allowed until the limit, then refused", []step{
			{0, ev, 1, 2, true, 1, time.Second},
			{100 * time.Millisecond, ev, 1, 2, true, 0, 900 * time.Millisecond},
			{100 * time.Millisecond, ev, 1, 2, false, 0, 800 * time.Millisecond},
		}},
		{"window resets one second after the first consume", []step{
			{0, ev, 2, 2, true, 0, time.Second},
			{999 * time.Millisecond, ev, 1, 2, false, 0, time.Millisecond},
			{time.Millisecond, ev, 1, 2, true, 1, time.Second},
		}},
		{"points above one", []step{
			{0, ev, 3, 5, true, 2, time.Second},
			{0, ev, 3, 5, false, 0, time.Second},
		}},
		{"a rejected consume still counts", []step{
			{0, ev, 10, 5, false, 0, time.Second},
			{0, ev, 1, 20, true, 9, time.Second}, // 10 + 1 used; the limit is read per call
		}},
		{"limit zero refuses everything", []step{
			{0, ev, 1, 0, false, 0, time.Second},
			{2 * time.Second, ev, 1, 0, false, 0, time.Second},
		}},
		{"negative limit allows", []step{
			{0, ev, 100, -1, true, -1, 0},
		}},
		{"keys are independent", []step{
			{0, ev, 1, 1, true, 0, time.Second},
			{0, pusher.LimitReadRequests, 1, 1, true, 0, time.Second},
			{0, ev, 1, 1, false, 0, time.Second},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			l := NewLocal(Options{Now: clk.Now})
			for i, s := range tt.steps {
				clk.Advance(s.advance)
				got := l.Consume("app", s.key, s.points, s.limit)
				want := pusher.LimitResult{Allowed: s.allowed, Limit: s.limit, Remaining: s.remaining, ResetIn: s.resetIn}
				if got != want {
					t.Fatalf("step %d: got %+v, want %+v", i, got, want)
				}
			}
		})
	}
}

func TestLocal_AppsAreIndependent(t *testing.T) {
	l := NewLocal(Options{Now: newFakeClock().Now})
	if !l.Consume("a", pusher.LimitBackendEvents, 1, 1).Allowed {
		t.Fatal("first consume of app a refused")
	}
	if !l.Consume("b", pusher.LimitBackendEvents, 1, 1).Allowed {
		t.Fatal("app b charged for app a")
	}
	if st := l.Stats(); st.Keys != 2 || st.Rejected != 0 {
		t.Fatalf("stats = %+v", st)
	}
	l.Consume("a", pusher.LimitBackendEvents, 1, 1)
	if st := l.Stats(); st.Rejected != 1 {
		t.Fatalf("rejected = %d, want 1", st.Rejected)
	}
}

func TestLocal_IdleKeysExpire(t *testing.T) {
	clk := newFakeClock()
	l := NewLocal(Options{Now: clk.Now})
	for i := range 1000 {
		l.Consume(fmt.Sprintf("app-%d", i), pusher.LimitBackendEvents, 1, 10)
	}
	if got := l.Stats().Keys; got != 1000 {
		t.Fatalf("keys = %d, want 1000", got)
	}
	clk.Advance(idleAfter)
	// Each shard sweeps on its next consume; touch every shard once.
	for i := 0; l.shardsTouched(i); i++ {
		l.Consume(fmt.Sprintf("fresh-%d", i), pusher.LimitBackendEvents, 1, 10)
	}
	st := l.Stats()
	if st.Keys > shardCount*4 {
		t.Fatalf("keys = %d after the idle period, want only the fresh ones", st.Keys)
	}
	if st.Evictions != 0 {
		t.Fatalf("evictions = %d, want 0", st.Evictions)
	}
}

// shardsTouched reports whether more fresh keys are needed to reach every shard.
func (l *Local) shardsTouched(i int) bool {
	if i > 10_000 {
		return false
	}
	for s := range l.shards {
		l.shards[s].mu.Lock()
		swept := l.shards[s].lastSweep
		l.shards[s].mu.Unlock()
		if swept < l.now().UnixNano() {
			return true
		}
	}
	return false
}

func TestLocal_KeyCap(t *testing.T) {
	clk := newFakeClock()
	l := NewLocal(Options{Now: clk.Now, MaxKeys: shardCount}) // one key per shard
	for i := range 500 {
		l.Consume(fmt.Sprintf("app-%d", i), pusher.LimitBackendEvents, 1, 10)
	}
	st := l.Stats()
	if st.Keys > shardCount {
		t.Fatalf("keys = %d, want at most %d", st.Keys, shardCount)
	}
	if st.Evictions == 0 {
		t.Fatal("no evictions at the key cap")
	}
	// A new key at the cap is still limited.
	if !l.Consume("new", pusher.LimitBackendEvents, 1, 1).Allowed {
		t.Fatal("first consume of a new key refused")
	}
	if l.Consume("new", pusher.LimitBackendEvents, 1, 1).Allowed {
		t.Fatal("new key at the cap not limited")
	}
}

func TestLocal_Concurrent(t *testing.T) {
	l := NewLocal(Options{})
	const goroutines, each, limit = 8, 100, 500
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for range each {
				if l.Consume("app", pusher.LimitBackendEvents, 1, limit).Allowed {
					n++
				}
			}
			mu.Lock()
			allowed += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	// All 800 consumes land within one or two windows; never more than two windows' worth.
	if allowed < limit || allowed > 2*limit {
		t.Fatalf("allowed = %d, want between %d and %d", allowed, limit, 2*limit)
	}
}

func BenchmarkLocalConsume(b *testing.B) {
	l := NewLocal(Options{})
	b.ReportAllocs()
	for b.Loop() {
		l.Consume("app-id", pusher.LimitBackendEvents, 1, 1<<30)
	}
}

func BenchmarkLocalConsumeParallel(b *testing.B) {
	l := NewLocal(Options{})
	apps := []string{"app-1", "app-2", "app-3", "app-4", "app-5", "app-6", "app-7", "app-8"}
	b.ReportAllocs()
	var next sync.Mutex
	i := 0
	b.RunParallel(func(pb *testing.PB) {
		next.Lock()
		app := apps[i%len(apps)]
		i++
		next.Unlock()
		for pb.Next() {
			l.Consume(app, pusher.LimitBackendEvents, 1, 1<<30)
		}
	})
}
