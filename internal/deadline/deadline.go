// Package deadline bounds a call by a hard deadline, for clients that heed
// a context's deadline only partly: go-redis, unless built with
// ContextTimeoutEnabled, leaves socket reads to its own, longer, timeout.
package deadline

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrNoAnswer wraps the error of a call that did not return in time.
var ErrNoAnswer = errors.New("no answer in time")

// Call runs f with a context that ends after d or with parent, and returns
// when f does or that context ends, whichever is first. A late f goes on in
// the background and its result is dropped, so f must end by itself (its
// client's own timeout).
func Call[T any](parent context.Context, d time.Duration, f func(ctx context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(parent, d)
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer cancel()
		v, err := f(ctx)
		done <- result{v, err}
	}()
	select {
	case res := <-done:
		return res.v, res.err
	case <-ctx.Done():
		select {
		case res := <-done: // f returned, then cancelled ctx
			return res.v, res.err
		default:
		}
		var zero T
		return zero, fmt.Errorf("%w (%s): %w", ErrNoAnswer, d, ctx.Err())
	}
}
