package consensus

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/hashicorp/raft"
)

// bootstrapRetry is how soon the lowest fresh node checks again while its
// peers do not agree yet on who is alive.
const bootstrapRetry = 100 * time.Millisecond

// tryBootstrap runs while this node has no raft configuration and returns
// how long to wait before the next control step.
func (n *Node) tryBootstrap(ctx context.Context, st *controlState, r *raft.Raft) time.Duration {
	if n.cfg.ExpectedServers > 1 {
		n.bootstrapExpected(ctx, st, r)
		return n.tickInterval()
	}
	return n.bootstrapDiscovered(ctx, st, r)
}

// bootstrapDiscovered forms one group of the nodes that start together,
// without a count to wait for. Only the lowest id among the alive members
// acts; the others wait to be added. It asks every alive peer for its
// status: if one has raft state, this node waits to be added to that
// group. Otherwise the group is this node and the fresh peers that see it
// as their lowest member. It bootstraps that group as soon as every peer
// reports exactly the alive set this node sees (they found each other),
// and at the end of DiscoveryWindow in any case: alone if it found
// nobody. A member that arrives later sees a group and is added to it;
// only groups that really formed apart (nodes that could not see each
// other for a whole window) are left to the merge rule. After the window
// a peer that does not answer is ignored, so an unreachable node with a
// lower id does not stop the others from forming a group.
func (n *Node) bootstrapDiscovered(ctx context.Context, st *controlState, r *raft.Raft) time.Duration {
	self := n.cfg.NodeID
	alive := n.alive()
	left := n.cfg.DiscoveryWindow - time.Since(st.started)
	open := left > 0
	wait := n.tickInterval()
	if open {
		wait = min(wait, left)
	}

	// A lower id decides; after the window, only one that answers.
	ignored := map[string]bool{}
	for _, p := range alive {
		if p.ID >= self {
			break // sorted
		}
		if open {
			n.infoEvery(st, "bootstrap_wait", "discovery: waiting for the member with the lowest id to form the group",
				"lowest", p.ID, "alive", len(alive))
			return wait
		}
		_, err := n.peerStatus(ctx, p)
		if err == nil {
			n.infoEvery(st, "bootstrap_wait", "waiting to be added to a raft group", "lowest", p.ID, "alive", len(alive))
			return wait
		}
		n.infoEvery(st, "bootstrap_ignore_"+p.ID, "discovery: member with a lower id does not answer: ignoring it",
			"peer", p.ID, "err", err)
		ignored[p.ID] = true
	}

	view := make([]string, 0, len(alive))
	for _, p := range alive {
		view = append(view, p.ID)
	}
	group := []Peer{{ID: self, RaftAddr: n.Addr(), Incarnation: n.cfg.Incarnation}}
	agreed := true
	for _, p := range alive {
		if p.ID <= self {
			continue // this node, or ignored
		}
		ps, err := n.peerStatus(ctx, p)
		switch {
		case err == nil && ps.ID != p.ID:
			n.warnEvery(st, "bootstrap_peer_"+p.ID, "member's cluster address answers with another id", "peer", p.ID, "answered", ps.ID)
			agreed = false
			continue
		case err != nil:
			if open {
				n.infoEvery(st, "bootstrap_peer_"+p.ID, "discovery: peer status unavailable", "peer", p.ID, "err", err)
				return min(bootstrapRetry, left)
			}
			n.infoEvery(st, "bootstrap_peer_"+p.ID, "discovery: peer does not answer: bootstrapping without it", "peer", p.ID, "err", err)
			agreed = false
			continue
		case ps.HasState:
			n.infoEvery(st, "bootstrap_existing", "a peer already has a raft group: waiting to be added", "peer", p.ID)
			return wait
		}
		if !slices.Equal(ps.Alive, view) {
			agreed = false
		}
		if seesAsLowest(ps.Alive, self, ignored) {
			group = append(group, p)
		}
	}
	if open && (len(group) == 1 || !agreed || len(group) != len(alive)) {
		if len(group) == 1 && len(alive) == 1 {
			return wait // nobody seen yet
		}
		return min(bootstrapRetry, left)
	}
	servers := group[:min(len(group), voterTarget(len(group)))]
	cfg := raft.Configuration{}
	for _, p := range servers {
		cfg.Servers = append(cfg.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddr)})
	}
	if !n.bootstrap(r, cfg) {
		return wait
	}
	n.log.Info("bootstrapped raft group", "servers", serverIDs(cfg.Servers), "alive", len(alive),
		"agreed", agreed, "after", time.Since(st.started).Round(time.Millisecond))
	return n.tickInterval()
}

// seesAsLowest reports whether a peer's alive set contains self and no
// lower id other than the ignored ones (so the peer waits for self).
func seesAsLowest(peerAlive []string, self string, ignored map[string]bool) bool {
	found := false
	for _, id := range peerAlive {
		switch {
		case id == self:
			found = true
		case id < self && !ignored[id]:
			return false
		}
	}
	return found
}

// bootstrapExpected: with ExpectedServers = N > 1, once N members are
// alive, the lowest id among them bootstraps a configuration of the first
// N (sorted by id), provided no alive peer already has raft state; the
// others wait to be added by the leader.
func (n *Node) bootstrapExpected(ctx context.Context, st *controlState, r *raft.Raft) {
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
	if n.bootstrap(r, cfg) {
		n.log.Info("bootstrapped raft group", "servers", serverIDs(cfg.Servers))
	}
}

// bootstrap writes the first configuration and starts the first election.
func (n *Node) bootstrap(r *raft.Raft, cfg raft.Configuration) bool {
	if err := r.BootstrapCluster(cfg).Error(); err != nil {
		if !errors.Is(err, raft.ErrCantBootstrap) {
			n.log.Warn("bootstrap failed", "err", err)
		}
		return false
	}
	n.stats.bootstraps.Add(1)
	n.campaign()
	return true
}

// campaign starts this node's first election at once rather than after a
// follower's heartbeat timeout (a random Heartbeat to 2×Heartbeat, up to
// the master timeout): right after a bootstrap no leader can exist, and
// the peers, having no configuration yet, grant the vote. It sends itself
// the TimeoutNow RPC that a leadership transfer uses; if that fails, raft
// elects after the timeout as usual.
func (n *Node) campaign() {
	n.mu.RLock()
	trans := n.trans
	n.mu.RUnlock()
	if trans == nil {
		return
	}
	id, addr := raft.ServerID(n.cfg.NodeID), raft.ServerAddress(n.Addr())
	req := &raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(id), Addr: []byte(addr)}}
	if err := trans.TimeoutNow(id, addr, req, &raft.TimeoutNowResponse{}); err != nil {
		n.log.Info("first election not started at once: raft starts it after a heartbeat timeout", "err", err)
	}
}
