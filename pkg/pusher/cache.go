package pusher

import (
	"sync"
	"time"
)

// eventCache keeps the last event published through the HTTP API to each
// cache channel, as a ready frame. It holds at most max entries; at the
// bound, new channels are not cached (their subscribers get cache_miss).
type eventCache struct {
	mu      sync.Mutex
	entries map[cacheKey]cacheEntry
	max     int
}

type cacheKey struct{ app, channel string }

type cacheEntry struct {
	frame   Frame
	expires time.Time
}

func newEventCache(max int) *eventCache {
	return &eventCache{entries: map[cacheKey]cacheEntry{}, max: max}
}

func (c *eventCache) put(app, channel string, f Frame, ttl time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := cacheKey{app, channel}
	if _, ok := c.entries[k]; !ok && len(c.entries) >= c.max {
		return false
	}
	c.entries[k] = cacheEntry{frame: f, expires: time.Now().Add(ttl)}
	return true
}

func (c *eventCache) get(app, channel string) Frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[cacheKey{app, channel}]
	if !ok || time.Now().After(e.expires) {
		return nil
	}
	return e.frame
}

func (c *eventCache) expire(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.entries {
		if now.After(e.expires) {
			delete(c.entries, k)
		}
	}
}
