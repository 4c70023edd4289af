package redisadapter

import (
	"context"
	"encoding/json"

	"github.com/soketi-go/soketi/pkg/pusher"
)

// Online users (watchlists) are members of onlineChannel in the shared
// state: a node records its first signed-in connection of a user and its
// last, with the presence scripts, so a user goes online and offline once
// over every node; the deciding node tells the others (a control message)
// and its own watchers.

// userKey is a user's member key: the id as a JSON string.
func userKey(id string) string {
	b, _ := json.Marshal(id)
	return string(b)
}

// SignIn records the user locally and, for its first connection here (or
// the last of the user the connection was signed in as), in Redis.
func (a *Adapter) SignIn(ctx context.Context, c *pusher.Conn, userID string) pusher.UserChange {
	uc := a.local.SignIn(ctx, c, userID)
	if uc.Offline != "" {
		a.setOnline(ctx, c.App.ID, uc.Offline)
	}
	if uc.Online != "" {
		a.setOnline(ctx, c.App.ID, uc.Online)
	}
	return pusher.UserChange{Announced: true}
}

// setOnline writes this node's online entry for a user from local truth
// and announces a transition; a failed write is resynced later.
func (a *Adapter) setOnline(ctx context.Context, app, userID string) {
	if err := a.syncUser(ctx, app, userID); err != nil {
		a.mu.Lock()
		a.dirtyUsers[chanKey{app, userID}] = struct{}{}
		a.mu.Unlock()
	}
}

func (a *Adapter) syncUser(ctx context.Context, app, userID string) error {
	key := userKey(userID)
	if a.local.IsSignedIn(app, userID) {
		added, err := a.join(ctx, app, onlineChannel, pusher.Member{UserID: json.RawMessage(key)}, 0)
		if err == nil && added {
			a.announceUser(ctx, app, userID, true)
		}
		return err
	}
	removed, err := a.leave(ctx, app, onlineChannel, key)
	if err == nil && removed {
		a.announceUser(ctx, app, userID, false)
	}
	return err
}

// OnlineUsers reads the shared state: the state whose changes every node
// announces, so a watcher's first event and the changes after it agree.
func (a *Adapter) OnlineUsers(ctx context.Context, appID string, ids []string) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	fields := make([]string, len(ids))
	for i, id := range ids {
		fields[i] = userKey(id)
	}
	ctx, cancel := a.op(ctx)
	defer cancel()
	vals, err := a.rdb.HMGet(ctx, a.k.members(appID, onlineChannel), fields...).Result()
	if err != nil {
		return a.local.OnlineUsers(ctx, appID, ids)
	}
	var out []string
	for i, v := range vals {
		if v != nil {
			out = append(out, ids[i])
		}
	}
	return out, nil
}

// announceUser tells every node's watchers, this node's at once.
func (a *Adapter) announceUser(ctx context.Context, app, userID string, online bool) {
	if h := a.handlerOf(); h != nil {
		h.UserStatus(app, userID, online)
	}
	a.control(ctx, control{Type: ctlUser, App: app, User: userID, Online: online})
}
