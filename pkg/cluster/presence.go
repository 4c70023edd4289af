package cluster

import (
	"context"
	"errors"
	"fmt"

	"github.com/soketi-go/soketi/pkg/consensus"
	"github.com/soketi-go/soketi/pkg/pusher"
)

// Presence and channel occupancy live in the Raft-replicated state: a node
// proposes its own first and last sockets, and every node tells its sockets
// of the changes as they commit.

// ErrReplicaUnavailable means presence could not be changed because this node
// cannot reach a quorum; it keeps serving what it has.
var ErrReplicaUnavailable = errors.New("cluster: replicated state unavailable")

// Subscribe joins c locally and, on this node's first subscriber or first
// socket of a user, records the transition in the replicated state. The
// cluster-wide transitions are decided when that write commits, and the
// server is told of none of them: every node tells its own sockets as the
// log applies (OnApply), and the leader sends every webhook from the
// replicated outbox (webhooks.go).
func (a *Adapter) Subscribe(ctx context.Context, c *pusher.Conn, channel string, m *pusher.Member) (pusher.JoinResult, error) {
	app := c.App
	fsm := a.replica.FSM()
	res, err := a.local.Subscribe(ctx, c, channel, m)
	if err != nil {
		return res, err
	}
	a.localCountChanged(app, channel)
	out := pusher.JoinResult{}
	if m != nil {
		if res.MemberAdded {
			// The member limit is decided at commit, over the whole cluster.
			_, err := a.apply(ctx, consensus.PresenceJoin{App: app.ID, Channel: channel, UserID: m.UserID,
				UserInfo: m.UserInfo, Node: a.cfg.NodeID, Incarnation: a.cfg.Incarnation,
				MaxMembers: memberLimit(app)})
			if errors.Is(err, consensus.ErrLimit) {
				a.undoJoin(ctx, c, channel)
				return pusher.JoinResult{}, pusher.ErrMemberLimit
			}
			if err != nil {
				// Undo the local join: the client is told the subscription
				// failed. The write may still have committed (a timeout), so
				// the member is resynced from the local state later.
				// Occupancy was not proposed yet, so nothing else changed.
				a.undoJoin(ctx, c, channel)
				a.retry.member(app.ID, channel, *m)
				return pusher.JoinResult{}, fmt.Errorf("%w: %w", ErrReplicaUnavailable, err)
			}
		}
		// Apply returned after this replica applied the join, so the list
		// has it; member events from now on are those committed after it.
		a.view.succeed(c, fsm, app.ID, channel, *m)
		out.Sent = true
	}
	if res.Occupied {
		if !a.hasLeader() {
			// Without a master the subscriber is not kept waiting: the
			// occupancy is recorded once one is elected.
			a.retry.occupancy(app.ID, channel)
			return out, nil
		}
		if _, err := a.apply(ctx, consensus.Occupancy{App: app.ID, Channel: channel, Node: a.cfg.NodeID,
			Incarnation: a.cfg.Incarnation, Occupied: true}); err != nil {
			a.retry.occupancy(app.ID, channel)
		}
	}
	return out, nil
}

// undoJoin takes back a local join the replica refused or did not confirm.
// A removal of the user that arrived meanwhile was held back because the
// socket was here (memberView.removed); with the socket gone the local
// sockets are told now, or they would list a ghost.
func (a *Adapter) undoJoin(ctx context.Context, c *pusher.Conn, channel string) {
	res, _ := a.local.Unsubscribe(ctx, c, channel)
	if m := res.RemovedMember; m != nil {
		a.view.localLeft(c.App.ID, channel, *m)
	}
}

// Unsubscribe leaves locally and records this node's last-socket transitions.
// A write that cannot be made now is retried in the background from the
// local state, so the replicated state converges to it.
func (a *Adapter) Unsubscribe(ctx context.Context, c *pusher.Conn, channel string) (pusher.LeaveResult, error) {
	res, err := a.local.Unsubscribe(ctx, c, channel)
	if err != nil || !res.WasSubscribed {
		return res, err
	}
	app := c.App
	a.localCountChanged(app, channel)
	a.view.forget(c, app.ID, channel)
	if m := res.RemovedMember; m != nil {
		a.view.localLeft(app.ID, channel, *m)
	}
	out := pusher.LeaveResult{WasSubscribed: true}
	if m := res.RemovedMember; m != nil && !a.hasLeader() {
		a.retry.member(app.ID, channel, *m)
	} else if m != nil {
		if _, err := a.apply(ctx, consensus.PresenceLeave{App: app.ID, Channel: channel, UserID: m.UserID,
			Node: a.cfg.NodeID, Incarnation: a.cfg.Incarnation}); err != nil {
			a.retry.member(app.ID, channel, *m)
		}
	}
	if res.Vacated && !a.hasLeader() {
		a.retry.occupancy(app.ID, channel)
	} else if res.Vacated {
		if _, err := a.apply(ctx, consensus.Occupancy{App: app.ID, Channel: channel, Node: a.cfg.NodeID,
			Incarnation: a.cfg.Incarnation, Occupied: false}); err != nil {
			a.retry.occupancy(app.ID, channel)
		}
	}
	return out, nil
}

func (a *Adapter) hasLeader() bool {
	id, _ := a.replica.Leader()
	return id != ""
}

// apply makes a replicated write for this node, within ApplyTimeout.
// Presence joins, leaves and occupancy changes go through the node's
// batcher (batch.go), which commits those made at once in one entry; the
// result is the write's own, a limit (ErrLimit) or a stale incarnation
// (ErrStale) as for a write alone.
func (a *Adapter) apply(ctx context.Context, cmd consensus.Command) (consensus.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.ApplyTimeout)
	defer cancel()
	if consensus.Batchable(cmd.Type()) {
		return a.batch.submit(ctx, a.replica, a.cfg.ApplyTimeout, cmd)
	}
	return a.replica.Apply(ctx, cmd)
}

// Members lists a presence channel's members from the replicated state.
func (a *Adapter) Members(_ context.Context, appID, channel string) ([]pusher.Member, error) {
	return toMembers(a.replica.FSM().Members(appID, channel)), nil
}

func toMembers(ms []consensus.Member) []pusher.Member {
	out := make([]pusher.Member, len(ms))
	for i, m := range ms {
		out[i] = pusher.Member(m)
	}
	return out
}

// OnApply runs on every node for every committed command, in log order.
// Every node tells its own subscribers of each member change as it commits
// (through memberView, which orders the events after each socket's list
// and holds back the removal of a user still connected here), so clients
// everywhere see the replicated list's changes in one order, and a node
// that was cut off replays what it missed as it catches up. A node purge (a
// dead or restarted node) also empties channels. Webhooks are not sent
// from here but from the replicated outbox (webhooks.go).
func (a *Adapter) OnApply(r consensus.Result) {
	if r.Status != consensus.StatusApplied {
		return
	}
	if r.Member != nil && r.App != "" && r.Channel == consensus.OnlineChannel {
		switch {
		case r.Type == consensus.CmdPresenceJoin && r.MemberAdded:
			a.userStatus(r.App, *r.Member, true)
		case r.Type == consensus.CmdPresenceLeave && r.MemberRemoved:
			a.userStatus(r.App, *r.Member, false)
		}
	} else if r.Member != nil && r.App != "" {
		switch {
		case r.Type == consensus.CmdPresenceJoin && r.MemberAdded:
			a.view.added(r.App, r.Channel, *r.Member, r.Index)
		case r.Type == consensus.CmdPresenceLeave && r.MemberRemoved:
			if a.view.removed(r.App, r.Channel, *r.Member, r.Index) {
				a.retry.member(r.App, r.Channel, pusher.Member(*r.Member))
			}
		}
	}
	for _, rm := range r.Removed {
		if rm.Channel == consensus.OnlineChannel {
			// A purge of this node's own entries (a false death) while the
			// user is still signed in here: re-added at once, and its
			// watchers here are not told it left.
			if a.hasLocal(rm.App, rm.Channel, rm.Member.UserID) {
				a.retry.member(rm.App, rm.Channel, pusher.Member(rm.Member))
			} else {
				a.userStatus(rm.App, rm.Member, false)
			}
			continue
		}
		if a.view.removed(rm.App, rm.Channel, rm.Member, r.Index) {
			a.retry.member(rm.App, rm.Channel, pusher.Member(rm.Member))
		}
	}
}

// Reannounce proposes this node's whole local state after its entries were
// purged (restart, a false death, a merge). Pending retries stay: one may be
// the leave that undoes a join whose outcome was unknown and which can still
// commit after this (a ghost otherwise); each resyncs from local truth.
func (a *Adapter) Reannounce(ctx context.Context) {
	a.reannounceUsers(ctx)
	for _, ch := range a.local.LocalChannels() {
		if ctx.Err() != nil {
			return
		}
		if _, err := a.apply(ctx, consensus.Occupancy{App: ch.App, Channel: ch.Channel, Node: a.cfg.NodeID,
			Incarnation: a.cfg.Incarnation, Occupied: true}); err != nil {
			a.retry.occupancy(ch.App, ch.Channel)
		}
		for _, m := range ch.Members {
			if _, err := a.apply(ctx, consensus.PresenceJoin{App: ch.App, Channel: ch.Channel, UserID: m.UserID,
				UserInfo: m.UserInfo, Node: a.cfg.NodeID, Incarnation: a.cfg.Incarnation}); err != nil {
				a.retry.member(ch.App, ch.Channel, m)
			}
		}
	}
}

// memberLimit is the app's presence member limit for the replicated
// state: 0 means none beyond the state's own cap (an app limit of 0 never
// gets here: the local adapter refuses every member itself).
func memberLimit(app *pusher.App) int {
	return max(app.MaxPresenceMembersPerChannel, 0)
}
