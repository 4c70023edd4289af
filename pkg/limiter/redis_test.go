package limiter

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testredis"
	"github.com/soketi-go/soketi/internal/testutil"
	"github.com/soketi-go/soketi/pkg/pusher"
	"github.com/soketi-go/soketi/pkg/redisconn"
)

// redisNode is one node's limiter, with its own client, as main builds it.
func redisNode(t *testing.T, addr, prefix string, opts RedisOptions) *Redis {
	t.Helper()
	c, err := redisconn.Open(redisconn.Options{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	opts.KeyPrefix = prefix
	return NewRedis(opts, c)
}

func TestRedis_SameAnswersAsLocal(t *testing.T) {
	srv := testredis.Start(t)
	r := redisNode(t, srv.Addr, testredis.Prefix(t), RedisOptions{})
	l := NewLocal(Options{})
	ev := pusher.LimitBackendEvents
	for i, s := range []struct {
		key           string
		points, limit int
	}{
		{ev, 1, 3}, {ev, 1, 3}, {ev, 1, 3}, {ev, 1, 3}, // the fourth is refused
		{ev, 1, 5},                                  // a raised limit applies at once, to points already spent
		{"big", 3, 5}, {"big", 3, 5}, {"big", 0, 5}, // refused points count
		{"none", 1, 0}, // 0 refuses everything
		{"off", 9, -1}, // < 0 allows everything
		{"zero", 0, 1}, // a zero-point consume starts a window too
		{"zero", 1, 1},
	} {
		want := l.Consume("app", s.key, s.points, s.limit)
		got := r.Consume("app", s.key, s.points, s.limit)
		if got.Allowed != want.Allowed || got.Remaining != want.Remaining || got.Limit != want.Limit {
			t.Fatalf("step %d %+v: redis %+v, local %+v", i, s, got, want)
		}
		if s.limit >= 0 && (got.ResetIn <= 0 || got.ResetIn > Window) {
			t.Fatalf("step %d: ResetIn %s, want in (0, 1s]", i, got.ResetIn)
		}
	}
	if st := r.Stats(); st.Fallbacks != 0 || st.Rejected != l.Stats().Rejected {
		t.Fatalf("stats %+v, local %+v", st, l.Stats())
	}
	if n := srv.Client().Exists(context.Background(), r.redisKey("app", "off")).Val(); n != 0 {
		t.Fatal("a disabled limit wrote a key")
	}
}

func TestRedis_WindowStartsAtFirstConsumeAndExpires(t *testing.T) {
	srv := testredis.Start(t)
	prefix := testredis.Prefix(t)
	r := redisNode(t, srv.Addr, prefix, RedisOptions{})
	rc := srv.Client()
	ctx := context.Background()
	key := prefix + "rate:{app-1:backend:events}" // hash tag around app and key
	ev := pusher.LimitBackendEvents

	if res := r.Consume("app-1", ev, 1, 2); !res.Allowed || res.Remaining != 1 || res.ResetIn < 900*time.Millisecond {
		t.Fatalf("first consume: %+v", res)
	}
	if ttl := rc.PTTL(ctx, key).Val(); ttl <= 0 || ttl > Window {
		t.Fatalf("key %s: PTTL %s, want in (0, 1s]", key, ttl)
	}
	r.Consume("app-1", ev, 1, 2)
	for range 3 {
		if res := r.Consume("app-1", ev, 1, 2); res.Allowed || res.Remaining != 0 {
			t.Fatalf("over the limit: %+v", res)
		}
	}
	if used := rc.Get(ctx, key).Val(); used != "5" {
		t.Fatalf("count %s, want 5: refused points count", used)
	}
	// The window ends one second after its first consume and the key goes
	// with it, so Redis holds one key per (app, key) used in the last second.
	testutil.WaitFor(t, 3*time.Second, "the window's key to expire", func() bool {
		return rc.Exists(ctx, key).Val() == 0
	})
	if res := r.Consume("app-1", ev, 1, 2); !res.Allowed || res.Remaining != 1 || res.ResetIn < 900*time.Millisecond {
		t.Fatalf("first consume of the next window: %+v", res)
	}
}

// TestRedis_ThreeNodesHoldTheLimit hammers one key from three limiters,
// each with its own client, and counts what every window admitted.
func TestRedis_ThreeNodesHoldTheLimit(t *testing.T) {
	srv := testredis.Start(t)
	prefix := testredis.Prefix(t)
	const (
		limit    = 300
		perNode  = 4
		duration = 4500 * time.Millisecond
	)
	var nodes []*Redis
	for range 3 {
		nodes = append(nodes, redisNode(t, srv.Addr, prefix, RedisOptions{}))
	}
	var (
		mu    sync.Mutex
		ends  []time.Time // window end of every admitted consume
		calls atomic.Int64
		wg    sync.WaitGroup
	)
	stop := time.Now().Add(duration)
	for _, n := range nodes {
		for range perNode {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []time.Time
				for time.Now().Before(stop) {
					res := n.Consume("app", pusher.LimitBackendEvents, 1, limit)
					calls.Add(1)
					if res.Allowed {
						mine = append(mine, time.Now().Add(res.ResetIn))
					}
				}
				mu.Lock()
				ends = append(ends, mine...)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()

	// Windows are a second apart, and one window's ends differ only by
	// the time between the script and the clock read.
	sort.Slice(ends, func(i, j int) bool { return ends[i].Before(ends[j]) })
	var windows []int
	for i, e := range ends {
		if i == 0 || e.Sub(ends[i-1]) > Window/2 {
			windows = append(windows, 0)
		}
		windows[len(windows)-1]++
	}
	t.Logf("limit %d/s, 3 nodes × %d goroutines, %d consumes in %s; admitted per window: %v",
		limit, perNode, calls.Load(), duration, windows)
	if len(windows) < 4 {
		t.Fatalf("only %d windows: %v", len(windows), windows)
	}
	for i, n := range windows {
		full := i < len(windows)-1 // the last one was cut short
		if n > limit*105/100 || (full && n < limit*95/100) {
			t.Fatalf("window %d admitted %d, want %d ± 5%%: %v", i, n, limit, windows)
		}
	}
	for i, n := range nodes {
		if st := n.Stats(); st.Fallbacks != 0 {
			t.Fatalf("node %d fell back %d times", i, st.Fallbacks)
		}
	}
}

func TestRedis_RestartFallsBackAndRecovers(t *testing.T) {
	srv := testredis.Start(t)
	prefix := testredis.Prefix(t)
	const timeout = 250 * time.Millisecond
	r := redisNode(t, srv.Addr, prefix, RedisOptions{Timeout: timeout, RetryInterval: 50 * time.Millisecond})
	rc := srv.Client()
	ctx := context.Background()

	// Background load measures the longest consume throughout.
	var (
		worst atomic.Int64
		done  = make(chan struct{})
		wg    sync.WaitGroup
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				start := time.Now()
				r.Consume("load", pusher.LimitBackendEvents, 1, 1_000_000)
				d := int64(time.Since(start))
				for w := worst.Load(); d > w && !worst.CompareAndSwap(w, d); w = worst.Load() {
				}
			}
		}()
	}
	testutil.WaitFor(t, 5*time.Second, "load on redis", func() bool {
		return rc.Exists(ctx, r.redisKey("load", pusher.LimitBackendEvents)).Val() == 1
	})

	srv.Kill()
	// With Redis gone the node limits alone, with the full limit.
	admitted := 0
	for range 5 {
		if r.Consume("app", pusher.LimitBackendEvents, 1, 3).Allowed {
			admitted++
		}
	}
	if admitted != 3 {
		t.Fatalf("local fallback admitted %d of 5 at limit 3", admitted)
	}
	if st := r.Stats(); st.Fallbacks < 5 {
		t.Fatalf("fallbacks %d, want at least 5", st.Fallbacks)
	}

	srv.Restart() // an empty server on the same address
	testutil.WaitFor(t, 5*time.Second, "consumes to reach redis again", func() bool {
		return r.downUntil.Load() == 0 && rc.Exists(ctx, r.redisKey("load", pusher.LimitBackendEvents)).Val() == 1
	})
	before := r.Stats().Fallbacks
	if res := r.Consume("after", pusher.LimitBackendEvents, 1, 3); !res.Allowed || res.Remaining != 2 {
		t.Fatalf("after recovery: %+v", res)
	}
	if rc.Exists(ctx, r.redisKey("after", pusher.LimitBackendEvents)).Val() != 1 || r.Stats().Fallbacks != before {
		t.Fatal("a consume after recovery did not go to redis")
	}
	close(done)
	wg.Wait()
	// Scheduling on a loaded 2-core machine gets some slack.
	if w := time.Duration(worst.Load()); w > timeout+250*time.Millisecond {
		t.Fatalf("a consume took %s, timeout %s", w, timeout)
	}
	t.Logf("longest consume across kill and restart: %s (timeout %s), fallbacks %d",
		time.Duration(worst.Load()), timeout, r.Stats().Fallbacks)
}

// TestRedis_StalledServerBoundedByTimeout: a server that accepts and never
// answers holds a consume for the timeout only, though the client's own
// timeout is 5 s, and the next consumes do not wait at all.
func TestRedis_StalledServerBoundedByTimeout(t *testing.T) {
	addr := testredis.Stalled(t)

	c, err := redisconn.Open(redisconn.Options{Addr: addr, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	const timeout = 100 * time.Millisecond
	r := NewRedis(RedisOptions{Timeout: timeout}, c)

	start := time.Now()
	if res := r.Consume("app", pusher.LimitBackendEvents, 1, 1); !res.Allowed {
		t.Fatalf("first consume: %+v", res)
	}
	if d := time.Since(start); d < timeout || d > timeout+150*time.Millisecond {
		t.Fatalf("first consume took %s, timeout %s", d, timeout)
	}
	start = time.Now()
	if res := r.Consume("app", pusher.LimitBackendEvents, 1, 1); res.Allowed {
		t.Fatalf("second consume over a local limit of 1: %+v", res)
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Fatalf("a consume inside the retry interval took %s", d)
	}
	if st := r.Stats(); st.Fallbacks != 2 || st.Rejected != 1 {
		t.Fatalf("stats %+v", st)
	}
}
