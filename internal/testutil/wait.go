// Package testutil holds what tests of several packages share.
package testutil

import (
	"testing"
	"time"
)

// WaitFor polls cond every 10 ms until it holds and returns how long that
// took; after timeout it fails the test, naming what it waited for.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}
