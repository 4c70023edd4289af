//go:build netns && chaos && linux

package netnstest

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// The checks of a chaos run, once the load stopped and the cluster settled.
// None of them stops at the first problem: each records violations, and
// summary prints them all, by category, with the sockets, users, nodes
// and faults involved.

type violation struct {
	cat string
	msg string
}

func (r *chaosRun) violate(cat, format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.violations = append(r.violations, violation{cat, fmt.Sprintf(format, args...)})
}

// faultsNear names the faults whose window [start, recovered] comes within
// margin of [from, to].
func (r *chaosRun) faultsNear(from, to time.Time, margin time.Duration) string {
	var out []string
	for _, f := range r.faults {
		if f.start.Before(to.Add(margin)) && r.faultyUntil(f).After(from.Add(-margin)) {
			out = append(out, fmt.Sprintf("%s %s–%s", f, r.rel(f.start), r.rel(f.recoveredAt)))
		}
	}
	if len(out) == 0 {
		return "no fault near"
	}
	return "faults: " + strings.Join(out, ", ")
}

// faultyUntil is the end of a fault's window: when the group agreed on a
// leader again, or forever when it never did.
func (r *chaosRun) faultyUntil(f *chaosFault) time.Time {
	if f.recoveredAt.IsZero() {
		return time.Now().Add(time.Hour)
	}
	return f.recoveredAt
}

// nodeFaulty reports whether node i had a fault overlapping [from, to].
func (r *chaosRun) nodeFaulty(i int, from, to time.Time) bool {
	for _, f := range r.faults {
		if f.node == i && !f.start.After(to) && !r.faultyUntil(f).Before(from) {
			return true
		}
	}
	return false
}

type sockEvent struct {
	idx int
	event
}

func (e sockEvent) at() time.Time { return time.UnixMilli(e.T) }

// snapshot buckets every event received so far by client id.
func (r *chaosRun) snapshot() map[string][]sockEvent {
	out := map[string][]sockEvent{}
	r.cl.mu.Lock()
	defer r.cl.mu.Unlock()
	for k, ev := range r.cl.events {
		out[ev.ID] = append(out[ev.ID], sockEvent{k, ev})
	}
	return out
}

func stateOf(ev sockEvent) string {
	var d struct {
		Current string `json:"current"`
	}
	_ = json.Unmarshal(ev.Data, &d)
	return d.Current
}

func userOf(ev sockEvent) string {
	var d struct {
		UserID string `json:"user_id"`
	}
	_ = json.Unmarshal(ev.Data, &d)
	return d.UserID
}

func presenceIDs(ev sockEvent) (ids []string, count int) {
	var d struct {
		Presence struct {
			Count int      `json:"count"`
			IDs   []string `json:"ids"`
		} `json:"presence"`
	}
	_ = json.Unmarshal(ev.Data, &d)
	return d.Presence.IDs, d.Presence.Count
}

// subscribedNow is the client's own view: connected, with a
// subscription_succeeded for channel on the current connection.
func subscribedNow(evs []sockEvent, channel string) (ok bool, state string) {
	conn, sub := false, false
	state = "initialized"
	for _, ev := range evs {
		switch {
		case ev.Event == "state":
			state = stateOf(ev)
			conn, sub = state == "connected", false
		case ev.Channel != channel:
		case ev.Event == "pusher_internal:subscription_succeeded":
			sub = conn
		case ev.Event == "pusher:subscription_error":
			sub = false
			state += " (subscription_error)"
		}
	}
	return conn && sub, state
}

// lastError describes the socket's last subscription_error, if any.
func (r *chaosRun) lastError(evs []sockEvent) string {
	for k := len(evs) - 1; k >= 0; k-- {
		if evs[k].Event == "pusher:subscription_error" {
			return fmt.Sprintf("subscription_error at %s: %s", r.rel(evs[k].at()), evs[k].Data)
		}
	}
	return "no subscription_error"
}

func (s *chaosSock) channel() string {
	if s.kind == kindSub {
		return chaosNews
	}
	return chaosPresence
}

// settleSockets waits (bounded) until every socket the test holds joined
// is subscribed again on a live connection, then disconnects, and notes,
// those that are not.
func (r *chaosRun) settleSockets() {
	held := func() []*chaosSock {
		r.mu.Lock()
		defer r.mu.Unlock()
		var out []*chaosSock
		for _, s := range r.order {
			if !s.dropped && s.joined {
				out = append(out, s)
			}
		}
		return out
	}()
	var ev map[string][]sockEvent
	var behind []*chaosSock
	took, _ := poll(settleTimeout, func() bool {
		ev, behind = r.snapshot(), nil
		waiting := 0
		for _, s := range held {
			ok, state := subscribedNow(ev[s.id], s.channel())
			if !ok {
				behind = append(behind, s)
				// A subscription refused on the current connection stays
				// refused: pusher-js does not retry it.
				if state != "connected (subscription_error)" {
					waiting++
				}
			}
		}
		return waiting == 0
	})
	r.t.Logf("CHAOS sockets settled in %s: %d held, %d not subscribed", took.Round(time.Millisecond), len(held), len(behind))
	for _, s := range behind {
		_, state := subscribedNow(ev[s.id], s.channel())
		r.note("unsettled: %s (%s, node %d, user %q) is %s at the end (%s); disconnected and left out of the model",
			s.id, s.kind, s.node, s.user, state, r.lastError(ev[s.id]))
		r.dropSock(s, "unsettled at the end: "+state)
	}
}

// disconnectCheck: an established connection lost while its node had no
// fault near (2 s before to 1 s after) is a violation, with the close code
// pusher-js reported. Disconnects the test asked for are not counted.
func (r *chaosRun) disconnectCheck(ev map[string][]sockEvent) (lost, unexplained int) {
	r.mu.Lock()
	socks := slices.Clone(r.order)
	r.mu.Unlock()
	for _, s := range socks {
		connected := false
		var code any
		for _, e := range ev[s.id] {
			switch e.Event {
			case "error":
				var d struct {
					Type string `json:"type"`
					Code any    `json:"code"`
				}
				_ = json.Unmarshal(e.Data, &d)
				if connected && d.Type == "PusherError" {
					code = d.Code
				}
			case "state":
				st := stateOf(e)
				if connected && st != "connected" && (st != "disconnected" || code != nil) {
					lost++
					if !r.nodeFaulty(s.node, e.at().Add(-2*time.Second), e.at().Add(time.Second)) {
						unexplained++
						r.violate("disconnect-without-fault", "%s (%s on n%d, user %q) lost its connection at %s (close code %v, now %s) with no fault on its node; %s",
							s.id, s.kind, s.node, s.user, r.rel(e.at()), code, st, r.faultsNear(e.at(), e.at(), 5*time.Second))
					}
				}
				connected, code = st == "connected", nil
			}
		}
	}
	return lost, unexplained
}

// truth is the set of users of the presence sockets that are really joined.
func (r *chaosRun) truth(ev map[string][]sockEvent) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	for _, s := range r.order {
		if (s.kind == kindChurn || s.kind == kindWatcher) && !s.dropped && s.joined {
			if ok, _ := subscribedNow(ev[s.id], chaosPresence); ok {
				seen[s.user] = true
			}
		}
	}
	return slices.Sorted(func(yield func(string) bool) {
		for u := range seen {
			if !yield(u) {
				return
			}
		}
	})
}

func diff(got, want []string) (extra, missing []string) {
	for _, u := range got {
		if !slices.Contains(want, u) {
			extra = append(extra, u)
		}
	}
	for _, u := range want {
		if !slices.Contains(got, u) {
			missing = append(missing, u)
		}
	}
	return extra, missing
}

// history describes a user's sockets: where, and how each ended.
func (r *chaosRun) history(user string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, s := range r.order {
		if s.user != user {
			continue
		}
		state := "held"
		switch {
		case s.dropped:
			state = "dropped: " + s.why
		case !s.joined && s.leftMark >= 0:
			state = "left"
		case !s.joined:
			state = "never joined"
		}
		out = append(out, fmt.Sprintf("%s on n%d opened %s %s", s.id, s.node, r.rel(s.opened), state))
	}
	if len(out) == 0 {
		return "no socket"
	}
	return strings.Join(out, "; ")
}

type usersResult struct {
	truth     []string // the joined users the last comparison used
	took      time.Duration
	converged bool
	ghosts    int // users listed but not connected, summed over nodes
	missing   int
}

// usersCheck (check 1, REST) waits until every node's /users equals the
// truth and records each node's difference when it does not.
func (r *chaosRun) usersCheck() usersResult {
	bound := nodeTimeout + reapDelay + settleTimeout
	last := make([][]string, 3)
	errs := make([]error, 3)
	var truth []string
	took, ok := poll(bound, func() bool {
		// The truth is taken afresh each time: a socket pusher-js
		// reconnects meanwhile changes it.
		truth = r.truth(r.snapshot())
		same := true
		for i := range 3 {
			last[i], errs[i] = users(r.c.nodes[i], chaosPresence)
			if errs[i] != nil || !slices.Equal(last[i], truth) {
				same = false
			}
		}
		return same
	})
	res := usersResult{truth: truth, took: took, converged: ok}
	r.t.Logf("CHAOS /users on every node equal to the %d joined users: %v after %s", len(truth), ok, took.Round(time.Millisecond))
	if ok {
		return res
	}
	for i := range 3 {
		if errs[i] != nil {
			r.violate("users-error", "node %d: GET /users: %v", i, errs[i])
			continue
		}
		extra, missing := diff(last[i], truth)
		res.ghosts += len(extra)
		res.missing += len(missing)
		for _, u := range extra {
			r.violate("ghost", "node %d /users lists %s, which has no joined socket (after %s); its sockets: %s", i, u, bound, r.history(u))
		}
		for _, u := range missing {
			r.violate("missing", "node %d /users lacks %s, which is joined (after %s); its sockets: %s", i, u, bound, r.history(u))
		}
	}
	return res
}

// quiet waits (bounded) until no frame arrived on channel for 1.5 s, so
// that counts taken afterwards are final.
func (r *chaosRun) quiet(channel string, bound time.Duration) {
	lastSeen := func() time.Time {
		r.cl.mu.Lock()
		defer r.cl.mu.Unlock()
		for k := len(r.cl.events) - 1; k >= 0; k-- {
			if r.cl.events[k].Channel == channel {
				return time.UnixMilli(r.cl.events[k].T)
			}
		}
		return time.Time{}
	}
	poll(bound, func() bool { return time.Since(lastSeen()) > 1500*time.Millisecond })
}

type presenceStats struct {
	sockets, epochs, events int
	byCat                   map[string]int // per category, watchers only
	churnByCat              map[string]int
	finalChecked            int
	finalWrong              int
}

// presenceCheck (check 2) replays each presence socket's frames: every
// subscription_succeeded starts a list, member_added and member_removed
// change it. Within a subscription, a member event before
// subscription_succeeded, an add of a listed user, a remove of an unlisted
// user or of the socket's own user are violations. For the watchers held
// at the end, the list must equal the truth. Churn sockets are replayed
// too (up to their leave), their findings counted apart.
func (r *chaosRun) presenceCheck(ev map[string][]sockEvent, truth []string) presenceStats {
	st := presenceStats{byCat: map[string]int{}, churnByCat: map[string]int{}}
	for _, kind := range []sockKind{kindWatcher, kindChurn} {
		for _, s := range r.socksOf(kind) {
			st.sockets++
			r.replayPresence(s, ev[s.id], truth, &st)
		}
	}
	return st
}

func (r *chaosRun) replayPresence(s *chaosSock, evs []sockEvent, truth []string, st *presenceStats) {
	r.mu.Lock()
	leftMark, held := s.leftMark, !s.dropped && s.joined
	r.mu.Unlock()
	who := fmt.Sprintf("%s (%s on n%d, user %s)", s.id, s.kind, s.node, s.user)
	var list map[string]bool // nil outside a subscription
	conns, subs := 0, 0
	var connectedAt, subscribedAt time.Time
	// Member events before subscription_succeeded are reported once per
	// connection, with the users they named.
	var early []string
	var earlyAt sockEvent
	flushEarly := func() {
		if len(early) == 0 {
			return
		}
		if s.kind == kindWatcher {
			st.byCat["before-succeeded"] += len(early)
		} else {
			st.churnByCat["before-succeeded"] += len(early)
		}
		cat := "before-succeeded"
		if s.kind != kindWatcher {
			cat = "churn-" + cat
		}
		r.violate(cat, "%s connection %d (connected %s, subscribed %s): %d member events before subscription_succeeded, from %s: %s; %s",
			who, conns, r.rel(connectedAt), r.rel(subscribedAt), len(early), r.rel(earlyAt.at()), strings.Join(early, " "),
			r.faultsNear(earlyAt.at(), earlyAt.at(), 2*time.Second))
		early = nil
	}
	report := func(cat string, ev sockEvent, format string, args ...any) {
		if s.kind == kindWatcher {
			st.byCat[cat]++
		} else {
			st.churnByCat[cat]++
			cat = "churn-" + cat
		}
		r.violate(cat, "%s connection %d (connected %s, subscribed %s): %s at %s; %s", who, conns,
			r.rel(connectedAt), r.rel(subscribedAt), fmt.Sprintf(format, args...), r.rel(ev.at()),
			r.faultsNear(ev.at(), ev.at(), 2*time.Second))
	}
	for _, ev := range evs {
		if leftMark >= 0 && ev.idx >= leftMark {
			break
		}
		switch {
		case ev.Event == "state":
			flushEarly()
			list, subscribedAt = nil, time.Time{}
			if stateOf(ev) == "connected" {
				conns++
				connectedAt = ev.at()
			}
		case ev.Channel != chaosPresence:
		case ev.Event == "pusher_internal:subscription_succeeded":
			subs++
			st.epochs++
			subscribedAt = ev.at()
			flushEarly()
			ids, count := presenceIDs(ev)
			list = map[string]bool{}
			for _, u := range ids {
				if list[u] {
					report("dup-in-list", ev, "subscription_succeeded lists %s twice", u)
				}
				list[u] = true
			}
			if count != len(ids) {
				report("bad-count", ev, "subscription_succeeded count %d for %d ids", count, len(ids))
			}
			if !list[s.user] {
				report("own-not-listed", ev, "subscription_succeeded does not list its own user")
			}
		case ev.Event == memberAdded || ev.Event == memberRemoved:
			st.events++
			u := userOf(ev)
			name := strings.TrimPrefix(ev.Event, "pusher_internal:")
			switch {
			case list == nil:
				if len(early) == 0 {
					earlyAt = ev
				}
				early = append(early, name+":"+u)
			case ev.Event == memberAdded && list[u]:
				report("dup-add", ev, "member_added %s, already listed", u)
			case ev.Event == memberAdded:
				list[u] = true
			case u == s.user:
				report("own-remove", ev, "member_removed of its own user while subscribed")
			case !list[u]:
				report("spurious-remove", ev, "member_removed %s, not listed", u)
			default:
				delete(list, u)
			}
		}
	}
	flushEarly()
	if s.kind != kindWatcher || !held {
		return
	}
	st.finalChecked++
	if list == nil {
		st.finalWrong++
		r.violate("watcher-final", "%s: not subscribed at the end (%d connections, %d subscriptions)", who, conns, subs)
		return
	}
	got := slices.Sorted(func(yield func(string) bool) {
		for u := range list {
			if !yield(u) {
				return
			}
		}
	})
	if extra, missing := diff(got, truth); len(extra)+len(missing) > 0 {
		st.finalWrong++
		r.violate("watcher-final", "%s, subscribed since %s (connection %d): its replayed list has ghosts %v and lacks %v",
			who, r.rel(subscribedAt), conns, extra, missing)
	}
}

type freshResult struct{ ghosts, missing, failed int }

// freshCheck (check 1, clients) joins a fresh socket on each node in turn
// and compares its subscription_succeeded list with the truth (other
// fresh users aside).
func (r *chaosRun) freshCheck(truth []string) freshResult {
	var res freshResult
	for i := range 3 {
		s := r.newSock(kindFresh, i, r.gen[i], "")
		var rep reply
		err := r.connectSock(s)
		if err == nil {
			rep, err = r.subscribeSock(s, chaosPresence)
		}
		if err != nil {
			res.failed++
			r.violate("fresh-failed", "fresh subscriber on node %d: %v", i, err)
			r.dropSock(s, "fresh check failed")
			continue
		}
		got := slices.DeleteFunc(slices.Clone(rep.IDs), func(u string) bool { return strings.HasPrefix(u, "fresh-") })
		sort.Strings(got)
		if !slices.Contains(rep.IDs, s.user) {
			r.violate("fresh-ghost", "fresh subscriber on node %d: its own user is not in its list", i)
		}
		extra, missing := diff(got, truth)
		res.ghosts += len(extra)
		res.missing += len(missing)
		for _, u := range extra {
			r.violate("fresh-ghost", "fresh subscriber on node %d is told %s is present, which has no joined socket; its sockets: %s", i, u, r.history(u))
		}
		for _, u := range missing {
			r.violate("fresh-missing", "fresh subscriber on node %d is not told of %s, which is joined; its sockets: %s", i, u, r.history(u))
		}
		r.dropSock(s, "fresh check done")
	}
	return res
}

type publishStats struct {
	sent, acked, unsentOrFailed int
	expected, delivered, lost   int
	dupHealthy, dupOther        int
	unackedDelivered            int
	// Publishes acknowledged through a node during its own fault (by kind),
	// and those of them no healthy subscriber on another node received.
	ackedInFault, undeliveredInFault map[string]int
	latencies                        []float64 // ms, healthy deliveries
	lostByPair                       map[string][]string
}

// subWindow is one subscription of a subscriber, by the client's clock.
type subWindow struct{ from, to time.Time } // to is zero while open

// publishCheck (check 3): no acknowledged publish is lost or duplicated at
// subscribers of healthy nodes.
//
// A publish p (HTTP 200, request sent at tp through node v) is expected at
// subscriber s on node j when the pair is healthy: neither v nor j had a
// fault whose window [fault start, the group agreeing on a leader again]
// overlaps [tp − 1 s, tp + deliveryTimeout]; and s itself was subscribed
// on one connection over that whole interval (so a reconnect or a drop of
// s excuses it). An expected publish must arrive exactly once. A publish
// received twice on one socket is a duplicate whatever the faults: no
// fault excuses a second delivery.
func (r *chaosRun) publishCheck() publishStats {
	r.quiet(chaosNews, 10*time.Second)
	ev := r.snapshot()
	st := publishStats{lostByPair: map[string][]string{}, ackedInFault: map[string]int{}, undeliveredInFault: map[string]int{}}
	r.mu.Lock()
	pubs := make([]chaosPub, len(r.pubs))
	for k, p := range r.pubs {
		pubs[k] = *p
	}
	r.mu.Unlock()
	acked := map[string]bool{}
	for _, p := range pubs {
		st.sent++
		if p.status == 200 {
			st.acked++
			acked[p.id] = true
		} else {
			st.unsentOrFailed++
		}
	}
	type subView struct {
		s    *chaosSock
		wins []subWindow
		got  map[string][]time.Time
	}
	var subs []subView
	for _, s := range r.socksOf(kindSub) {
		v := subView{s: s, got: map[string][]time.Time{}}
		conn := false
		for _, e := range ev[s.id] {
			switch {
			case e.Event == "state":
				if n := len(v.wins); n > 0 && v.wins[n-1].to.IsZero() {
					v.wins[n-1].to = e.at()
				}
				conn = stateOf(e) == "connected"
			case e.Channel != chaosNews:
			case e.Event == "pusher_internal:subscription_succeeded" && conn:
				v.wins = append(v.wins, subWindow{from: e.at()})
			case e.Event == "msg":
				var id string
				_ = json.Unmarshal(e.Data, &id)
				v.got[id] = append(v.got[id], e.at())
			}
		}
		for id, at := range v.got {
			if !acked[id] {
				st.unackedDelivered++
				if len(at) > 1 {
					st.dupOther++
					r.violate("duplicate", "%s (n%d) received unacknowledged %s %d times", s.id, s.node, id, len(at))
				}
			}
		}
		subs = append(subs, v)
	}
	for _, p := range pubs {
		if p.status != 200 {
			continue
		}
		from, to := p.sent.Add(-healthBefore), p.sent.Add(deliveryTimeout)
		viaFault := r.faultOf(p.via, p.sent, p.done)
		// A publish its node acknowledged during its own fault: did any
		// healthy subscriber on another node get it?
		elsewhere, reached := 0, 0
		for _, v := range subs {
			s := v.s
			covered := slices.ContainsFunc(v.wins, func(w subWindow) bool {
				return !w.from.After(from) && (w.to.IsZero() || !w.to.Before(to))
			})
			subHealthy := covered && !r.nodeFaulty(s.node, from, to)
			healthy := subHealthy && !r.nodeFaulty(p.via, from, to)
			at := v.got[p.id]
			if subHealthy && s.node != p.via {
				elsewhere++
				if len(at) > 0 {
					reached++
				}
			}
			if len(at) > 1 {
				if healthy {
					st.dupHealthy++
				} else {
					st.dupOther++
				}
				r.violate("duplicate", "%s via n%d sent %s received %d times by %s (n%d), healthy pair %v; %s",
					p.id, p.via, r.rel(p.sent), len(at), s.id, s.node, healthy, r.faultsNear(from, to, 0))
			}
			if !healthy {
				continue
			}
			st.expected++
			if len(at) == 0 {
				st.lost++
				pair := fmt.Sprintf("n%d→n%d", p.via, s.node)
				st.lostByPair[pair] = append(st.lostByPair[pair], r.rel(p.sent))
				r.violate("lost", "%s via n%d sent %s (HTTP 200 after %s) never reached %s on n%d, subscribed since %s; %s",
					p.id, p.via, r.rel(p.sent), p.done.Sub(p.sent).Round(time.Millisecond), s.id, s.node,
					r.rel(v.wins[0].from), r.faultsNear(from, to, 5*time.Second))
				continue
			}
			st.delivered++
			st.latencies = append(st.latencies, float64(at[0].Sub(p.sent).Microseconds())/1000)
		}
		if viaFault != nil {
			st.ackedInFault[viaFault.kind]++
			if elsewhere > 0 && reached == 0 {
				st.undeliveredInFault[viaFault.kind]++
				if viaFault.kind == "term" {
					r.violate("acked-in-shutdown", "%s acknowledged by n%d %s during its graceful shutdown (%s), reached none of the %d healthy subscribers on other nodes",
						p.id, p.via, r.rel(p.sent), viaFault, elsewhere)
				}
			}
		}
	}
	return st
}

// faultOf is node i's fault overlapping [from, to] whose node was down,
// stopping or cut at the time (not merely re-forming), or nil.
func (r *chaosRun) faultOf(i int, from, to time.Time) *chaosFault {
	for _, f := range r.faults {
		end := f.end
		if end.IsZero() {
			end = time.Now()
		}
		if f.node == i && !f.start.After(to) && !end.Before(from) {
			return f
		}
	}
	return nil
}

// leaderCheck (check 4): after each fault ends, every running node names
// the same raft leader within leaderBound.
func (r *chaosRun) leaderCheck() {
	for _, f := range r.faults {
		switch {
		case f.end.IsZero():
			r.violate("leader", "%s never ended", f)
		case f.leaderAt.IsZero():
			r.violate("leader", "%s: no raft leader known to every node within %s of %s (ended %s); at %s: %s",
				f, leaderGiveUp, map[string]string{"kill": "the restart", "term": "the restart", "cut": "the heal"}[f.kind], r.rel(f.end),
				r.rel(f.viewsAt), f.views)
		case f.leaderAt.Sub(f.end) > leaderBound:
			r.violate("leader", "%s: a raft leader known to every node %s after it ended (%s), over %s; at %s: %s",
				f, f.leaderAt.Sub(f.end).Round(time.Millisecond), r.rel(f.end), leaderBound, r.rel(f.viewsAt), f.views)
		}
	}
}

func msStats(v []float64) string {
	if len(v) == 0 {
		return "n=0"
	}
	s := slices.Sorted(slices.Values(v))
	return fmt.Sprintf("p50 %.0f ms, p99 %.0f ms, max %.0f ms", percentile(s, 0.5), percentile(s, 0.99), s[len(s)-1])
}

// summary prints the run's figures, the fault timeline and every violation,
// and fails the test once per category.
func (r *chaosRun) summary(truth []string, users usersResult, ps presenceStats, fresh freshResult, pub publishStats, lost, unexplained int) {
	t := r.t
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "CHAOS TIMELINE (%s)\n", t.Name())
	fmt.Fprintf(tw, "fault\tnode id\tstart\tend\tleader after end\trecovered after end\tnote\n")
	var leaders []float64
	kinds := map[string]int{}
	for _, f := range r.faults {
		kinds[f.kind]++
		la, ra := "none", "never"
		if !f.leaderAt.IsZero() {
			la = f.leaderAt.Sub(f.end).Round(time.Millisecond).String()
			leaders = append(leaders, float64(f.leaderAt.Sub(f.end).Milliseconds()))
		}
		if !f.recoveredAt.IsZero() {
			ra = f.recoveredAt.Sub(f.end).Round(time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f, f.nodeID, r.rel(f.start), r.rel(f.end), la, ra, f.note)
	}
	tw.Flush()
	t.Logf("\n%s", b.String())

	cats := map[string][]string{}
	var order []string
	r.mu.Lock()
	for _, v := range r.violations {
		if _, ok := cats[v.cat]; !ok {
			order = append(order, v.cat)
		}
		cats[v.cat] = append(cats[v.cat], v.msg)
	}
	churn := r.churn
	notes := slices.Clone(r.notes)
	r.mu.Unlock()
	sort.Strings(order)

	leaderMax, leaderMed, over := "-", "-", 0
	if len(leaders) > 0 {
		s := slices.Sorted(slices.Values(leaders))
		leaderMax = fmt.Sprintf("%.0f ms", s[len(s)-1])
		leaderMed = fmt.Sprintf("%.0f ms", percentile(s, 0.5))
	}
	over = len(cats["leader"])
	lostPairs := []string{}
	for pair, at := range pub.lostByPair {
		lostPairs = append(lostPairs, fmt.Sprintf("%s: %d (%s–%s)", pair, len(at), at[0], at[len(at)-1]))
	}
	sort.Strings(lostPairs)

	b.Reset()
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	row := func(k string, format string, args ...any) {
		fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, args...))
	}
	fmt.Fprintf(tw, "CHAOS SUMMARY\t%s\n", t.Name())
	row("seed", "%d", r.seed)
	row("fault window", "%s (load %s)", r.cfg.duration, r.endedAt.Sub(r.start).Round(time.Second))
	row("faults applied", "%d (kill %d, term %d, cut %d)", len(r.faults), kinds["kill"], kinds["term"], kinds["cut"])
	row("publishes sent / acked (200)", "%d / %d", pub.sent, pub.acked)
	row("expected healthy deliveries", "%d", pub.expected)
	row("  delivered / lost", "%d / %d", pub.delivered, pub.lost)
	row("  lost by pair via→sub", "%s", strings.Join(lostPairs, "; "))
	row("  duplicated (healthy / other)", "%d / %d", pub.dupHealthy, pub.dupOther)
	row("  delivery latency", "%s", msStats(pub.latencies))
	row("acked by a node in its own fault", "%v; of them reached no healthy subscriber elsewhere: %v", pub.ackedInFault, pub.undeliveredInFault)
	row("churn", "connects %d (failed %d), joins %d (failed %d %v), leaves %d, disconnects %d",
		churn.connects, churn.connectFails, churn.joins, churn.joinFails, churn.joinFailStatus, churn.leaves, churn.disconnects)
	refused := 0
	for _, n := range notes {
		if strings.HasPrefix(n, "unsettled:") {
			refused++
		}
	}
	row("joined users at the end", "%d", len(truth))
	row("connections lost (no fault on the node)", "%d (%d)", lost, unexplained)
	row("sockets not subscribed again at the end", "%d (see the notes: pusher-js reconnected, the re-subscription failed)", refused)
	row("REST /users converged", "%v after %s", users.converged, users.took.Round(time.Millisecond))
	row("ghosts (listed, not connected)", "REST %d (sum over nodes), fresh subscribers %d", users.ghosts, fresh.ghosts)
	row("missing (connected, not listed)", "REST %d, fresh subscribers %d (fresh joins failed %d)", users.missing, fresh.missing, fresh.failed)
	row("presence replay", "%d sockets, %d subscriptions, %d member events", ps.sockets, ps.epochs, ps.events)
	row("  watchers: dup add / spurious remove / own remove / before succeeded",
		"%d / %d / %d / %d", ps.byCat["dup-add"], ps.byCat["spurious-remove"], ps.byCat["own-remove"], ps.byCat["before-succeeded"])
	row("  churn sockets: same", "%d / %d / %d / %d", ps.churnByCat["dup-add"], ps.churnByCat["spurious-remove"],
		ps.churnByCat["own-remove"], ps.churnByCat["before-succeeded"])
	row("  watchers wrong at the end", "%d of %d", ps.finalWrong, ps.finalChecked)
	row("leader after fault end", "max %s, median %s, over %s: %d", leaderMax, leaderMed, leaderBound, over)
	row("violations", "%d in %d categories", len(r.violations), len(order))
	row("notes", "%d", len(notes))
	tw.Flush()
	t.Logf("\n%s", b.String())

	for _, n := range notes {
		t.Logf("CHAOS note: %s", n)
	}
	const show = 25
	for _, cat := range order {
		msgs := cats[cat]
		var d strings.Builder
		for k, m := range msgs {
			if k == show {
				fmt.Fprintf(&d, "\n  … and %d more", len(msgs)-show)
				break
			}
			fmt.Fprintf(&d, "\n  %s", m)
		}
		t.Errorf("CHAOS VIOLATION %s: %d%s", cat, len(msgs), d.String())
	}
}
