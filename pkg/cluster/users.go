package cluster

import (
	"context"
	"encoding/json"

	"github.com/soketi-go/soketi/pkg/consensus"
	"github.com/soketi-go/soketi/pkg/pusher"
)

// Who is online, for watchlists: a node records in the replicated state,
// as a member of the reserved channel consensus.OnlineChannel, each user
// with a signed-in connection on it (its first connection, and its last
// one leaving), exactly as it records presence. So a user goes online or
// offline once, cluster-wide, when the write commits; a dead node's users
// are removed with its other entries after the reap delay; and the same
// retries, re-announcement and anti-entropy keep the state equal to the
// nodes' connections. Every node tells its own watchers as the log applies.

// onlineMember is a user's entry in the online channel: the id as a JSON
// string, as the state keys presence members.
func onlineMember(userID string) pusher.Member {
	b, _ := json.Marshal(userID)
	return pusher.Member{UserID: b}
}

// onlineUserID reads the user id back from an online-channel entry.
func onlineUserID(m consensus.Member) (string, bool) {
	var id string
	if json.Unmarshal(m.UserID, &id) != nil || id == "" {
		return "", false
	}
	return id, true
}

// SignIn records the user locally and, for the first connection of the
// user on this node (or the last one of a user it was signed in as), in
// the replicated state. Watchers hear of it from OnApply, on every node.
func (a *Adapter) SignIn(ctx context.Context, c *pusher.Conn, userID string) pusher.UserChange {
	uc := a.local.SignIn(ctx, c, userID)
	if uc.Offline != "" {
		a.setOnline(ctx, c.App.ID, uc.Offline, false)
	}
	if uc.Online != "" {
		a.setOnline(ctx, c.App.ID, uc.Online, true)
	}
	return pusher.UserChange{Announced: true}
}

// RemoveSocket forgets a local connection; its user goes offline on this
// node if it was the last.
func (a *Adapter) RemoveSocket(c *pusher.Conn) pusher.UserChange {
	a.view.forget(c, "", "")
	if uc := a.local.RemoveSocket(c); uc.Offline != "" {
		a.setOnline(context.Background(), c.App.ID, uc.Offline, false)
	}
	return pusher.UserChange{Announced: true}
}

// setOnline writes this node's online entry for a user; a write that
// fails is retried from local truth, like a presence write.
func (a *Adapter) setOnline(ctx context.Context, app, userID string, online bool) {
	m := onlineMember(userID)
	if !a.hasLeader() {
		a.retry.member(app, consensus.OnlineChannel, m)
		return
	}
	var cmd consensus.Command = consensus.PresenceLeave{App: app, Channel: consensus.OnlineChannel,
		UserID: m.UserID, Node: a.cfg.NodeID, Incarnation: a.cfg.Incarnation}
	if online {
		cmd = consensus.PresenceJoin{App: app, Channel: consensus.OnlineChannel, UserID: m.UserID,
			Node: a.cfg.NodeID, Incarnation: a.cfg.Incarnation}
	}
	if _, err := a.apply(ctx, cmd); err != nil {
		a.retry.member(app, consensus.OnlineChannel, m)
	}
}

// OnlineUsers reads the replicated state: the same state whose changes
// OnApply reports, so a watcher's first event and the changes after it
// agree.
func (a *Adapter) OnlineUsers(_ context.Context, appID string, ids []string) ([]string, error) {
	fsm := a.replica.FSM()
	var out []string
	for _, id := range ids {
		if fsm.IsMember(appID, consensus.OnlineChannel, onlineMember(id).UserID) {
			out = append(out, id)
		}
	}
	return out, nil
}

// userStatus tells this node's watchers of a committed change.
func (a *Adapter) userStatus(app string, m consensus.Member, online bool) {
	id, ok := onlineUserID(m)
	if !ok {
		return
	}
	if b := a.handler.Load(); b != nil {
		b.h.UserStatus(app, id, online)
	}
}

// hasLocal reports whether this node's connections back an entry of the
// replicated state: a member of a presence channel, or a signed-in user
// of the online channel.
func (a *Adapter) hasLocal(app, channel string, userID json.RawMessage) bool {
	if channel == consensus.OnlineChannel {
		id, ok := onlineUserID(consensus.Member{UserID: userID})
		return ok && a.local.IsSignedIn(app, id)
	}
	return a.local.HasLocalMember(app, channel, userID)
}

// reannounceUsers proposes every user signed in here.
func (a *Adapter) reannounceUsers(ctx context.Context) {
	for app, users := range a.local.SignedInUsers() {
		for _, id := range users {
			if ctx.Err() != nil {
				return
			}
			a.setOnline(ctx, app, id, true)
		}
	}
}
