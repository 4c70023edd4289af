package logevery

import "testing"

func TestLimiter_OnePerInterval(t *testing.T) {
	var l Limiter
	if ok, held := l.Allow(); !ok || held != 0 {
		t.Fatalf("first: %v %d", ok, held)
	}
	for range 5 {
		if ok, _ := l.Allow(); ok {
			t.Fatal("a second occurrence within the interval got through")
		}
	}
	l.last.Store(l.last.Load() - int64(Interval)) // as if the interval passed
	if ok, held := l.Allow(); !ok || held != 5 {
		t.Fatalf("after the interval: %v, held %d, want true 5", ok, held)
	}
}
