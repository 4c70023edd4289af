package cluster

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/soketi-go/soketi/pkg/gossip"
)

// The cluster page (pkg/clusterpage) shows a Dashboard: gossip's members
// as this node sees them, plus a NodeReport from each node that answers.
// Reports travel as a cluster-wide query (queries.go), so a node that is
// cut off or slow only loses its own row's figures, never the page.

// reportTimeout bounds the wait for peers' reports, below reportEvery:
// a dead peer that gossip still calls alive must not hold them back for
// the whole ADAPTER_CLUSTER_REQUESTS_TIMEOUT.
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
	State       string `json:"state"`
	Term        uint64 `json:"term"`
	CommitIndex uint64 `json:"commit_index"`
	// AppliedIndex is raft's: every entry applied, barriers and
	// configuration changes included, so that it reaches CommitIndex.
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

// Dashboard returns the page's data. Membership, the leader and the
// quorum are read now; the reports come from the latest gathering, which
// is at most reportEvery old: a page may refresh often without asking the
// peers more than once a second, and a peer that does not answer never
// holds the page back.
func (n *Node) Dashboard(ctx context.Context) Dashboard {
	view := n.members.View()
	rs := n.raft.Status()
	d := Dashboard{
		At: time.Now().UTC(), Self: view.NodeID, ClusterName: view.ClusterName,
		Secured: n.port.Secured(), Quorum: hasQuorum(rs, n.masterTimeout), Leader: rs.LeaderID,
		Members: view.Members,
	}
	d.Reports, d.Unanswered = n.reports.latest(ctx, n)
	return d
}

// reportEvery is how often the peers are asked for their reports.
const reportEvery = time.Second

// reportCache holds the latest gathering of reports. Its first use waits
// for one; after that a stale cache starts a new one in the background
// and answers with what it has.
type reportCache struct {
	mu         sync.Mutex
	reports    []NodeReport
	unanswered []string
	at         time.Time
	gathering  bool
}

func (c *reportCache) latest(ctx context.Context, n *Node) ([]NodeReport, []string) {
	c.mu.Lock()
	if c.at.IsZero() {
		c.mu.Unlock()
		reports, unanswered := n.gatherReports(ctx)
		c.mu.Lock()
		c.reports, c.unanswered, c.at = reports, unanswered, time.Now()
	} else if time.Since(c.at) >= reportEvery && !c.gathering {
		c.gathering = true
		go func() {
			reports, unanswered := n.gatherReports(n.ctx)
			c.mu.Lock()
			c.reports, c.unanswered, c.at, c.gathering = reports, unanswered, time.Now(), false
			c.mu.Unlock()
		}()
	}
	defer c.mu.Unlock()
	return c.reports, c.unanswered
}

// gatherReports asks every alive peer for its report, at most
// reportTimeout, and adds this node's own and each node's lag behind the
// leader's commit index.
func (n *Node) gatherReports(ctx context.Context) ([]NodeReport, []string) {
	ctx, cancel := context.WithTimeout(ctx, reportTimeout)
	defer cancel()
	replies := n.adapter.queries.gather(ctx, query{Op: opReport})
	self := n.report()
	reports := append(make([]NodeReport, 0, len(replies)+1), self)
	answered := map[string]bool{self.ID: true}
	for _, r := range replies {
		// A reply names its node; one per node, and only alive peers asked.
		if r.Report != nil && !answered[r.Report.ID] {
			answered[r.Report.ID] = true
			reports = append(reports, *r.Report)
		}
	}
	unanswered := []string{}
	for _, p := range n.adapter.alivePeers() {
		if !answered[p] {
			unanswered = append(unanswered, p)
		}
	}
	sort.Slice(reports, func(i, j int) bool { return reports[i].ID < reports[j].ID })
	sort.Strings(unanswered)
	leader, _ := n.raft.Leader()
	for _, l := range reports {
		if l.ID != leader {
			continue
		}
		for i := range reports {
			lag := uint64(0)
			if a := reports[i].Raft.AppliedIndex; a < l.Raft.CommitIndex {
				lag = l.Raft.CommitIndex - a
			}
			reports[i].Lag = &lag
		}
	}
	return reports, unanswered
}

// report is this node's own NodeReport.
func (n *Node) report() NodeReport {
	rs := n.raft.Status()
	ls := n.adapter.local.Stats()
	r := NodeReport{
		ID: n.raft.ID(),
		Raft: RaftReport{State: rs.State, Term: rs.Term, CommitIndex: rs.CommitIndex,
			AppliedIndex: rs.RaftAppliedIndex, LastContactMs: rs.LastContactMs},
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
