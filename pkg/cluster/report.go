package cluster

import (
	"context"
	"sort"
	"time"

	"github.com/soketi-go/soketi/pkg/gossip"
)

// The cluster page (pkg/clusterpage) shows a Dashboard: gossip's members
// as this node sees them, plus a NodeReport from each node that answers.
// Reports travel as a cluster-wide query (queries.go), so a node that is
// cut off or slow only loses its own row's figures, never the page.

// reportTimeout bounds the wait for peers' reports: the page refreshes
// every second, and a dead peer that gossip still calls alive must not
// freeze it for the whole ADAPTER_CLUSTER_REQUESTS_TIMEOUT.
const reportTimeout = 750 * time.Millisecond

// NodeReport is what one node says about itself.
type NodeReport struct {
	ID          string     `json:"id"`
	Raft        RaftReport `json:"raft"`
	Connections int        `json:"connections"`
	Channels    int        `json:"channels"`
	// Streams are this node's outbound streams, by peer id.
	Streams map[string]StreamReport `json:"streams"`
	// RateLimiter is "local" (each node limits alone), or the cluster
	// limiter's mode: "leases" while a master answers, else "local-share".
	RateLimiter string `json:"rate_limiter"`
	// Lag is how many entries the leader has committed that this node has
	// not applied; nil when the leader's report is missing.
	Lag *uint64 `json:"lag"`
}

// RaftReport is a node's replica.
type RaftReport struct {
	State         string `json:"state"`
	Term          uint64 `json:"term"`
	CommitIndex   uint64 `json:"commit_index"`
	AppliedIndex  uint64 `json:"applied_index"`
	LastContactMs int64  `json:"last_contact_ms"`
}

// StreamReport is one outbound stream.
type StreamReport struct {
	Connected     bool   `json:"connected"`
	Lingering     bool   `json:"lingering"`
	Queued        int    `json:"queued"`
	QueuedBytes   int    `json:"queued_bytes"`
	Unacked       int    `json:"unacked"`
	Retransmitted uint64 `json:"retransmitted"`
	Dropped       uint64 `json:"dropped"`
	Reconnects    uint64 `json:"reconnects"`
}

// Dashboard is the whole cluster page, seen from one node.
type Dashboard struct {
	At          time.Time       `json:"at"`
	Self        string          `json:"self"`
	ClusterName string          `json:"cluster_name"`
	Secured     bool            `json:"secured"`
	Quorum      bool            `json:"quorum"`
	Leader      string          `json:"leader"`
	Members     []gossip.Member `json:"members"`
	// Reports are this node's and those of the peers that answered in
	// time, sorted by id; Unanswered lists the alive peers that did not.
	Reports    []NodeReport `json:"reports"`
	Unanswered []string     `json:"unanswered"`
}

// Dashboard gathers the page's data: at most reportTimeout waiting on peers.
func (n *Node) Dashboard(ctx context.Context) Dashboard {
	view := n.members.View()
	rs := n.raft.Status()
	d := Dashboard{
		At: time.Now().UTC(), Self: view.NodeID, ClusterName: view.ClusterName,
		Secured: n.port.Secured(), Quorum: hasQuorum(rs, n.masterTimeout), Leader: rs.LeaderID,
		Members: view.Members, Unanswered: []string{},
	}
	ctx, cancel := context.WithTimeout(ctx, reportTimeout)
	defer cancel()
	replies := n.adapter.queries.gather(ctx, query{Op: opReport})
	d.Reports = append(make([]NodeReport, 0, len(replies)+1), n.report())
	answered := map[string]bool{d.Self: true}
	for _, r := range replies {
		// A reply names its node; one per node, and only alive peers asked.
		if r.Report != nil && !answered[r.Report.ID] {
			answered[r.Report.ID] = true
			d.Reports = append(d.Reports, *r.Report)
		}
	}
	for _, p := range n.adapter.alivePeers() {
		if !answered[p] {
			d.Unanswered = append(d.Unanswered, p)
		}
	}
	sort.Slice(d.Reports, func(i, j int) bool { return d.Reports[i].ID < d.Reports[j].ID })
	sort.Strings(d.Unanswered)
	var leaderCommit uint64
	leaderKnown := false
	for _, r := range d.Reports {
		if r.ID == d.Leader {
			leaderCommit, leaderKnown = r.Raft.CommitIndex, true
		}
	}
	if leaderKnown {
		for i := range d.Reports {
			lag := uint64(0)
			if a := d.Reports[i].Raft.AppliedIndex; a < leaderCommit {
				lag = leaderCommit - a
			}
			d.Reports[i].Lag = &lag
		}
	}
	return d
}

// report is this node's own NodeReport.
func (n *Node) report() NodeReport {
	rs := n.raft.Status()
	ls := n.adapter.local.Stats()
	r := NodeReport{
		ID: n.raft.ID(),
		Raft: RaftReport{State: rs.State, Term: rs.Term, CommitIndex: rs.CommitIndex,
			AppliedIndex: rs.AppliedIndex, LastContactMs: rs.LastContactMs},
		Connections: ls.Sockets, Channels: ls.Channels,
		Streams: map[string]StreamReport{}, RateLimiter: "local",
	}
	for id, p := range n.streams.Stats().Peers {
		r.Streams[id] = StreamReport{Connected: p.Connected, Lingering: p.Lingering, Queued: p.Queued,
			QueuedBytes: p.QueuedBytes, Unacked: p.Unacked, Retransmitted: p.Retransmitted,
			Dropped: p.Dropped, Reconnects: p.Reconnects}
	}
	if l := n.adapter.leases.Load(); l != nil {
		r.RateLimiter = l.lim.Status().Mode
	}
	return r
}
