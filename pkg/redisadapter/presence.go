package redisadapter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/soketi-go/soketi/pkg/pusher"
)

var errLimit = errors.New("redisadapter: member limit")

// Subscribe joins c locally, then records in Redis this node's count of
// the channel and, for a user's first connection here, the member. The
// scripts decide the cluster-wide transitions; the server announces them
// (Announced is false), so each goes out once, from the deciding node.
func (a *Adapter) Subscribe(ctx context.Context, c *pusher.Conn, channel string, m *pusher.Member) (pusher.JoinResult, error) {
	app := c.App
	res, err := a.local.Subscribe(ctx, c, channel, m)
	if err != nil {
		return res, err
	}
	out := pusher.JoinResult{}
	if m != nil {
		if res.MemberAdded {
			added, err := a.join(ctx, app.ID, channel, *m, max(app.MaxPresenceMembersPerChannel, 0))
			if err != nil {
				_, _ = a.local.Unsubscribe(ctx, c, channel)
				a.markDirty(app.ID, channel) // the outcome may be unknown
				if errors.Is(err, errLimit) {
					return pusher.JoinResult{}, pusher.ErrMemberLimit
				}
				return pusher.JoinResult{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
			}
			out.MemberAdded = added
		}
		members, err := a.Members(ctx, app.ID, channel)
		if err != nil {
			members, _ = a.local.Members(ctx, app.ID, channel)
		}
		out.Members = members
	}
	t, err := a.writeCount(ctx, app.ID, channel)
	if err != nil {
		a.markDirty(app.ID, channel)
	}
	out.Occupied = t > 0
	a.countChanged(app, channel)
	return out, nil
}

// Unsubscribe leaves locally and records what changed here; a write that
// fails is made again from local truth (resync).
func (a *Adapter) Unsubscribe(ctx context.Context, c *pusher.Conn, channel string) (pusher.LeaveResult, error) {
	res, err := a.local.Unsubscribe(ctx, c, channel)
	if err != nil || !res.WasSubscribed {
		return res, err
	}
	app := c.App
	out := pusher.LeaveResult{WasSubscribed: true}
	if rm := res.RemovedMember; rm != nil {
		removed, err := a.leave(ctx, app.ID, channel, rm.Key())
		if err != nil {
			a.markDirty(app.ID, channel)
		} else if removed {
			out.RemovedMember = rm
		}
	}
	t, err := a.writeCount(ctx, app.ID, channel)
	if err != nil {
		a.markDirty(app.ID, channel)
	}
	out.Vacated = t < 0
	a.countChanged(app, channel)
	return out, nil
}

// writeCount records this node's subscriptions of a channel: 1 when that
// occupied it, -1 when it vacated it.
func (a *Adapter) writeCount(ctx context.Context, app, channel string) (int, error) {
	ctx, cancel := a.op(ctx)
	defer cancel()
	if err := a.noteApp(ctx, app); err != nil {
		return 0, err
	}
	n := a.local.SubscriptionCount(app, channel)
	return setCount.Run(ctx, a.rdb, []string{a.k.subs(app, channel), a.k.channels(app), a.k.nodeIdx(app, a.cfg.NodeID)},
		a.cfg.NodeID, n, channel).Int()
}

// join records a member's connection on this node: true when that added
// the user to the channel.
func (a *Adapter) join(ctx context.Context, app, channel string, m pusher.Member, limit int) (bool, error) {
	ctx, cancel := a.op(ctx)
	defer cancel()
	if err := a.noteApp(ctx, app); err != nil {
		return false, err
	}
	r, err := joinMember.Run(ctx, a.rdb,
		[]string{a.k.members(app, channel), a.k.mcount(app, channel), a.k.mnodes(app, channel), a.k.nodeIdx(app, a.cfg.NodeID)},
		a.cfg.NodeID, m.Key(), string(m.UserInfo), limit, channel).Slice()
	if err != nil {
		return false, err
	}
	switch code, _ := r[0].(int64); code {
	case -1:
		return false, errLimit
	case 1:
		return true, nil
	}
	return false, nil
}

// leave removes a member's connection on this node: true when that
// removed the user from the channel.
func (a *Adapter) leave(ctx context.Context, app, channel, user string) (bool, error) {
	ctx, cancel := a.op(ctx)
	defer cancel()
	r, err := leaveMember.Run(ctx, a.rdb, []string{a.k.members(app, channel), a.k.mcount(app, channel), a.k.mnodes(app, channel)},
		a.cfg.NodeID, user).Slice()
	if err != nil {
		return false, err
	}
	code, _ := r[0].(int64)
	return code == 1, nil
}

// noteApp records, once per app, that this node has entries in it, for
// the reaper.
func (a *Adapter) noteApp(ctx context.Context, app string) error {
	a.mu.Lock()
	known := a.apps[app]
	a.mu.Unlock()
	if known {
		return nil
	}
	if err := a.rdb.SAdd(ctx, a.k.nodeApps(a.cfg.NodeID), app).Err(); err != nil {
		return err
	}
	a.mu.Lock()
	a.apps[app] = true
	a.mu.Unlock()
	return nil
}

func (a *Adapter) markDirty(app, channel string) {
	a.mu.Lock()
	a.dirty[chanKey{app, channel}] = struct{}{}
	a.mu.Unlock()
}

// resync makes the shared state say what this node's sockets say for one
// channel, and announces the transitions that caused.
func (a *Adapter) resync(ctx context.Context, app, channel string) error {
	h := a.handlerOf()
	if pusher.KindOf(channel) == pusher.KindPresence {
		local, _ := a.local.Members(ctx, app, channel)
		mine, err := a.nodeMembers(ctx, app, channel)
		if err != nil {
			return err
		}
		here := map[string]bool{}
		for _, m := range local {
			here[m.Key()] = true
			if mine[m.Key()] {
				continue
			}
			added, err := a.join(ctx, app, channel, m, 0)
			if err != nil {
				return err
			}
			if added && h != nil {
				mm := m
				h.Announce(ctx, app, pusher.Transition{Channel: channel, MemberAdded: &mm})
			}
		}
		for user := range mine {
			if here[user] {
				continue
			}
			removed, err := a.leave(ctx, app, channel, user)
			if err != nil {
				return err
			}
			if removed && h != nil {
				h.Announce(ctx, app, pusher.Transition{Channel: channel, MemberRemoved: &pusher.Member{UserID: json.RawMessage(user)}})
			}
		}
	}
	t, err := a.writeCount(ctx, app, channel)
	if err != nil {
		return err
	}
	if t != 0 && h != nil {
		h.Announce(ctx, app, pusher.Transition{Channel: channel, Occupied: t > 0, Vacated: t < 0, WebhooksOnly: true})
	}
	return nil
}

// nodeMembers lists the users this node has recorded in a channel.
func (a *Adapter) nodeMembers(ctx context.Context, app, channel string) (map[string]bool, error) {
	ctx, cancel := a.op(ctx)
	defer cancel()
	out := map[string]bool{}
	prefix := a.cfg.NodeID + "\n"
	iter := a.rdb.HScan(ctx, a.k.mnodes(app, channel), 0, prefix+"*", 200).Iterator()
	for i := 0; iter.Next(ctx); i++ {
		if i%2 == 0 { // fields and values alternate
			out[strings.TrimPrefix(iter.Val(), prefix)] = true
		}
	}
	return out, iter.Err()
}
