// Package logevery is the project's one way to log a repeated warning at
// most once per interval: what peers, clients or a slow network can cause
// at will must not flood the log.
package logevery

import (
	"log/slog"
	"sync/atomic"
	"time"
)

// Interval is how often a repeated warning gets through.
const Interval = 10 * time.Second

// Limiter lets one occurrence through per Interval. The zero value is ready.
type Limiter struct {
	last       atomic.Int64
	suppressed atomic.Uint64
}

// Allow reports whether this occurrence should be logged and, if so, how
// many were held back since the last one that was.
func (l *Limiter) Allow() (ok bool, held uint64) {
	now := time.Now().UnixNano()
	last := l.last.Load()
	if now-last < int64(Interval) || !l.last.CompareAndSwap(last, now) {
		l.suppressed.Add(1)
		return false, 0
	}
	return true, l.suppressed.Swap(0)
}

// Warn logs at Warn when allowed, with the occurrences since the last
// warning, and at Debug otherwise.
func (l *Limiter) Warn(log *slog.Logger, msg string, args ...any) {
	if ok, held := l.Allow(); ok {
		log.Warn(msg, append(args, "occurrences", held+1)...)
		return
	}
	log.Debug(msg, args...)
}
