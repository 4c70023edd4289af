package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/soketi-go/soketi/internal/testutil"
	"github.com/soketi-go/soketi/pkg/consensus"
)

// gatedReplica commits to a real FSM, one entry per Apply, after its gate
// opens: a stand-in for raft whose commits the test holds back.
type gatedReplica struct {
	fsm     *consensus.FSM
	gate    chan struct{} // closed: commits go through
	entered atomic.Int32  // Apply calls that reached the gate

	mu    sync.Mutex
	index uint64
}

func newGatedReplica(t *testing.T) *gatedReplica {
	r := &gatedReplica{fsm: consensus.NewFSM(consensus.Limits{}), gate: make(chan struct{})}
	if _, err := r.commit(consensus.NodeUp{Node: "a", Incarnation: 1}); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *gatedReplica) Apply(ctx context.Context, cmd consensus.Command) (consensus.Result, error) {
	r.entered.Add(1)
	select {
	case <-r.gate:
	case <-ctx.Done():
		return consensus.Result{}, fmt.Errorf("%w: %w", consensus.ErrTimeout, ctx.Err())
	}
	res, err := r.commit(cmd)
	if err != nil {
		return res, err
	}
	return res, res.Err()
}

func (r *gatedReplica) commit(cmd consensus.Command) (consensus.Result, error) {
	data, err := consensus.EncodeCommand(cmd)
	if err != nil {
		return consensus.Result{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.index++
	return r.fsm.Apply(&raft.Log{Index: r.index, Data: data}).(consensus.Result), nil
}

func (r *gatedReplica) FSM() *consensus.FSM       { return r.fsm }
func (r *gatedReplica) Registered() bool          { return true }
func (r *gatedReplica) IsLeader() bool            { return true }
func (r *gatedReplica) Leader() (id, addr string) { return "a", "" }

func (b *batcher) queued() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue)
}

func bjoin(user string, inc uint64, max int) consensus.PresenceJoin {
	return consensus.PresenceJoin{App: "app", Channel: "presence-x", UserID: json.RawMessage(user), Node: "a", Incarnation: inc, MaxMembers: max}
}

// Writes made while both commit slots are busy go in one entry when a slot
// frees, and each caller gets its own sub-result.
func TestBatcher_ConcurrentWritesCoalesce(t *testing.T) {
	r := newGatedReplica(t)
	b := newBatcher(defaultBatchLimits)
	const n = 60
	type out struct {
		res consensus.Result
		err error
	}
	cmds := make([]consensus.Command, n)
	for i := range cmds {
		switch i {
		case 17: // a stale incarnation
			cmds[i] = bjoin(fmt.Sprintf(`"u%d"`, i), 9, 0)
		case 33, 34: // the member limit: one of the two fits
			cmds[i] = consensus.PresenceJoin{App: "app", Channel: "presence-full", UserID: json.RawMessage(fmt.Sprint(i)),
				Node: "a", Incarnation: 1, MaxMembers: 1}
		case 45:
			cmds[i] = consensus.Occupancy{App: "app", Channel: "presence-x", Node: "a", Incarnation: 1, Occupied: true}
		default:
			cmds[i] = bjoin(fmt.Sprintf(`"u%d"`, i), 1, 0)
		}
	}
	outs := make([]out, n)
	var wg sync.WaitGroup
	for i, c := range cmds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := b.submit(context.Background(), r, 5*time.Second, c)
			outs[i] = out{res, err}
		}()
	}
	testutil.WaitFor(t, 5*time.Second, "two entries in flight, the rest queued", func() bool {
		_, sent := b.batchStats()
		return r.entered.Load() == 2 && int(sent)+b.queued() == n
	})
	close(r.gate)
	wg.Wait()

	entries, sent := b.batchStats()
	if entries != 3 || sent != n || r.fsm.AppliedIndex() != 1+3 {
		t.Fatalf("%d writes in %d entries (applied index %d), want 3 entries", sent, entries, r.fsm.AppliedIndex())
	}
	limited := 0
	for i, o := range outs {
		switch c := cmds[i].(type) {
		case consensus.PresenceJoin:
			switch {
			case i == 17:
				if !errors.Is(o.err, consensus.ErrStale) || o.res.Status != consensus.StatusStale {
					t.Errorf("stale join: %+v %v", o.res, o.err)
				}
				continue
			case errors.Is(o.err, consensus.ErrLimit):
				limited++
				continue
			case o.err != nil:
				t.Errorf("join %s: %v", c.UserID, o.err)
				continue
			}
			if o.res.Member == nil || string(o.res.Member.UserID) != string(c.UserID) || !o.res.MemberAdded {
				t.Errorf("join %s got the result %+v", c.UserID, o.res)
			}
		case consensus.Occupancy:
			if o.err != nil || o.res.Type != consensus.CmdOccupancy || !o.res.ChannelOccupied {
				t.Errorf("occupancy: %+v %v", o.res, o.err)
			}
		}
	}
	if limited != 1 {
		t.Errorf("%d joins over the member limit, want 1", limited)
	}
	if got := r.fsm.MemberCount("app", "presence-x"); got != n-4 {
		t.Errorf("%d members, want %d", got, n-4)
	}
	// Each write in an entry of its own is sent as itself; the others as
	// sub-commands of one batch, with distinct positions.
	subs := map[[2]uint64]bool{}
	for _, o := range outs {
		k := [2]uint64{o.res.Index, uint64(o.res.Sub)}
		if subs[k] {
			t.Fatalf("two callers got the result at %v", k)
		}
		subs[k] = true
	}
}

// A write alone is sent as itself, not as a batch of one.
func TestBatcher_AloneIsSentAsItself(t *testing.T) {
	r := newGatedReplica(t)
	close(r.gate)
	b := newBatcher(defaultBatchLimits)
	res, err := b.submit(context.Background(), r, time.Second, bjoin(`"u"`, 1, 0))
	if err != nil || res.Type != consensus.CmdPresenceJoin || res.Sub != 0 || !res.MemberAdded {
		t.Fatalf("%+v %v", res, err)
	}
	// An invalid write fails alone, before it is queued.
	if _, err := b.submit(context.Background(), r, time.Second, bjoin(`nope`, 1, 0)); !errors.Is(err, consensus.ErrBadCommand) {
		t.Fatalf("invalid write: %v", err)
	}
	if entries, _ := b.batchStats(); entries != 1 {
		t.Fatalf("%d entries", entries)
	}
}

// An entry holds at most the count and byte limits; the first write of an
// entry goes whatever its size.
func TestBatcher_EntriesAreBounded(t *testing.T) {
	r := newGatedReplica(t)
	b := newBatcher(batchLimits{commands: 4, bytes: 1 << 10, inFlight: 1, queued: 100})
	big := bjoin(`"big"`, 1, 0)
	big.UserInfo = json.RawMessage(`"` + strings.Repeat("x", 2000) + `"`)
	var cmds []consensus.Command
	cmds = append(cmds, bjoin(`"first"`, 1, 0))
	for i := range 9 {
		cmds = append(cmds, bjoin(fmt.Sprintf(`"u%d"`, i), 1, 0))
	}
	cmds = append(cmds, big, bjoin(`"last"`, 1, 0))
	var wg sync.WaitGroup
	submit := func(c consensus.Command) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := b.submit(context.Background(), r, 5*time.Second, c); err != nil {
				t.Errorf("%+v: %v", c, err)
			}
		}()
	}
	submit(cmds[0])
	testutil.WaitFor(t, 5*time.Second, "the first write in flight", func() bool { return r.entered.Load() == 1 })
	for _, c := range cmds[1:] { // queued in this order
		want := b.queued() + 1
		submit(c)
		testutil.WaitFor(t, 5*time.Second, "queued", func() bool { return b.queued() == want })
	}
	close(r.gate)
	wg.Wait()
	// first | u0..u3 | u4..u7 | u8 (big does not fit) | big | last
	if entries, sent := b.batchStats(); entries != 6 || sent != uint64(len(cmds)) {
		t.Fatalf("%d writes in %d entries, want 6", sent, entries)
	}
}

// A full queue makes a caller wait with its context; a caller that gives up
// while queued is dropped unsent, one that gives up while its entry is in
// flight gets ErrTimeout (unknown outcome).
func TestBatcher_FullQueue(t *testing.T) {
	r := newGatedReplica(t)
	b := newBatcher(batchLimits{commands: 256, bytes: 32 << 10, inFlight: 1, queued: 2})
	done := map[string]chan error{}
	start := func(ctx context.Context, user string) {
		ch := make(chan error, 1)
		done[user] = ch
		go func() {
			_, err := b.submit(ctx, r, 5*time.Second, bjoin(user, 1, 0))
			ch <- err
		}()
	}
	inFlightCtx, cancelInFlight := context.WithCancel(context.Background())
	start(inFlightCtx, `"flying"`)
	testutil.WaitFor(t, 5*time.Second, "one entry in flight", func() bool { return r.entered.Load() == 1 })
	queuedCtx, cancelQueued := context.WithCancel(context.Background())
	start(queuedCtx, `"dropped"`)
	testutil.WaitFor(t, 5*time.Second, "one queued", func() bool { return b.queued() == 1 })
	start(context.Background(), `"queued"`)
	testutil.WaitFor(t, 5*time.Second, "queue full", func() bool { return b.queued() == 2 })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := b.submit(ctx, r, 5*time.Second, bjoin(`"refused"`, 1, 0)); !errors.Is(err, errBatchQueueFull) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("submit to a full queue: %v", err)
	}
	start(context.Background(), `"waiting"`) // waits for room

	cancelQueued()
	if err := <-done[`"dropped"`]; !errors.Is(err, errBatchNotSent) {
		t.Fatalf("cancelled while queued: %v", err)
	}
	cancelInFlight()
	if err := <-done[`"flying"`]; !errors.Is(err, consensus.ErrTimeout) {
		t.Fatalf("cancelled in flight: %v", err)
	}
	close(r.gate)
	for _, u := range []string{`"queued"`, `"waiting"`} {
		if err := <-done[u]; err != nil {
			t.Fatalf("%s: %v", u, err)
		}
	}
	testutil.WaitFor(t, 5*time.Second, "the in-flight entry committed", func() bool {
		return r.fsm.IsMember("app", "presence-x", json.RawMessage(`"flying"`))
	})
	for u, want := range map[string]bool{`"queued"`: true, `"waiting"`: true, `"dropped"`: false, `"refused"`: false} {
		if got := r.fsm.IsMember("app", "presence-x", json.RawMessage(u)); got != want {
			t.Errorf("%s member: %v, want %v", u, got, want)
		}
	}
	testutil.WaitFor(t, 5*time.Second, "the queue empty, its slots free", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.queue) == 0 && b.running == 0 && len(b.slots) == 0
	})
}
