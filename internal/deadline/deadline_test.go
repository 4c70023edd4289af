package deadline

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestCall_ReturnsTheResult(t *testing.T) {
	for range 1000 { // f's cancel must never pass for a timeout
		v, err := Call(context.Background(), time.Second, func(context.Context) (int, error) { return 7, nil })
		if v != 7 || err != nil {
			t.Fatalf("got %d, %v", v, err)
		}
	}
	boom := errors.New("boom")
	if _, err := Call(context.Background(), time.Second, func(context.Context) (int, error) { return 0, boom }); err != boom {
		t.Fatalf("error %v, want boom", err)
	}
}

func TestCall_StopsWaitingAtTheDeadline(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	start := time.Now()
	_, err := Call(context.Background(), 50*time.Millisecond, func(context.Context) (int, error) {
		<-release // a call that ignores its context
		return 1, nil
	})
	if !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("error %v, want ErrNoAnswer", err)
	}
	if d := time.Since(start); d < 50*time.Millisecond || d > 500*time.Millisecond {
		t.Fatalf("returned after %s, deadline 50ms", d)
	}
}

func TestCall_StopsWhenTheParentEnds(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	parent, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Call(parent, time.Hour, func(context.Context) (int, error) {
		<-release
		return 1, nil
	})
	if !errors.Is(err, ErrNoAnswer) || !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want ErrNoAnswer and Canceled", err)
	}
}
