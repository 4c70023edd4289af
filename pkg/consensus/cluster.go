package consensus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

const (
	// maxVoters is the voter count once at least five members are alive;
	// below that, three. Other members are non-voters: they replicate the
	// state (which is what a Pusher node needs) without slowing commits.
	maxVoters   = 5
	smallVoters = 3
	// promoteLag is how far behind the leader's last index a non-voter may
	// be and still be promoted.
	promoteLag = 64
	// promoteRetry is how soon the leader checks again a non-voter that
	// should be promoted once caught up.
	promoteRetry = 100 * time.Millisecond
	// peerRPCTimeout bounds status and reset calls made by the control loop.
	peerRPCTimeout = time.Second
	// logEvery rate-limits repeated warnings of the control loop.
	logEvery = 10 * time.Second
	// joinRecheck is how soon a node that a leader reached, but whose
	// configuration has not arrived yet, checks its registration again.
	joinRecheck = 20 * time.Millisecond
)

// controlState is owned by the control loop goroutine.
type controlState struct {
	leading   bool
	started   time.Time            // the discovery window runs from here
	goneSince map[string]time.Time // not alive since (first noticed here)
	left      map[string]bool      // left gracefully: no reap delay
	retryAt   map[string]time.Time // admission backoff per member
	lastLog   map[string]time.Time // per message key, for rate-limited logs
}

func (n *Node) tickInterval() time.Duration {
	return min(500*time.Millisecond, max(n.cfg.MasterTimeout/4, 50*time.Millisecond))
}

// controlLoop is the only goroutine that bootstraps, reconciles and wipes.
// It steps at once on a membership event or a leader change, and
// otherwise after the wait the previous step asked for (a tick, or less
// while a bootstrap is being agreed).
func (n *Node) controlLoop(ctx context.Context) {
	st := &controlState{
		started:   time.Now(),
		goneSince: map[string]time.Time{},
		left:      map[string]bool{},
		retryAt:   map[string]time.Time{},
		lastLog:   map[string]time.Time{},
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	events := n.members.Events()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			n.noteEvent(st, ev)
		case <-n.controlPoke:
		case req := <-n.resetReq:
			n.log.Warn("another raft group wins the merge: wiping raft state to join it",
				"from", req.From, "winner_servers", req.Servers)
			st.leading = false
			if err := n.wipe(); err != nil {
				n.log.Error("wipe raft state", "err", err)
			}
		case <-timer.C:
		}
		timer.Reset(n.step(ctx, st))
	}
}

func (n *Node) noteEvent(st *controlState, ev MemberEvent) {
	id := ev.Peer.ID
	if id == "" || id == n.cfg.NodeID {
		return
	}
	switch ev.Type {
	case PeerJoin, PeerUpdate:
		delete(st.goneSince, id)
		delete(st.left, id)
		delete(st.retryAt, id)
	case PeerLeft:
		st.left[id] = true
		if _, ok := st.goneSince[id]; !ok {
			st.goneSince[id] = time.Now()
		}
	case PeerDead:
		if _, ok := st.goneSince[id]; !ok {
			st.goneSince[id] = time.Now()
		}
	}
}

// step does one control pass and returns how long to wait for the next.
func (n *Node) step(ctx context.Context, st *controlState) time.Duration {
	tick := n.tickInterval()
	r := n.raft()
	if r == nil { // a wipe failed to re-open raft: retry
		if err := n.openRaft(); err != nil {
			n.warnEvery(st, "reopen", "re-open raft", "err", err)
		}
		return tick
	}
	servers, err := n.configuration()
	if err != nil {
		return tick
	}
	if len(servers) == 0 {
		st.leading = false
		return n.tryBootstrap(ctx, st, r)
	}
	if r.State() != raft.Leader {
		st.leading = false
		return tick
	}
	if !st.leading {
		// Act on the FSM only once it holds every entry of earlier terms.
		if err := r.Barrier(n.timing.Election).Error(); err != nil {
			return tick
		}
		st.leading = true
		n.log.Info("leading raft group", "term", r.CurrentTerm())
	}
	if n.reconcile(ctx, st, r) {
		return min(tick, promoteRetry)
	}
	return tick
}

// alive returns the alive peers with a raft address, this node included,
// sorted by id.
func (n *Node) alive() []Peer {
	var out []Peer
	self := false
	for _, p := range n.members.Alive() {
		if p.ID == n.cfg.NodeID {
			self = true
			p.RaftAddr = n.Addr()
		}
		if p.ID != "" && p.RaftAddr != "" {
			out = append(out, p)
		}
	}
	if !self {
		out = append(out, Peer{ID: n.cfg.NodeID, RaftAddr: n.Addr(), Incarnation: n.cfg.Incarnation})
	}
	slices.SortFunc(out, func(a, b Peer) int { return strings.Compare(a.ID, b.ID) })
	return slices.CompactFunc(out, func(a, b Peer) bool { return a.ID == b.ID })
}

// voterTarget is how many voters a group of alive members should have.
func voterTarget(alive int) int {
	if alive >= maxVoters {
		return maxVoters
	}
	return smallVoters
}

// reconcile aligns the raft configuration with the membership (leader
// only, like Consul's leader loop), on every control tick: alive members
// are admitted as non-voters (merging other groups), caught-up non-voters
// promoted while voters are missing, left members removed at once, dead
// non-voters after ReapDelay, and dead voters after ReapDelay only if
// enough voters remain or a non-voter was promoted in their place. Nodes
// gone from the membership are purged from the FSM with NodeGone. It
// reports whether a promotion is due but the candidate is not caught up
// yet, to be checked again soon.
func (n *Node) reconcile(ctx context.Context, st *controlState, r *raft.Raft) (promotionDue bool) {
	servers, err := n.configuration()
	if err != nil {
		return false
	}
	alive := n.alive()
	aliveByID := make(map[string]Peer, len(alive))
	for _, p := range alive {
		aliveByID[p.ID] = p
	}
	fsmNodes := n.fsm.Nodes()
	now := time.Now()

	known := make(map[string]bool, len(servers)+len(fsmNodes))
	for _, s := range servers {
		known[string(s.ID)] = true
	}
	for id := range fsmNodes {
		known[id] = true
	}
	for id := range known {
		if _, ok := aliveByID[id]; ok {
			delete(st.goneSince, id)
			delete(st.left, id)
		} else if _, ok := st.goneSince[id]; !ok {
			st.goneSince[id] = now
		}
	}
	for id := range st.goneSince { // bounded by the configuration and the FSM
		if !known[id] {
			delete(st.goneSince, id)
			delete(st.left, id)
		}
	}
	for id, at := range st.retryAt {
		if _, ok := aliveByID[id]; !ok || now.After(at) {
			delete(st.retryAt, id)
		}
	}

	voters := 0
	byID := make(map[string]raft.Server, len(servers))
	for _, s := range servers {
		byID[string(s.ID)] = s
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	target := voterTarget(len(alive))
	ours := serverIDs(servers)
	timeout := n.timing.Election * 4

	var candidates []Peer // alive non-voters, by id: who may be promoted
	admitted := false
	for _, p := range alive {
		s, in := byID[p.ID]
		switch {
		case in && string(s.Address) != p.RaftAddr:
			n.log.Info("raft address changed", "peer", p.ID, "old", string(s.Address), "new", p.RaftAddr)
			n.moveServer(r, s, p.RaftAddr)
		case in:
		case now.Before(st.retryAt[p.ID]):
		default:
			if n.admit(ctx, st, r, p, ours, timeout) {
				admitted = true
			} else {
				st.retryAt[p.ID] = now.Add(n.cfg.ReconcileInterval)
			}
		}
		if in && s.Suffrage != raft.Voter {
			candidates = append(candidates, p)
		}
	}
	// promote makes the first caught-up candidate a voter, at the address
	// the configuration has for it (an address change goes by moveServer).
	promote := func() bool {
		for len(candidates) > 0 {
			p := candidates[0]
			candidates = candidates[1:]
			addr := raft.ServerAddress(n.configuredAddr(raft.ServerID(p.ID)))
			if addr != "" && n.caughtUp(ctx, r, p) &&
				n.logFuture(r.AddVoter(raft.ServerID(p.ID), addr, 0, timeout), "promote to voter", p.ID) {
				voters++
				return true
			}
		}
		return false
	}
	for voters < target && promote() {
	}
	promotionDue = voters < target && (admitted || len(aliveNonVoters(alive, byID)) > 0)

	// A gone voter is removed only if the voters left still reach the
	// target, or after a caught-up non-voter was promoted in its place
	// (promote first, then remove); a left one is removed in any case
	// (scale-down). And never more than (voters−1)/2 voters in one pass,
	// so a removal cannot cost the quorum.
	peak, removed := voters, 0
	for _, s := range servers {
		id := string(s.ID)
		if id == n.cfg.NodeID || !n.gone(st, id, now) {
			continue
		}
		if s.Suffrage == raft.Voter && !n.reaped(st, id, now) {
			// A voter that left gracefully is most often being restarted
			// (a rolling deploy): kept for the reap delay, it is a voter
			// again the moment it is back, and a second restart meanwhile
			// does not find the group at two voters.
			continue
		}
		if s.Suffrage != raft.Voter {
			n.logFuture(r.RemoveServer(s.ID, 0, timeout), "remove non-voter", id)
			continue
		}
		if voters-1 < target {
			if promote() {
				peak++
			} else if !st.left[id] {
				n.infoEvery(st, "keep_"+id, "dead voter kept in the configuration: no caught-up member to promote in its place",
					"peer", id, "voters", voters, "target", target)
				continue
			}
		}
		if removed+1 > (peak-1)/2 {
			n.warnEvery(st, "remove_"+id, "gone voter kept: removing it could lose quorum", "peer", id)
			continue
		}
		if n.logFuture(r.RemoveServer(s.ID, 0, timeout), "remove voter", id) {
			removed++
			voters--
		}
	}

	for id, inc := range fsmNodes {
		if id == n.cfg.NodeID || !n.gone(st, id, now) {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout)
		res, err := n.Apply(actx, NodeGone{Node: id, Incarnation: inc})
		cancel()
		if err != nil {
			n.warnEvery(st, "gone_"+id, "node gone: purge failed", "peer", id, "err", err)
			continue
		}
		n.log.Info("node gone: entries purged", "peer", id, "incarnation", inc,
			"members_removed", len(res.Removed), "channels_vacated", len(res.Vacated), "index", res.Index)
	}
	return promotionDue
}

// aliveNonVoters lists the alive non-voters of the configuration.
func aliveNonVoters(alive []Peer, byID map[string]raft.Server) []string {
	var out []string
	for _, p := range alive {
		if s, ok := byID[p.ID]; ok && s.Suffrage != raft.Voter {
			out = append(out, p.ID)
		}
	}
	return out
}

// gone reports whether id left, or has been dead for ReapDelay: its
// presence is purged then.
func (n *Node) gone(st *controlState, id string, now time.Time) bool {
	since, ok := st.goneSince[id]
	return ok && (st.left[id] || now.Sub(since) >= n.cfg.ReapDelay)
}

// reaped reports whether id has been gone, left or dead, for ReapDelay: a
// voter leaves the configuration no sooner.
func (n *Node) reaped(st *controlState, id string, now time.Time) bool {
	since, ok := st.goneSince[id]
	return ok && now.Sub(since) >= n.cfg.ReapDelay
}

// admit adds an alive member that is not in the configuration as a
// non-voter (promoted once caught up). A member of another group is asked
// to wipe itself if this group wins the merge rule; otherwise this group
// waits to be absorbed. It returns false when the member should be tried
// again only after ReconcileInterval.
func (n *Node) admit(ctx context.Context, st *controlState, r *raft.Raft, p Peer, ours []string, timeout time.Duration) bool {
	ps, err := n.peerStatus(ctx, p)
	if err != nil {
		n.infoEvery(st, "admit_"+p.ID, "cannot reach member to admit it", "peer", p.ID, "err", err)
		return false
	}
	if ps.ID != p.ID {
		n.warnEvery(st, "admit_"+p.ID, "member's raft address answers with another id", "peer", p.ID, "answered", ps.ID)
		return false
	}
	if ps.HasState && !slices.Contains(ps.Servers, n.cfg.NodeID) {
		if !groupWins(ours, ps.Servers) {
			n.infoEvery(st, "merge_"+p.ID, "member is in a raft group that wins the merge: waiting to be absorbed",
				"peer", p.ID, "their_servers", ps.Servers)
			return false
		}
		req, err := json.Marshal(resetRequest{From: n.cfg.NodeID, Servers: ours})
		if err != nil {
			return false
		}
		cctx, cancel := context.WithTimeout(ctx, peerRPCTimeout)
		defer cancel()
		if _, err := n.rpc.call(cctx, p.RaftAddr, p.ID, opReset, req); err != nil {
			n.warnEvery(st, "merge_"+p.ID, "ask member of another raft group to wipe", "peer", p.ID, "err", err)
			return false
		}
		n.log.Info("asked member of another raft group to join this one", "peer", p.ID, "their_servers", ps.Servers)
		return true
	}
	return n.logFuture(r.AddNonvoter(raft.ServerID(p.ID), raft.ServerAddress(p.RaftAddr), 0, timeout), "add non-voter", p.ID)
}

// moveServer rewrites a server's address in the configuration (same
// suffrage). Raft (v1.7.3, and v1.8.0) reads a follower's server entry
// without its lock when an append to it succeeds, while the leader loop
// rewrites that entry for an address change: a data race whenever an
// append to the follower is in flight, which is the common case here,
// since raft already reaches the follower at gossip's address. So raft's
// connections to the server are parked for the change: the open ones
// closed and new dials refused until the leader loop is past it. AddVoter
// returns once the loop has taken the request; a bootstrap request, which
// the loop refuses at once, is served after it. From there, an append
// needs a new dial, and the parking lock orders it after the change.
func (n *Node) moveServer(r *raft.Raft, s raft.Server, addr string) bool {
	layer := n.raftLayer()
	if layer == nil {
		return false
	}
	id := string(s.ID)
	layer.park(id)
	var f raft.IndexFuture
	if s.Suffrage == raft.Voter {
		f = r.AddVoter(s.ID, raft.ServerAddress(addr), 0, n.timing.Election)
	} else {
		f = r.AddNonvoter(s.ID, raft.ServerAddress(addr), 0, n.timing.Election)
	}
	_ = r.BootstrapCluster(raft.Configuration{}).Error() // refused: with no voter, even by a follower
	layer.unpark(id)
	return n.logFuture(f, "update address", id)
}

// caughtUp reports whether a non-voter has replicated nearly all the log.
func (n *Node) caughtUp(ctx context.Context, r *raft.Raft, p Peer) bool {
	ps, err := n.peerStatus(ctx, p)
	return err == nil && ps.ID == p.ID && ps.LastIndex+promoteLag >= r.LastIndex()
}

func (n *Node) peerStatus(ctx context.Context, p Peer) (peerStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, peerRPCTimeout)
	defer cancel()
	resp, err := n.rpc.call(ctx, p.RaftAddr, p.ID, opStatus, nil)
	if err != nil && ctx.Err() == nil && !errors.Is(err, errDial) {
		// A pooled connection to the member's previous process fails at
		// once; the status request changes nothing, so ask again anew.
		resp, err = n.rpc.call(ctx, p.RaftAddr, p.ID, opStatus, nil)
	}
	if err != nil {
		return peerStatus{}, err
	}
	var ps peerStatus
	if err := json.Unmarshal(resp, &ps); err != nil {
		return peerStatus{}, fmt.Errorf("decode peer status: %w", err)
	}
	return ps, nil
}

func (n *Node) logFuture(f raft.IndexFuture, what, peer string) bool {
	if err := f.Error(); err != nil {
		n.log.Warn("raft configuration change failed", "change", what, "peer", peer, "err", err)
		return false
	}
	n.log.Info("raft configuration changed", "change", what, "peer", peer, "index", f.Index())
	return true
}

func (n *Node) warnEvery(st *controlState, key, msg string, args ...any) {
	if n.due(st, key) {
		n.log.Warn(msg, args...)
	}
}

func (n *Node) infoEvery(st *controlState, key, msg string, args ...any) {
	if n.due(st, key) {
		n.log.Info(msg, args...)
	}
}

func (n *Node) due(st *controlState, key string) bool {
	now := time.Now()
	if now.Sub(st.lastLog[key]) < logEvery {
		return false
	}
	if len(st.lastLog) > 256 {
		clear(st.lastLog)
	}
	st.lastLog[key] = now
	return true
}

// registerLoop keeps this node registered in the FSM at its incarnation:
// at start, after a NodeGone that named it, and after a wipe. It also
// latches Ready. It checks on every tick and whenever poked: at start, on
// a leader change and when the FSM applies a NodeUp or NodeGone of this node.
func (n *Node) registerLoop(ctx context.Context) {
	t := time.NewTicker(n.tickInterval())
	defer t.Stop()
	var lastWarn time.Time
	n.poke()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.registerPoke:
		case <-t.C:
		}
		n.Ready() // latch it as soon as it holds
		if n.Registered() {
			continue
		}
		if inc, ok := n.fsm.Incarnation(n.cfg.NodeID); ok && inc > n.cfg.Incarnation {
			if time.Since(lastWarn) > logEvery {
				lastWarn = time.Now()
				n.log.Error("a newer process with this node id is registered", "registered", inc, "ours", n.cfg.Incarnation)
			}
			continue
		}
		if n.numServers() == 0 { // not in a group yet
			if id, _ := n.Leader(); id != "" {
				// A leader reached us and the configuration follows in a
				// moment: look again soon rather than at the next tick.
				time.AfterFunc(joinRecheck, n.poke)
			}
			continue
		}
		res, err := n.Apply(ctx, NodeUp{Node: n.cfg.NodeID, Incarnation: n.cfg.Incarnation})
		if err != nil {
			if ctx.Err() == nil && time.Since(lastWarn) > logEvery {
				lastWarn = time.Now()
				n.log.Warn("register node", "err", err)
			}
			continue
		}
		n.log.Info("node registered", "incarnation", n.cfg.Incarnation, "new", res.NodeRegistered,
			"members_removed", len(res.Removed), "index", res.Index, "ready", n.Ready())
		if res.NodeRegistered && n.cfg.OnRegistered != nil {
			n.cfg.OnRegistered(ctx)
		}
	}
}
