// Package rediscache is SOKETI_CACHE_DRIVER=redis for cache channels: the
// last event of each one kept in Redis, so a new subscriber on any node gets
// it. It implements pusher.ChannelCache.
package rediscache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/soketi-go/soketi/internal/config"
	"github.com/soketi-go/soketi/pkg/pusher"
)

const (
	// DefaultTimeout bounds each call: a subscriber waits at most this long
	// for its cached event before getting pusher:cache_miss.
	DefaultTimeout = 250 * time.Millisecond
	// MaxEventBytes bounds a cached event, written or read. The app's max
	// event size bounds it already; this holds whatever the apps say.
	MaxEventBytes = 1 << 20
)

// ErrTooLarge refuses an event over MaxEventBytes.
var ErrTooLarge = errors.New("rediscache: event over 1 MiB")

// Options configures a Cache. Zero values get defaults.
type Options struct {
	KeyPrefix string        // prepended to every key (SOKETI_DB_REDIS_KEY_PREFIX)
	Timeout   time.Duration // DefaultTimeout
}

// Cache keeps each cache channel's last event at
// <KeyPrefix>cache:{<app>}:<channel>, as the event's JSON (the frame's
// payload, without the WebSocket header).
type Cache struct {
	c       redis.UniversalClient
	prefix  string
	timeout time.Duration
}

// New returns a cache over c, which the caller owns and closes.
func New(opts Options, c redis.UniversalClient) *Cache {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	return &Cache{c: c, prefix: opts.KeyPrefix, timeout: opts.Timeout}
}

var _ pusher.ChannelCache = (*Cache)(nil)

// key puts an app's channels in one Redis Cluster slot.
func (c *Cache) key(appID, channel string) string {
	return c.prefix + "cache:{" + appID + "}:" + channel
}

// Get returns channel's last event, or nil when none is cached.
func (c *Cache) Get(ctx context.Context, appID, channel string) (pusher.Frame, error) {
	// GETRANGE reads at most one byte past the bound; a missing key reads
	// as empty, and a stored event is never empty.
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	v, err := c.c.GetRange(ctx, c.key(appID, channel), 0, MaxEventBytes).Bytes()
	switch {
	case err != nil:
		return nil, fmt.Errorf("redis cache get: %w", err)
	case len(v) == 0:
		return nil, nil
	case len(v) > MaxEventBytes:
		return nil, ErrTooLarge
	}
	return pusher.TextFrame(v), nil
}

// Put keeps f as channel's last event for ttl. A ttl <= 0, or config's
// NeverExpires (soketi's -1 and 0), keeps it until the next one.
func (c *Cache) Put(ctx context.Context, appID, channel string, f pusher.Frame, ttl time.Duration) error {
	payload := f.Payload()
	if len(payload) > MaxEventBytes {
		return ErrTooLarge
	}
	if ttl <= 0 || ttl >= config.NeverExpires {
		ttl = 0 // SET without PX
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	err := c.c.Set(ctx, c.key(appID, channel), payload, ttl).Err()
	if err != nil {
		return fmt.Errorf("redis cache set: %w", err)
	}
	return nil
}

// Shared is true: every node reads the same Redis.
func (c *Cache) Shared() bool { return true }
