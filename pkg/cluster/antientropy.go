package cluster

import (
	"context"
	"time"

	"github.com/soketi-go/soketi/pkg/consensus"
	"github.com/soketi-go/soketi/pkg/pusher"
)

// A write whose outcome was unknown (a timeout across an election) can
// commit after the retry that was meant to undo it: a socket refused with
// 4302 whose join commits later would stay a ghost. So every node compares,
// now and then, what the replicated state holds for it with its live
// sockets, and queues a resync from local truth for every difference; the
// retry queue makes the writes. Bounded by the state's own caps.
const antiEntropyEvery = 5 * time.Second

func (a *Adapter) antiEntropy(ctx context.Context) {
	t := time.NewTicker(antiEntropyEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !a.replica.Registered() || !a.hasLeader() {
			continue
		}
		a.repair()
	}
}

// repair queues a resync for each of this node's entries that its sockets
// do not back, and for each local member or subscribed channel the replica
// lacks. It returns how many it queued.
func (a *Adapter) repair() int {
	fsm := a.replica.FSM()
	members, occupied := fsm.NodeEntries(a.cfg.NodeID)
	n := 0
	for _, m := range members {
		if !a.hasLocal(m.App, m.Channel, m.Member.UserID) {
			a.retry.member(m.App, m.Channel, pusher.Member(m.Member))
			n++
		}
	}
	for _, ch := range occupied {
		if !a.local.HasLocalSubscribers(ch.App, ch.Channel) {
			a.retry.occupancy(ch.App, ch.Channel)
			n++
		}
	}
	held := map[chanKey]bool{}
	for _, ch := range occupied {
		held[chanKey{ch.App, ch.Channel}] = true
	}
	mine := map[chanKey]map[string]bool{}
	for _, m := range members {
		k := chanKey{m.App, m.Channel}
		if mine[k] == nil {
			mine[k] = map[string]bool{}
		}
		mine[k][string(m.Member.UserID)] = true
	}
	for _, ch := range a.local.LocalChannels() {
		k := chanKey{ch.App, ch.Channel}
		if !held[k] {
			a.retry.occupancy(ch.App, ch.Channel)
			n++
		}
		for _, m := range ch.Members {
			if !mine[k][m.Key()] {
				a.retry.member(ch.App, ch.Channel, m)
				n++
			}
		}
	}
	for app, users := range a.local.SignedInUsers() {
		k := chanKey{app, consensus.OnlineChannel}
		for _, id := range users {
			m := onlineMember(id)
			if !mine[k][string(m.UserID)] {
				a.retry.member(app, consensus.OnlineChannel, m)
				n++
			}
		}
	}
	if n > 0 {
		a.log.Debug("replicated state differs from this node's sockets: resyncing", "entries", n)
	}
	return n
}
