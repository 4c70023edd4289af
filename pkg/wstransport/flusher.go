package wstransport

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/soketi-go/soketi/internal/uring"
	"github.com/soketi-go/soketi/pkg/pusher"
)

// flusher writes the outboxes scheduled on it, many per wake-up: one
// flusher per poller. With an io_uring, the sends of one pass (a fan-out's
// frame to each of the poller's subscribers) go to the kernel in one
// system call instead of one write(2) each, which is most of a delivery's
// cost; without one (seccomp, an old kernel) each goes through nbio.
type flusher struct {
	mu    sync.Mutex
	list  []scheduled
	spare []scheduled
	wake  chan struct{}
	log   *slog.Logger

	// Used by run alone.
	ring  *uring.Ring // nil: every send goes through nbio
	sends []ringSend  // the pass being submitted, indexed by tag
	stuck [][]byte    // what sends that never completed may still read
}

type scheduled struct {
	ec *elConn
	f  pusher.Flusher
}

// ringSend is one connection's frames in a ring pass.
type ringSend struct {
	scheduled
	backlog net.Buffers // several frames: written through nbio, not staged
	data    []byte      // one frame, for the kernel
	locked  bool        // staged: ec.nc is locked until the submission returns
	seq     int         // its place among the staged sends
	res     int32       // the completion: bytes sent, or -errno
	done    bool        // res is set
}

// ringEntries is how many sends one flusher submits at once. Each holds
// its connection's nbio lock until the submission returns (a few
// microseconds per send), so it also bounds how long a poller can wait
// for a connection the flusher is writing.
const ringEntries = 512

// ringWait bounds the wait for a completion that did not arrive within
// its submission. MSG_DONTWAIT sends to sockets complete within it, so
// this is never expected; the ring is then given up.
const ringWait = time.Second

var errRingStuck = errors.New("wstransport: a send on the io_uring did not complete")

func newFlusher(log *slog.Logger, useRing bool) *flusher {
	f := &flusher{wake: make(chan struct{}, 1), log: log}
	if useRing {
		r, err := uring.New(ringEntries)
		if err != nil {
			log.Info("writing each socket with its own system call", "reason", err.Error())
		} else {
			f.ring = r
		}
	}
	return f
}

func (f *flusher) schedule(ec *elConn, x pusher.Flusher) {
	f.mu.Lock()
	f.list = append(f.list, scheduled{ec, x})
	first := len(f.list) == 1
	f.mu.Unlock()
	if first {
		select {
		case f.wake <- struct{}{}:
		default:
		}
	}
}

func (f *flusher) run(stop <-chan struct{}) {
	defer func() {
		if f.ring != nil && f.ring.Inflight() == 0 {
			_ = f.ring.Close() // one with sends in flight is left to the process's end
		}
	}()
	for {
		select {
		case <-f.wake:
		case <-stop:
			return
		}
		f.mu.Lock()
		batch := f.list
		f.list = f.spare[:0]
		f.mu.Unlock()
		for rest := batch; len(rest) > 0; {
			if f.ring == nil {
				for _, s := range rest {
					f.write(s)
				}
				break
			}
			n := min(f.ring.Entries(), len(rest))
			f.ringPass(rest[:n])
			rest = rest[n:]
		}
		clear(batch)
		f.mu.Lock()
		f.spare = batch[:0]
		f.mu.Unlock()
	}
}

// write hands one outbox's frames to nbio, which never blocks: what the
// socket does not take now it holds and sends when it can.
func (f *flusher) write(s scheduled) {
	bufs := s.f.Take()
	if bufs == nil {
		return
	}
	if s.f.Written(s.ec.WriteBuffers(&bufs)) {
		f.schedule(s.ec, s.f)
	}
}

// ringPass sends the frames of each outbox in batch in one submission.
//
// A descriptor number is reused as soon as it is closed, so a send staged
// for a socket that nbio closes before the kernel looks the number up
// would go to whichever connection is accepted next. Each connection's
// nbio lock is therefore held from the check that it is open until the
// submission returns: nbio marks a connection closed under that lock
// before it closes the descriptor. From then on the kernel holds the
// socket itself.
func (f *flusher) ringPass(batch []scheduled) {
	sends := f.sends[:0]
	staged := 0
	for _, s := range batch {
		bufs := s.f.Take()
		if bufs == nil {
			continue
		}
		rs := ringSend{scheduled: s}
		if len(bufs) > 1 {
			// A backlog: the client is behind, its socket likely full, and
			// copying the frames costs more than the system call saved.
			rs.backlog = bufs
			sends = append(sends, rs)
			continue
		}
		rs.data = bufs[0]
		s.ec.nc.Lock()
		closed, _ := s.ec.nc.IsClosed()
		// What nbio still holds must go first: it writes that itself.
		if !closed && s.ec.Buffered() == 0 && f.ring.Send(s.ec.nc.Hash(), rs.data, uint64(len(sends))) {
			rs.locked, rs.seq = true, staged
			staged++
		} else {
			s.ec.nc.Unlock()
		}
		sends = append(sends, rs)
	}
	submitted, submitErr := f.ring.Submit()
	if submitErr != nil {
		f.log.Error("submitting sends to the io_uring; writing each socket with its own system call from now on", "err", submitErr)
	}
	f.reap(sends, submitted)
	for i := range sends {
		if sends[i].locked {
			sends[i].ec.nc.Unlock()
		}
	}
	// The lock is released before anything that may take it: nbio's Write,
	// a close.
	for i := range sends {
		rs := &sends[i]
		var err error
		switch {
		case rs.backlog != nil:
			err = rs.ec.WriteBuffers(&rs.backlog)
		case !rs.locked || (!rs.done && rs.seq >= submitted):
			// Not staged, or staged but not taken by the kernel: nbio sends it.
			_, err = rs.ec.TryWrite(rs.data)
		case !rs.done:
			err = errRingStuck
			f.stuck = append(f.stuck, rs.data) // the kernel may read it yet
		case rs.res == int32(len(rs.data)):
		case rs.res >= 0:
			_, err = rs.ec.TryWrite(rs.data[rs.res:]) // the rest waits in nbio
		case rs.res == -int32(syscall.EAGAIN):
			_, err = rs.ec.TryWrite(rs.data)
		default:
			err = syscall.Errno(-rs.res)
		}
		if rs.f.Written(err) {
			f.schedule(rs.ec, rs.f)
		}
		sends[i] = ringSend{}
	}
	f.sends = sends[:0]
	if submitErr != nil || f.ring.Inflight() > 0 {
		// Given up. A ring with sends in flight stays open: they read
		// from it.
		if f.ring.Inflight() == 0 {
			_ = f.ring.Close()
		}
		f.ring = nil
	}
}

// reap collects the completions of the first submitted sends; they arrive
// within the submission, but a late one is waited for up to ringWait.
func (f *flusher) reap(sends []ringSend, submitted int) {
	deadline := time.Now().Add(ringWait)
	for {
		f.ring.Reap(func(tag uint64, res int32) {
			sends[tag].res, sends[tag].done = res, true
		})
		if f.ring.Inflight() == 0 {
			return
		}
		left := time.Until(deadline)
		if left <= 0 {
			f.log.Error("sends on the io_uring did not complete; writing each socket with its own system call from now on",
				"pending", f.ring.Inflight())
			return
		}
		if err := f.ring.Wait(left.Nanoseconds()); err != nil {
			f.log.Error("waiting for the io_uring", "err", err)
			return
		}
	}
}
