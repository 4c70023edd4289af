package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/soketi-go/soketi/pkg/consensus"
)

// Group commit. A raft entry costs an fsync on the leader and on a
// follower, and on a follower a forward and a wait for its own replica:
// about the same for one join as for a hundred. So this node's presence
// joins, leaves and occupancy changes go through one batcher: a write that
// finds a commit slot free is sent at once, alone; writes that arrive
// while both slots are busy wait and go together, as one consensus.Batch
// entry, when a slot frees. Each caller gets its own sub-result, or the
// batch's error (ErrTimeout means the outcome is unknown, as for a write
// alone: the callers' retries resync from the local state). Raft keeps the
// order of a batch's sub-commands; two batches in flight may commit in
// either order, as two concurrent writes always could, and a caller waits
// for its write before it makes the next.
const (
	batchMaxCommands = 256      // sub-commands per entry
	batchMaxBytes    = 32 << 10 // encoded sub-commands per entry, well under MaxCommandSize
	batchInFlight    = 2        // entries being committed at once
	// batchMaxQueued bounds the writes waiting for a slot; beyond it a
	// caller waits, with its context, for room (errBatchQueueFull when the
	// context ends first: nothing was sent).
	batchMaxQueued = 4096
)

// errBatchQueueFull: the write was not sent, the queue stayed full until
// the caller's context ended.
var errBatchQueueFull = errors.New("cluster: presence write queue full")

// errBatchNotSent: the caller's context ended while its write was queued;
// it was dropped from the queue and not sent.
var errBatchNotSent = errors.New("cluster: presence write not sent")

type batchLimits struct {
	commands, bytes, inFlight, queued int
}

var defaultBatchLimits = batchLimits{commands: batchMaxCommands, bytes: batchMaxBytes,
	inFlight: batchInFlight, queued: batchMaxQueued}

// batchCall is one caller's write.
type batchCall struct {
	cmd     consensus.Command
	size    int
	dropped bool // the caller gave up while it was queued; under batcher.mu
	res     consensus.Result
	err     error
	done    chan struct{} // closed once res and err are set
}

type batcher struct {
	limits batchLimits
	slots  chan struct{} // one token per queued call

	mu      sync.Mutex
	queue   []*batchCall
	running int // workers, each committing one entry at a time

	entries  atomic.Uint64 // raft entries proposed
	commands atomic.Uint64 // writes sent in them
}

func newBatcher(l batchLimits) *batcher {
	return &batcher{limits: l, slots: make(chan struct{}, l.queued)}
}

// submit sends cmd (a batchable command) through the batcher and returns
// its own Result once this node's replica has applied it, as
// Replica.Apply does. Each entry is committed with timeout.
func (b *batcher) submit(ctx context.Context, r Replica, timeout time.Duration, cmd consensus.Command) (consensus.Result, error) {
	data, err := consensus.EncodeCommand(cmd) // an invalid write fails alone
	if err != nil {
		return consensus.Result{}, err
	}
	select {
	case b.slots <- struct{}{}:
	default:
		select {
		case b.slots <- struct{}{}:
		case <-ctx.Done():
			return consensus.Result{}, fmt.Errorf("%w: %w", errBatchQueueFull, ctx.Err())
		}
	}
	c := &batchCall{cmd: cmd, size: len(data), done: make(chan struct{})}
	b.mu.Lock()
	b.queue = append(b.queue, c)
	if b.running < b.limits.inFlight {
		b.running++
		go b.work(r, timeout)
	}
	b.mu.Unlock()

	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-c.done: // it finished meanwhile
		return c.res, c.err
	default:
	}
	for _, q := range b.queue {
		if q == c {
			c.dropped = true
			return consensus.Result{}, fmt.Errorf("%w: %w", errBatchNotSent, ctx.Err())
		}
	}
	return consensus.Result{}, fmt.Errorf("apply %s: %w: %w", cmd.Type(), consensus.ErrTimeout, ctx.Err())
}

// work commits what is queued, one entry at a time, until the queue is empty.
func (b *batcher) work(r Replica, timeout time.Duration) {
	for {
		b.mu.Lock()
		calls := b.take()
		if len(calls) == 0 {
			b.running--
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		b.commit(r, timeout, calls)
	}
}

// take removes the next entry's calls from the queue, in order, within
// the limits (the first always goes, however big); b.mu is held.
func (b *batcher) take() []*batchCall {
	var (
		calls []*batchCall
		size  int
		i     int
	)
	for ; i < len(b.queue); i++ {
		c := b.queue[i]
		if c.dropped {
			<-b.slots
			continue
		}
		if len(calls) > 0 && (len(calls) >= b.limits.commands || size+c.size > b.limits.bytes) {
			break
		}
		<-b.slots
		calls = append(calls, c)
		size += c.size
	}
	n := copy(b.queue, b.queue[i:])
	clear(b.queue[n:])
	b.queue = b.queue[:n]
	return calls
}

// commit proposes calls as one entry and hands each caller its result.
func (b *batcher) commit(r Replica, timeout time.Duration, calls []*batchCall) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	b.entries.Add(1)
	b.commands.Add(uint64(len(calls)))
	if len(calls) == 1 {
		c := calls[0]
		c.res, c.err = r.Apply(ctx, c.cmd)
		close(c.done)
		return
	}
	cmds := make([]consensus.Command, len(calls))
	for i, c := range calls {
		cmds[i] = c.cmd
	}
	res, err := r.Apply(ctx, consensus.Batch{Commands: cmds})
	for i, c := range calls {
		switch {
		case len(res.Batch) == len(calls):
			// Committed: each its own result. A shared error is then an
			// ErrTimeout (this replica has not applied the entry yet).
			c.res, c.err = res.Batch[i], err
			if c.err == nil {
				c.err = c.res.Err()
			}
		case err != nil:
			c.err = err
		default:
			c.err = fmt.Errorf("apply %s: batch of %d has %d results", c.cmd.Type(), len(calls), len(res.Batch))
		}
		close(c.done)
	}
}

// batchStats says how many raft entries carried how many writes.
func (b *batcher) batchStats() (entries, commands uint64) {
	return b.entries.Load(), b.commands.Load()
}
