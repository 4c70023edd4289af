package pusher

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"

	"github.com/soketi-go/soketi/internal/jsonx"
)

// Watchlists: a connection that signs in with a "watchlist" in its user
// data is told when those users go online or offline, as Pusher does
// (pusher_internal:watchlist_events, which pusher-js gives to
// pusher.user.watchlist). A user is online while at least one of their
// signed-in connections is open, on any node; the adapter decides the
// changes (in a cluster, in the replicated state) and the server tells the
// watchers on this node.

// MaxWatchlistLength is Pusher's limit on a watchlist's ids; a sign-in with
// a longer one is refused.
const MaxWatchlistLength = 100

// watchers indexes this node's signed-in connections by the users they
// watch. One lock orders each connection's first event (the watched users'
// state at sign-in) with the changes that follow it.
type watchers struct {
	mu    sync.Mutex
	byApp map[string]map[string]map[*Conn]struct{} // app → watched user → watchers
	lists map[*Conn][]string
}

func newWatchers() *watchers {
	return &watchers{byApp: map[string]map[string]map[*Conn]struct{}{}, lists: map[*Conn][]string{}}
}

// watch replaces c's watchlist and sends c the state of every id in it:
// one online and one offline event (an empty one is left out).
func (w *watchers) watch(ctx context.Context, c *Conn, ids []string, adapter Adapter) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.unwatchLocked(c)
	if len(ids) == 0 || c.isClosed() {
		// Closed unwatches after it marks c closed: a list added now
		// would never be removed.
		return nil
	}
	app := c.App.ID
	users := w.byApp[app]
	if users == nil {
		users = map[string]map[*Conn]struct{}{}
		w.byApp[app] = users
	}
	for _, id := range ids {
		set := users[id]
		if set == nil {
			set = map[*Conn]struct{}{}
			users[id] = set
		}
		set[c] = struct{}{}
	}
	w.lists[c] = ids
	// Read under the lock: a change decided after this read reaches c
	// after this event, never before it.
	online, err := adapter.OnlineUsers(ctx, app, ids)
	if err != nil {
		return err
	}
	isOnline := make(map[string]bool, len(online))
	for _, id := range online {
		isOnline[id] = true
	}
	var offline []string
	for _, id := range ids {
		if !isOnline[id] {
			offline = append(offline, id)
		}
	}
	c.sendJSON(watchlistEventsJSON(online, offline))
	return nil
}

// unwatch forgets c's watchlist.
func (w *watchers) unwatch(c *Conn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.unwatchLocked(c)
}

func (w *watchers) unwatchLocked(c *Conn) {
	ids, ok := w.lists[c]
	if !ok {
		return
	}
	delete(w.lists, c)
	users := w.byApp[c.App.ID]
	for _, id := range ids {
		if set := users[id]; set != nil {
			delete(set, c)
			if len(set) == 0 {
				delete(users, id)
			}
		}
	}
	if len(users) == 0 {
		delete(w.byApp, c.App.ID)
	}
}

// notify tells the watchers of user that it went online or offline.
func (w *watchers) notify(app, user string, online bool) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	set := w.byApp[app][user]
	if len(set) == 0 {
		return 0
	}
	var f []byte
	if online {
		f = watchlistEventsJSON([]string{user}, nil)
	} else {
		f = watchlistEventsJSON(nil, []string{user})
	}
	for c := range set {
		c.sendJSON(f)
	}
	return len(set)
}

// watchlistEventsJSON is pusher_internal:watchlist_events with an online
// and an offline event, each left out when it has no id.
func watchlistEventsJSON(online, offline []string) []byte {
	data := []byte(`{"events":[`)
	add := func(name string, ids []string) {
		if len(ids) == 0 {
			return
		}
		if data[len(data)-1] == '}' {
			data = append(data, ',')
		}
		data = append(data, `{"name":"`...)
		data = append(data, name...)
		data = append(data, `","user_ids":[`...)
		for i, id := range ids {
			if i > 0 {
				data = append(data, ',')
			}
			data = appendJSONString(data, id)
		}
		data = append(data, "]}"...)
	}
	add("online", online)
	add("offline", offline)
	data = append(data, "]}"...)
	b := append([]byte(nil), `{"event":"pusher_internal:watchlist_events","data":`...)
	b = jsonx.AppendQuoted(b, data)
	return append(b, '}')
}

// parseWatchlist reads the "watchlist" of signed user data: user ids as
// strings or numbers, at most MaxWatchlistLength, duplicates dropped.
// ok is false for any other shape.
func parseWatchlist(raw json.RawMessage) (ids []string, ok bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, true
	}
	var list []any
	if json.Unmarshal(raw, &list) != nil || len(list) > MaxWatchlistLength {
		return nil, false
	}
	seen := make(map[string]bool, len(list))
	for _, v := range list {
		var id string
		switch v := v.(type) {
		case string:
			id = v
		case float64:
			id = strconv.FormatFloat(v, 'f', -1, 64)
		}
		if id == "" {
			return nil, false
		}
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	return ids, true
}
