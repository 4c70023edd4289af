// Package limiter holds the rate-limiter drivers behind pusher.RateLimiter.
package limiter

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/soketi-go/soketi/pkg/pusher"
)

const (
	// Window is the length of one fixed rate window, as in soketi.
	Window = time.Second
	// idleAfter is how old a window must be before its key is swept: one
	// window past its end, so a key that is still in use is never dropped.
	idleAfter = 2 * Window
	// DefaultMaxKeys bounds the keys the Local driver tracks.
	DefaultMaxKeys = 100_000

	shardCount = 64
)

// Local is an in-process fixed-window limiter, one window per (app, key),
// started by the first consume and lasting one second. Points consumed by a
// rejected call still count, as in soketi.
//
// State is bounded: a window idle for two seconds is swept lazily, and at
// most MaxKeys keys are tracked. At the cap, after sweeping, an arbitrary live
// key is evicted to make room; that key starts a fresh window on its next
// consume, so it can be granted at most one extra window of points.
type Local struct {
	now      func() time.Time
	perShard int
	shards   [shardCount]shard

	rejected  atomic.Uint64
	evictions atomic.Uint64
}

type shard struct {
	mu        sync.Mutex
	windows   map[windowKey]*window
	lastSweep int64
	_         [40]byte // keep hot shards on separate cache lines
}

type windowKey struct{ app, key string }

type window struct {
	start int64 // unix nanoseconds
	used  int
}

// Options configures a Local limiter. Zero values get defaults.
type Options struct {
	// MaxKeys caps the tracked keys (DefaultMaxKeys).
	MaxKeys int
	// Now is the clock (time.Now); tests inject a fake one.
	Now func() time.Time
}

// Stats are the limiter's counters.
type Stats struct {
	Keys      int    // keys tracked now
	Rejected  uint64 // consumes refused
	Evictions uint64 // live keys dropped at the key cap
	Fallbacks uint64 // consumes decided locally because Redis failed (Redis driver)
}

// NewLocal returns an empty Local limiter.
func NewLocal(opts Options) *Local {
	if opts.MaxKeys <= 0 {
		opts.MaxKeys = DefaultMaxKeys
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	l := &Local{now: opts.Now, perShard: max(1, (opts.MaxKeys+shardCount-1)/shardCount)}
	for i := range l.shards {
		l.shards[i].windows = make(map[windowKey]*window)
	}
	return l
}

var _ pusher.RateLimiter = (*Local)(nil)

// Consume charges points to appID's key and reports whether the call fits in
// the current window. A negative limit means unlimited; 0 refuses everything.
func (l *Local) Consume(appID, key string, points, limit int) pusher.LimitResult {
	if limit < 0 {
		return pusher.LimitResult{Allowed: true, Limit: limit, Remaining: -1}
	}
	now := l.now().UnixNano()
	k := windowKey{appID, key}
	s := &l.shards[shardOf(appID, key)]

	s.mu.Lock()
	if now-s.lastSweep >= int64(idleAfter) {
		s.sweep(now)
	}
	w, ok := s.windows[k]
	switch {
	case !ok:
		if len(s.windows) >= l.perShard {
			l.evictOne(s, now)
		}
		w = &window{start: now} // the only allocation: a new key
		s.windows[k] = w
	case now-w.start >= int64(Window):
		*w = window{start: now}
	}
	w.used += points
	start, used := w.start, w.used
	s.mu.Unlock()

	res := pusher.LimitResult{
		Allowed:   used <= limit,
		Limit:     limit,
		Remaining: max(limit-used, 0),
		ResetIn:   time.Duration(start + int64(Window) - now),
	}
	if !res.Allowed {
		l.rejected.Add(1)
	}
	return res
}

// Stats returns the current counters.
func (l *Local) Stats() Stats {
	st := Stats{Rejected: l.rejected.Load(), Evictions: l.evictions.Load()}
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		st.Keys += len(s.windows)
		s.mu.Unlock()
	}
	return st
}

// sweep drops windows that ended at least one window ago. Caller holds s.mu.
func (s *shard) sweep(now int64) {
	s.lastSweep = now
	for k, w := range s.windows {
		if now-w.start >= int64(idleAfter) {
			delete(s.windows, k)
		}
	}
}

// evictOne makes room in a full shard by dropping one key, preferring an
// idle one among the first few visited (map iteration starts at random), so
// a flood of new keys costs O(1) per insert. Caller holds s.mu.
func (l *Local) evictOne(s *shard, now int64) {
	var victim windowKey
	n := 0
	for k, w := range s.windows {
		if now-w.start >= int64(idleAfter) {
			delete(s.windows, k)
			return
		}
		if n == 0 {
			victim = k
		}
		if n++; n == 8 {
			break
		}
	}
	delete(s.windows, victim)
	l.evictions.Add(1)
}

// shardOf hashes both parts with FNV-1a; it does not allocate.
func shardOf(app, key string) int {
	h := uint32(2166136261)
	for i := 0; i < len(app); i++ {
		h = (h ^ uint32(app[i])) * 16777619
	}
	h = (h ^ ':') * 16777619
	for i := 0; i < len(key); i++ {
		h = (h ^ uint32(key[i])) * 16777619
	}
	return int(h % shardCount)
}
