package limiter

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/soketi-go/soketi/internal/logevery"
	"github.com/soketi-go/soketi/pkg/pusher"
)

// Defaults of RedisOptions.
const (
	// DefaultRedisTimeout bounds each consume's round trip to Redis: an API
	// request must not wait seconds for its rate check.
	DefaultRedisTimeout = 250 * time.Millisecond
	// DefaultRedisRetry is how long after a failure consumes stay local
	// before one of them tries Redis again.
	DefaultRedisRetry = time.Second
)

// RedisOptions configures a Redis limiter. Zero values get defaults.
type RedisOptions struct {
	KeyPrefix     string        // prepended to every key (SOKETI_DB_REDIS_KEY_PREFIX)
	Timeout       time.Duration // DefaultRedisTimeout
	RetryInterval time.Duration // DefaultRedisRetry
	MaxKeys       int           // keys of the local fallback (DefaultMaxKeys)
	Logger        *slog.Logger
}

// Redis is the RATE_LIMITER_DRIVER=redis limiter: the Local driver's
// windows kept in Redis, so every node counts against the same window.
// While Redis fails or is slow, consumes are decided by a Local limiter with
// the full limit on each node; see DESIGN.md.
type Redis struct {
	c       redis.UniversalClient
	prefix  string
	timeout time.Duration
	retry   time.Duration
	local   *Local
	log     *slog.Logger

	// downUntil is when a consume may try Redis again (unix ns); 0 while
	// Redis answers. probing lets one consume at a time try it.
	downUntil atomic.Int64
	probing   atomic.Bool
	downLog   logevery.Limiter
	upLog     logevery.Limiter

	rejected, fallbacks atomic.Uint64
}

// consumeScript adds the points to the window's count and returns the count
// and the window's time left; the first consume of a window (a key with no
// expiry, as INCRBY just made it) starts the window.
var consumeScript = redis.NewScript(`
local used = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {used, ttl}
`)

// NewRedis returns a limiter over c, which the caller owns and closes.
func NewRedis(opts RedisOptions, c redis.UniversalClient) *Redis {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultRedisTimeout
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = DefaultRedisRetry
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Redis{
		c: c, prefix: opts.KeyPrefix, timeout: opts.Timeout, retry: opts.RetryInterval,
		local: NewLocal(Options{MaxKeys: opts.MaxKeys}),
		log:   opts.Logger.With("component", "rate_limiter", "driver", "redis"),
	}
}

var _ pusher.RateLimiter = (*Redis)(nil)

// Consume charges points to appID's key in Redis, with the Local driver's
// semantics. It never waits longer than the timeout.
func (r *Redis) Consume(appID, key string, points, limit int) pusher.LimitResult {
	if limit < 0 {
		return pusher.LimitResult{Allowed: true, Limit: limit, Remaining: -1}
	}
	if r.tryRedis() {
		res, err := r.consume(appID, key, points, limit)
		if err == nil {
			r.answered()
			if !res.Allowed {
				r.rejected.Add(1)
			}
			return res
		}
		r.failed(err)
	}
	r.fallbacks.Add(1)
	return r.local.Consume(appID, key, points, limit)
}

// redisKey is the Redis key of appID's key. The hash tag keeps the key
// whole in Redis Cluster's slot hashing.
func (r *Redis) redisKey(appID, key string) string {
	return r.prefix + "rate:{" + appID + ":" + key + "}"
}

func (r *Redis) consume(appID, key string, points, limit int) (pusher.LimitResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	v, err := consumeScript.Run(ctx, r.c, []string{r.redisKey(appID, key)}, points, Window.Milliseconds()).Int64Slice()
	if err != nil {
		return pusher.LimitResult{}, err
	}
	if len(v) != 2 {
		return pusher.LimitResult{}, fmt.Errorf("rate limiter script returned %d values", len(v))
	}
	used := int(v[0])
	return pusher.LimitResult{
		Allowed:   used <= limit,
		Limit:     limit,
		Remaining: max(limit-used, 0),
		ResetIn:   time.Duration(v[1]) * time.Millisecond,
	}, nil
}

// tryRedis reports whether this consume goes to Redis: always while it
// answers, else one consume per retry interval.
func (r *Redis) tryRedis() bool {
	until := r.downUntil.Load()
	if until == 0 {
		return true
	}
	return time.Now().UnixNano() >= until && r.probing.CompareAndSwap(false, true)
}

func (r *Redis) answered() {
	if r.downUntil.Load() == 0 {
		return
	}
	r.downUntil.Store(0)
	r.probing.Store(false)
	if ok, _ := r.upLog.Allow(); ok {
		r.log.Info("rate limiter redis answers again: limits hold across nodes")
	}
}

func (r *Redis) failed(err error) {
	r.downUntil.Store(time.Now().Add(r.retry).UnixNano())
	r.probing.Store(false)
	r.downLog.Warn(r.log, "rate limiter redis unavailable: each node limits alone", "err", err,
		"timeout", r.timeout, "retry_in", r.retry)
}

// Stats returns the counters; Keys are those of the local fallback.
func (r *Redis) Stats() Stats {
	st := r.local.Stats()
	st.Rejected += r.rejected.Load()
	st.Fallbacks = r.fallbacks.Load()
	return st
}
