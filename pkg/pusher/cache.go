package pusher

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ChannelCache keeps the last event published through the HTTP API to each
// cache channel, for the channel's new subscribers. The default is this
// process's memory; main may put a shared one (pkg/rediscache) in Options.
type ChannelCache interface {
	// Get returns channel's last event as a frame, or nil when none is
	// cached. On an error the subscriber gets pusher:cache_miss.
	Get(ctx context.Context, appID, channel string) (Frame, error)
	// Put keeps f as channel's last event for ttl; ttl <= 0 keeps it until
	// the next one.
	Put(ctx context.Context, appID, channel string, f Frame, ttl time.Duration) error
	// Shared reports whether every node reads the same cache: then events
	// are not handed to the other nodes to store (CacheSharer, StoreCache).
	Shared() bool
}

// errCacheFull refuses a new channel at the memory cache's bound.
var errCacheFull = errors.New("pusher: channel cache full")

// memoryCache is the default ChannelCache, a frame per channel in this
// process. It holds at most max entries; at the bound, new channels are not
// cached (their subscribers get cache_miss).
type memoryCache struct {
	mu      sync.Mutex
	entries map[cacheKey]cacheEntry
	max     int
}

type cacheKey struct{ app, channel string }

type cacheEntry struct {
	frame   Frame
	expires time.Time // zero: until the next event
}

func newMemoryCache(max int) *memoryCache {
	return &memoryCache{entries: map[cacheKey]cacheEntry{}, max: max}
}

func (c *memoryCache) Put(_ context.Context, app, channel string, f Frame, ttl time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := cacheKey{app, channel}
	if _, ok := c.entries[k]; !ok && len(c.entries) >= c.max {
		return errCacheFull
	}
	e := cacheEntry{frame: f}
	if ttl > 0 {
		e.expires = time.Now().Add(ttl)
	}
	c.entries[k] = e
	return nil
}

func (c *memoryCache) Get(_ context.Context, app, channel string) (Frame, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[cacheKey{app, channel}]
	if !ok || e.expired(time.Now()) {
		return nil, nil
	}
	return e.frame, nil
}

func (c *memoryCache) Shared() bool { return false }

func (e cacheEntry) expired(now time.Time) bool { return !e.expires.IsZero() && now.After(e.expires) }

func (c *memoryCache) expire(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.entries {
		if e.expired(now) {
			delete(c.entries, k)
		}
	}
}

// cachedEvent is channel's last event, or nil when there is none or the
// cache cannot say (logged at most every 10 s).
func (s *Server) cachedEvent(ctx context.Context, appID, channel string) Frame {
	f, err := s.cache.Get(ctx, appID, channel)
	if err != nil {
		s.cacheLog.Warn(s.log, "channel cache read failed: answering cache_miss", "app_id", appID, "err", err)
		return nil
	}
	return f
}

// storeEvent keeps f as channel's last event; a failure is logged at most
// every 10 s and the publish goes on.
func (s *Server) storeEvent(ctx context.Context, appID, channel string, f Frame) {
	if err := s.cache.Put(ctx, appID, channel, f, s.opts.ChannelCacheTTL); err != nil {
		s.cacheLog.Warn(s.log, "channel cache write failed", "app_id", appID, "err", err)
	}
}
