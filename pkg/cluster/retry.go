package cluster

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/soketi-go/soketi/pkg/consensus"
	"github.com/soketi-go/soketi/pkg/pusher"
)

// retryQueue holds replicated-state writes that failed or whose outcome is
// unknown (no quorum, an election, a timeout) and makes them again until
// they pass. Each retry proposes what the local state says now — occupied or
// not, member or not — and the replicated writes are idempotent per node, so
// a late or repeated retry can never contradict the node's present state.
// At maxRetries further items are dropped and counted; the next Reannounce
// repairs the state.
const (
	maxRetries    = 100_000
	retryInterval = 500 * time.Millisecond
)

type retryKind uint8

const (
	retryOccupancy retryKind = iota + 1
	retryMember
)

type retryItem struct {
	kind    retryKind
	app     string
	channel string
	member  pusher.Member
}

type retryQueue struct {
	a       *Adapter
	mu      sync.Mutex
	occ     map[[2]string]bool
	members []retryItem
	dropped uint64
}

func newRetryQueue(a *Adapter) *retryQueue {
	return &retryQueue{a: a, occ: map[[2]string]bool{}}
}

func (q *retryQueue) full() bool { return len(q.occ)+len(q.members) >= maxRetries }

func (q *retryQueue) occupancy(app, channel string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.full() {
		q.dropped++
		return
	}
	q.occ[[2]string{app, channel}] = true
}

// member queues a resync of one user's presence on this node.
func (q *retryQueue) member(app, channel string, m pusher.Member) {
	q.addMember(retryItem{kind: retryMember, app: app, channel: channel, member: m})
}

func (q *retryQueue) addMember(it retryItem) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.full() {
		q.dropped++
		return
	}
	q.members = append(q.members, it)
}

// Len is the number of writes waiting.
func (q *retryQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.occ) + len(q.members)
}

func (q *retryQueue) run(ctx context.Context) {
	t := time.NewTicker(retryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			q.pass(ctx)
		}
	}
}

// pass tries every waiting write once, in order, stopping at the first that
// fails for want of a quorum.
func (q *retryQueue) pass(ctx context.Context) {
	q.mu.Lock()
	occ := q.occ
	members := q.members
	q.occ = map[[2]string]bool{}
	q.members = nil
	q.mu.Unlock()
	if len(occ) == 0 && len(members) == 0 {
		return
	}
	a := q.a
	requeue := func(rest []retryItem, restOcc map[[2]string]bool) {
		q.mu.Lock()
		q.members = append(rest, q.members...)
		for k := range restOcc {
			q.occ[k] = true
		}
		q.mu.Unlock()
	}
	for i, it := range members {
		var cmd consensus.Command = consensus.PresenceLeave{App: it.app, Channel: it.channel,
			UserID: it.member.UserID, Node: a.cfg.NodeID, Incarnation: a.cfg.Incarnation}
		if a.hasLocal(it.app, it.channel, it.member.UserID) {
			cmd = consensus.PresenceJoin{App: it.app, Channel: it.channel, UserID: it.member.UserID,
				UserInfo: it.member.UserInfo, Node: a.cfg.NodeID, Incarnation: a.cfg.Incarnation}
		}
		if _, err := a.apply(ctx, cmd); err != nil && !errors.Is(err, consensus.ErrStale) && !errors.Is(err, consensus.ErrLimit) {
			requeue(members[i:], occ)
			return
		}
	}
	for k := range occ {
		occupied := a.local.HasLocalSubscribers(k[0], k[1])
		_, err := a.apply(ctx, consensus.Occupancy{App: k[0], Channel: k[1], Node: a.cfg.NodeID,
			Incarnation: a.cfg.Incarnation, Occupied: occupied})
		if err != nil && !errors.Is(err, consensus.ErrStale) && !errors.Is(err, consensus.ErrLimit) {
			requeue(nil, occ)
			return
		}
		delete(occ, k)
	}
}
