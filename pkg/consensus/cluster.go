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
	// peerRPCTimeout bounds status and reset calls made by the control loop.
	peerRPCTimeout = time.Second
	// logEvery rate-limits repeated warnings of the control loop.
	logEvery = 10 * time.Second
)

// controlState is owned by the control loop goroutine.
type controlState struct {
	leading   bool
	lastPass  time.Time
	goneSince map[string]time.Time // not alive since (first noticed here)
	left      map[string]bool      // left gracefully: no reap delay
	lastLog   map[string]time.Time // per message key, for rate-limited logs
}

func (n *Node) tickInterval() time.Duration {
	return min(500*time.Millisecond, max(n.cfg.MasterTimeout/4, 50*time.Millisecond))
}

// controlLoop is the only goroutine that bootstraps, reconciles and wipes.
func (n *Node) controlLoop(ctx context.Context) {
	st := &controlState{goneSince: map[string]time.Time{}, left: map[string]bool{}, lastLog: map[string]time.Time{}}
	tick := time.NewTicker(n.tickInterval())
	defer tick.Stop()
	events := n.members.Events()
	for {
		pass := false
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			n.noteEvent(st, ev)
			pass = true
		case req := <-n.resetReq:
			n.log.Warn("another raft group wins the merge: wiping raft state to join it",
				"from", req.From, "winner_servers", req.Servers)
			st.leading = false
			if err := n.wipe(); err != nil {
				n.log.Error("wipe raft state", "err", err)
			}
			continue
		case <-tick.C:
			pass = time.Since(st.lastPass) >= n.cfg.ReconcileInterval || n.reapDue(st)
		}
		n.step(ctx, st, pass)
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

func (n *Node) reapDue(st *controlState) bool {
	for id, since := range st.goneSince {
		if st.left[id] || time.Since(since) >= n.cfg.ReapDelay {
			return true
		}
	}
	return false
}

func (n *Node) step(ctx context.Context, st *controlState, pass bool) {
	r := n.raft()
	if r == nil { // a wipe failed to re-open raft: retry
		if err := n.openRaft(); err != nil {
			n.warnEvery(st, "reopen", "re-open raft", "err", err)
		}
		return
	}
	servers, err := n.configuration()
	if err != nil {
		return
	}
	if len(servers) == 0 {
		st.leading = false
		n.tryBootstrap(ctx, st, r)
		return
	}
	if r.State() != raft.Leader {
		st.leading = false
		return
	}
	if !st.leading {
		// Act on the FSM only once it holds every entry of earlier terms.
		if err := r.Barrier(n.timing.Election).Error(); err != nil {
			return
		}
		st.leading = true
		pass = true
		n.log.Info("leading raft group", "term", r.CurrentTerm())
	}
	if pass {
		st.lastPass = time.Now()
		n.reconcile(ctx, st, r)
	}
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

// tryBootstrap: with ExpectedServers = N, once N members are alive, the
// lowest id among them bootstraps a configuration of the first N (sorted by
// id), provided no alive peer already has raft state; the others wait to
// be added by the leader.
func (n *Node) tryBootstrap(ctx context.Context, st *controlState, r *raft.Raft) {
	alive := n.alive()
	want := n.cfg.ExpectedServers
	if len(alive) < want {
		n.infoEvery(st, "bootstrap_wait", "waiting for members to bootstrap", "alive", len(alive), "expected", want)
		return
	}
	first := alive[:want]
	if first[0].ID != n.cfg.NodeID {
		return
	}
	for _, p := range alive {
		if p.ID == n.cfg.NodeID {
			continue
		}
		ps, err := n.peerStatus(ctx, p)
		if err != nil {
			n.infoEvery(st, "bootstrap_peer", "bootstrap: peer status unavailable", "peer", p.ID, "err", err)
			return
		}
		if ps.HasState {
			n.infoEvery(st, "bootstrap_existing", "a peer already has a raft group: waiting to be added", "peer", p.ID)
			return
		}
	}
	cfg := raft.Configuration{}
	for _, p := range first {
		cfg.Servers = append(cfg.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddr)})
	}
	if err := r.BootstrapCluster(cfg).Error(); err != nil {
		if !errors.Is(err, raft.ErrCantBootstrap) {
			n.log.Warn("bootstrap failed", "err", err)
		}
		return
	}
	n.stats.bootstraps.Add(1)
	n.log.Info("bootstrapped raft group", "servers", serverIDs(cfg.Servers))
}

// reconcile aligns the raft configuration with the membership (leader
// only, like Consul's leader loop): alive members are admitted (merging
// other groups), non-voters promoted while voters are missing, left members
// removed at once and dead ones after ReapDelay, and nodes gone from the
// membership purged from the FSM with NodeGone.
func (n *Node) reconcile(ctx context.Context, st *controlState, r *raft.Raft) {
	servers, err := n.configuration()
	if err != nil {
		return
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

	voters := 0
	byID := make(map[string]raft.Server, len(servers))
	for _, s := range servers {
		byID[string(s.ID)] = s
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	target := smallVoters
	if len(alive) >= maxVoters {
		target = maxVoters
	}
	ours := serverIDs(servers)
	timeout := n.timing.Election * 4

	for _, p := range alive {
		s, in := byID[p.ID]
		switch {
		case in && string(s.Address) != p.RaftAddr:
			n.log.Info("raft address changed", "peer", p.ID, "old", string(s.Address), "new", p.RaftAddr)
			var f raft.IndexFuture
			if s.Suffrage == raft.Voter {
				f = r.AddVoter(s.ID, raft.ServerAddress(p.RaftAddr), 0, timeout)
			} else {
				f = r.AddNonvoter(s.ID, raft.ServerAddress(p.RaftAddr), 0, timeout)
			}
			n.logFuture(f, "update address", p.ID)
		case in && s.Suffrage != raft.Voter && voters < target:
			if n.caughtUp(ctx, r, p) && n.logFuture(r.AddVoter(s.ID, s.Address, 0, timeout), "promote to voter", p.ID) {
				voters++
			}
		case in:
		default:
			n.admit(ctx, st, r, p, ours, timeout)
		}
	}

	voterRemovals := (voters - 1) / 2 // never lose quorum in one pass
	for _, s := range servers {
		id := string(s.ID)
		if id == n.cfg.NodeID || !n.gone(st, id, now) {
			continue
		}
		if s.Suffrage == raft.Voter {
			if voterRemovals == 0 {
				n.warnEvery(st, "remove_"+id, "dead voter kept: removing it could lose quorum", "peer", id)
				continue
			}
			voterRemovals--
		}
		n.logFuture(r.RemoveServer(s.ID, 0, timeout), "remove server", id)
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
}

// gone reports whether id left, or has been dead for ReapDelay.
func (n *Node) gone(st *controlState, id string, now time.Time) bool {
	since, ok := st.goneSince[id]
	return ok && (st.left[id] || now.Sub(since) >= n.cfg.ReapDelay)
}

// admit adds an alive member that is not in the configuration as a
// non-voter (promoted once caught up). A member of another group is asked
// to wipe itself if this group wins the merge rule; otherwise this group
// waits to be absorbed.
func (n *Node) admit(ctx context.Context, st *controlState, r *raft.Raft, p Peer, ours []string, timeout time.Duration) {
	ps, err := n.peerStatus(ctx, p)
	if err != nil {
		n.infoEvery(st, "admit_"+p.ID, "cannot reach member to admit it", "peer", p.ID, "err", err)
		return
	}
	if ps.ID != p.ID {
		n.warnEvery(st, "admit_"+p.ID, "member's raft address answers with another id", "peer", p.ID, "answered", ps.ID)
		return
	}
	if ps.HasState && !slices.Contains(ps.Servers, n.cfg.NodeID) {
		if !groupWins(ours, ps.Servers) {
			n.infoEvery(st, "merge_"+p.ID, "member is in a raft group that wins the merge: waiting to be absorbed",
				"peer", p.ID, "their_servers", ps.Servers)
			return
		}
		req, err := json.Marshal(resetRequest{From: n.cfg.NodeID, Servers: ours})
		if err != nil {
			return
		}
		cctx, cancel := context.WithTimeout(ctx, peerRPCTimeout)
		defer cancel()
		if _, err := n.rpc.call(cctx, p.RaftAddr, p.ID, opReset, req); err != nil {
			n.warnEvery(st, "merge_"+p.ID, "ask member of another raft group to wipe", "peer", p.ID, "err", err)
			return
		}
		n.log.Info("asked member of another raft group to join this one", "peer", p.ID, "their_servers", ps.Servers)
		return
	}
	n.logFuture(r.AddNonvoter(raft.ServerID(p.ID), raft.ServerAddress(p.RaftAddr), 0, timeout), "add non-voter", p.ID)
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
// at start, after a NodeGone that named it, and after a wipe.
func (n *Node) registerLoop(ctx context.Context) {
	t := time.NewTicker(n.tickInterval() * 2)
	defer t.Stop()
	var lastWarn time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.registerPoke:
		case <-t.C:
		}
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
		if n.numServers() == 0 {
			continue // not in a group yet
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
			"members_removed", len(res.Removed), "index", res.Index)
		if res.NodeRegistered && n.cfg.OnRegistered != nil {
			n.cfg.OnRegistered(ctx)
		}
	}
}
