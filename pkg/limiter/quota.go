package limiter

import (
	"sync"
	"time"
)

// WindowOf is the id of the fixed one-second window holding t: whole
// seconds since the Unix epoch, so every clock agrees on the boundaries
// up to its own offset.
func WindowOf(t time.Time) int64 {
	ns := t.UnixNano()
	w := ns / int64(Window)
	if ns < 0 && ns%int64(Window) != 0 {
		w-- // floor, not truncation, before 1970
	}
	return w
}

// windowEnd is the instant window w ends.
func windowEnd(w int64) time.Time { return time.Unix(0, (w+1)*int64(Window)) }

// Ask is a node's request to the master for tokens of one (app, key) quota.
// It names the app by id only: no secret ever crosses the network.
type Ask struct {
	ID    uint64 `json:"id"`
	App   string `json:"app"` // empty: a probe, answered with no tokens
	Key   string `json:"key"`
	Limit int    `json:"limit"` // the app's limit as this node read it
	Want  int    `json:"want"`  // tokens the node expects to spend over the next Horizon
	Need  int    `json:"need"`  // tokens a waiting request needs now; 0 when asking ahead
}

// GrantStatus says how a node must fund the current window.
type GrantStatus string

const (
	// GrantLease: Tokens of Window are the node's to spend until it ends.
	GrantLease GrantStatus = "lease"
	// GrantShare: the master will not grant in this window (it became
	// master during it, or its key table is full); the node spends its
	// local share until the window ends.
	GrantShare GrantStatus = "share"
	// GrantNotMaster: the asked node does not lead; ask the new master.
	GrantNotMaster GrantStatus = "not_master"
)

// Grant answers an Ask.
type Grant struct {
	ID     uint64      `json:"id"`
	App    string      `json:"app"`
	Key    string      `json:"key"`
	Status GrantStatus `json:"status"`
	Window int64       `json:"window"`
	Tokens int         `json:"tokens"`
	Left   int         `json:"left"` // tokens still ungranted in Window after this grant
	// EndsIn is the time left in Window on the master's clock when it
	// answered. The node adds it to the instant it sent the Ask, so its
	// lease ends no later than the master's window, whatever the clocks say.
	EndsIn time.Duration `json:"ends_in"`
}

// maxQuotaNodes bounds the nodes tracked per quota key; an ask from one
// more node is answered with GrantShare.
const maxQuotaNodes = 1024

// Quota is the master's side: for each (app, key) the points granted in the
// current window. It holds no state a new master needs (see DESIGN.md): a
// master never grants in the window in which its term started.
type Quota struct {
	mu        sync.Mutex
	maxKeys   int
	leading   bool
	fence     int64 // first window this term may grant in
	keys      map[windowKey]*quotaKey
	lastSweep int64
}

type quotaKey struct {
	window  int64
	granted int
	nodes   map[string]int64 // node → last window it asked in
}

// NewQuota returns a Quota tracking at most maxKeys keys (DefaultMaxKeys if ≤ 0).
func NewQuota(maxKeys int) *Quota {
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	return &Quota{maxKeys: maxKeys, keys: make(map[windowKey]*quotaKey)}
}

// Lead records whether this node leads at now. A term that starts forgets
// everything and fences its first window: the previous master may have
// granted all of it, and leases live until their window ends.
func (q *Quota) Lead(leading bool, now time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if leading == q.leading {
		return
	}
	q.leading = leading
	clear(q.keys)
	if leading {
		q.fence = WindowOf(now) + 1
	}
}

// Serve answers node's ask at now.
func (q *Quota) Serve(node string, a Ask, now time.Time) Grant {
	g := Grant{ID: a.ID, App: a.App, Key: a.Key, Status: GrantNotMaster}
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.leading {
		return g
	}
	w := WindowOf(now)
	g.Window, g.EndsIn = w, windowEnd(w).Sub(now)
	g.Status = GrantShare
	if w < q.fence {
		return g
	}
	g.Status = GrantLease
	if a.App == "" {
		return g
	}
	if w > q.lastSweep {
		q.sweep(w)
	}
	k := q.keys[windowKey{a.App, a.Key}]
	if k == nil {
		if len(q.keys) >= q.maxKeys {
			g.Status = GrantShare
			return g
		}
		k = &quotaKey{window: w, nodes: make(map[string]int64)}
		q.keys[windowKey{a.App, a.Key}] = k
	}
	if k.window != w {
		k.window, k.granted = w, 0
		for n, last := range k.nodes {
			if last < w-1 {
				delete(k.nodes, n)
			}
		}
	}
	if _, ok := k.nodes[node]; !ok && len(k.nodes) >= maxQuotaNodes {
		g.Status = GrantShare
		return g
	}
	k.nodes[node] = w
	left := max(a.Limit-k.granted, 0)
	give := grantSize(left, len(k.nodes), a.Want, a.Need)
	k.granted += give
	g.Tokens, g.Left = give, left-give
	return g
}

// grantSize is how many of the left tokens one ask gets: what the node
// wants, but no more than an even split of what is left among the nodes
// active in this window or the last, so a busy node asking first cannot
// starve the others; always at least what a waiting request needs, and
// nothing if even that is not left.
func grantSize(left, active, want, need int) int {
	if left <= 0 || need > left {
		return 0
	}
	active = max(active, 1)
	fair := (left + active - 1) / active
	return min(max(min(max(want, 1), fair), need), left)
}

// sweep drops keys not asked for in this window or the last. Caller holds q.mu.
func (q *Quota) sweep(w int64) {
	q.lastSweep = w
	for k, v := range q.keys {
		if v.window < w-1 {
			delete(q.keys, k)
		}
	}
}

// Keys is the number of keys tracked.
func (q *Quota) Keys() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.keys)
}
