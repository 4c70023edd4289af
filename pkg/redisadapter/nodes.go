package redisadapter

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"time"

	"github.com/soketi-go/soketi/pkg/pusher"
)

// Liveness: every node writes a deadline (now + NodeTTL) into the nodes
// hash each HeartbeatInterval, with its connection counts. A node whose
// deadline passed is reaped by whichever node sees it first: its entries
// go in one script per app, so its members leave and its channels vacate
// once, within NodeTTL plus a beat of its death. A node that finds its
// own entry gone (it was cut off that long, or Redis restarted empty)
// writes all of its local state again.

func (a *Adapter) beat() {
	t := time.NewTicker(a.cfg.HeartbeatInterval)
	defer t.Stop()
	reported := map[string]bool{} // apps whose socket count is in Redis
	for {
		a.beatOnce(reported)
		select {
		case <-a.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (a *Adapter) beatOnce(reported map[string]bool) {
	ctx, cancel := a.op(a.ctx)
	defer cancel()
	now := time.Now()
	deadline := now.Add(a.cfg.NodeTTL).UnixMilli()
	added, err := a.rdb.HSet(ctx, a.k.nodes(), a.cfg.NodeID, deadline).Result()
	if err != nil {
		if a.healthy.Swap(false) {
			a.log.Error("redis unreachable: serving this node's sockets, refusing presence joins (4302) until it answers", "err", err)
		}
		return
	}
	if !a.healthy.Swap(true) {
		a.log.Info("redis reachable")
	}
	if added == 1 {
		// Not in the shared state: a first start, a reap while cut off,
		// or an emptied Redis. Everything local is written again.
		if a.registered.Load() {
			a.log.Warn("this node's entries were gone from redis: writing its state again")
		}
		a.reannounce()
	}
	a.registered.Store(true)

	counts := a.local.AppSocketCounts()
	for app, n := range counts {
		if err := a.rdb.HSet(ctx, a.k.sockets(app), a.cfg.NodeID, n).Err(); err == nil {
			reported[app] = true
			_ = a.noteApp(ctx, app)
		}
	}
	for app := range reported {
		if counts[app] == 0 && a.rdb.HDel(ctx, a.k.sockets(app), a.cfg.NodeID).Err() == nil {
			delete(reported, app)
		}
	}

	nodes, err := a.rdb.HGetAll(ctx, a.k.nodes()).Result()
	if err != nil {
		return
	}
	var live []string
	for node, v := range nodes {
		d, _ := strconv.ParseInt(v, 10, 64)
		if d >= now.UnixMilli() || node == a.cfg.NodeID {
			live = append(live, node)
			continue
		}
		a.reapNode(ctx, node)
	}
	slices.Sort(live)
	a.mu.Lock()
	a.live = live
	a.mu.Unlock()
}

// reannounce queues every local channel and signed-in user for a resync.
func (a *Adapter) reannounce() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.apps = map[string]bool{}
	for _, ch := range a.local.LocalChannels() {
		a.dirty[chanKey{ch.App, ch.Channel}] = struct{}{}
	}
	for app, users := range a.local.SignedInUsers() {
		for _, u := range users {
			a.dirtyUsers[chanKey{app, u}] = struct{}{}
		}
	}
}

// reapNode removes every entry of node and announces what that changed.
func (a *Adapter) reapNode(ctx context.Context, node string) {
	apps, err := a.rdb.SMembers(ctx, a.k.nodeApps(node)).Result()
	if err != nil {
		return
	}
	h := a.handlerOf()
	for _, app := range apps {
		r, err := reapApp.Run(ctx, a.rdb, []string{a.k.nodeIdx(app, node), a.k.channels(app), a.k.sockets(app)},
			node, a.k.app(app)).Slice()
		if err != nil {
			a.warnf("reaping a dead node failed; another beat retries", "node", node, "app_id", app, "err", err)
			return
		}
		for _, item := range r {
			e, _ := item.([]any)
			str := func(i int) string {
				if i < len(e) {
					s, _ := e[i].(string)
					return s
				}
				return ""
			}
			switch str(0) {
			case "c":
				a.control(ctx, control{Type: ctlCount, App: app, Channel: str(1)})
				if h != nil {
					h.SubscriptionCountChanged(app, str(1))
				}
			case "v":
				if h != nil {
					h.Announce(ctx, app, pusher.Transition{Channel: str(1), Vacated: true, WebhooksOnly: true})
				}
			case "m":
				if str(1) == onlineChannel {
					var id string
					if json.Unmarshal([]byte(str(2)), &id) == nil {
						a.announceUser(ctx, app, id, false)
					}
					continue
				}
				if h != nil {
					m := pusher.Member{UserID: json.RawMessage(str(2))}
					if info := str(3); info != "" {
						m.UserInfo = json.RawMessage(info)
					}
					h.Announce(ctx, app, pusher.Transition{Channel: str(1), MemberRemoved: &m})
				}
			}
		}
	}
	if err := a.rdb.Del(ctx, a.k.nodeApps(node)).Err(); err == nil {
		a.rdb.HDel(ctx, a.k.nodes(), node)
	}
	if node != a.cfg.NodeID {
		a.log.Info("reaped a node that stopped beating", "node", node, "apps", len(apps))
	}
}

// resyncLoop makes the failed writes again, from local truth.
func (a *Adapter) resyncLoop() {
	t := time.NewTicker(resyncInterval)
	defer t.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-t.C:
		}
		if !a.healthy.Load() {
			continue
		}
		a.mu.Lock()
		chans, users := a.dirty, a.dirtyUsers
		a.dirty, a.dirtyUsers = map[chanKey]struct{}{}, map[chanKey]struct{}{}
		a.mu.Unlock()
		for k := range chans {
			if err := a.resync(a.ctx, k.app, k.name); err != nil {
				a.markDirty(k.app, k.name)
			}
		}
		for k := range users {
			a.setOnline(a.ctx, k.app, k.name)
		}
	}
}
