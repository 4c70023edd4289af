package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync/atomic"
	"time"

	"github.com/soketi-go/soketi/pkg/cluster/stream"
	"github.com/soketi-go/soketi/pkg/limiter"
)

// Rate-limit leases ride the adapter's control protocol: a node sends
// "lease_ask" to the Raft leader, which answers "lease_grant". Messages name
// apps by id; no secret crosses the network.
const (
	ctlLeaseAsk   = "lease_ask"
	ctlLeaseGrant = "lease_grant"
	// leaseQueue bounds lease messages waiting to be sent. When it is full
	// an ask fails at once (its request is refused) and a grant is dropped
	// (its tokens are lost: fewer admitted, never more).
	leaseQueue = 1024
	// leadershipPoll is how often the master side checks it still leads,
	// so a lost term is forgotten even when no ask arrives.
	leadershipPoll = 50 * time.Millisecond
	// maxLeaseName bounds an ask's app id and key; longer asks are ignored.
	maxLeaseName = 256
)

var errLeaseQueueFull = errors.New("cluster: lease queue full")

type leaseMsg struct {
	Type  string         `json:"t"`
	Ask   *limiter.Ask   `json:"ask,omitempty"`
	Grant *limiter.Grant `json:"grant,omitempty"`
}

type leaseOut struct {
	peer    string
	payload []byte
}

// leases is the limiter.Transport of a node: Raft says who the master is,
// gossip how many nodes share the limit, and the streams carry the messages.
type leases struct {
	node *Node
	lim  *limiter.Cluster
	out  chan leaseOut

	sent, received, dropped atomic.Uint64
}

// RateLimiterView is the limiter's part of GET /cluster: its status and the
// lease messages this node sent and received.
type RateLimiterView struct {
	limiter.ClusterStatus
	MessagesSent     uint64 `json:"messages_sent"`
	MessagesReceived uint64 `json:"messages_received"`
	MessagesDropped  uint64 `json:"messages_dropped"`
}

// RateLimiter returns the cluster rate limiter (RATE_LIMITER_DRIVER=cluster)
// of this node, spending leases granted by the Raft leader. Call it once,
// before serving requests; it runs until the node stops.
func (n *Node) RateLimiter(opts limiter.ClusterOptions) *limiter.Cluster {
	if opts.Logger == nil {
		opts.Logger = n.logger
	}
	l := &leases{node: n, out: make(chan leaseOut, leaseQueue)}
	l.lim = limiter.NewCluster(opts, l)
	n.adapter.leases.Store(l)
	n.wg.Add(1)
	go func() { defer n.wg.Done(); l.run(n.ctx) }()
	return l.lim
}

// Master is the Raft leader, which owns the quota windows.
func (l *leases) Master() (string, bool) {
	id, _ := l.node.raft.Leader()
	if id == "" {
		return "", false
	}
	return id, id == l.node.raft.ID() && l.node.raft.IsLeader()
}

// Send queues an ask for the master without blocking.
func (l *leases) Send(master string, a limiter.Ask) error {
	return l.enqueue(master, leaseMsg{Type: ctlLeaseAsk, Ask: &a})
}

// Share ranks this node among the alive members by id.
func (l *leases) Share() (rank, nodes int) {
	alive := l.node.members.AliveMembers()
	ids := make([]string, 0, len(alive))
	for _, m := range alive {
		ids = append(ids, m.ID)
	}
	slices.Sort(ids)
	return slices.Index(ids, l.node.raft.ID()), max(len(ids), 1)
}

func (l *leases) enqueue(peer string, m leaseMsg) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	select {
	case l.out <- leaseOut{peer, b}:
		return nil
	default:
		l.dropped.Add(1)
		return errLeaseQueueFull
	}
}

// control handles a lease message on the stream reader; it never blocks.
func (l *leases) control(from, typ string, payload []byte) {
	var m leaseMsg
	if json.Unmarshal(payload, &m) != nil {
		return
	}
	l.received.Add(1)
	switch typ {
	case ctlLeaseAsk:
		a := m.Ask
		if a == nil || len(a.App) > maxLeaseName || len(a.Key) > maxLeaseName || a.Limit < 0 {
			return
		}
		g := l.lim.Serve(from, *a, l.node.raft.IsLeader())
		_ = l.enqueue(from, leaseMsg{Type: ctlLeaseGrant, Grant: &g})
	case ctlLeaseGrant:
		if m.Grant != nil {
			l.lim.HandleGrant(from, *m.Grant)
		}
	}
}

// run sends queued lease messages and follows this node's leadership.
func (l *leases) run(ctx context.Context) {
	t := time.NewTicker(leadershipPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			l.lim.SetLeading(l.node.raft.IsLeader())
		case o := <-l.out:
			err := l.node.streams.Send(ctx, o.peer, stream.Message{Kind: stream.KindControl, Payload: o.payload})
			if err != nil {
				l.dropped.Add(1)
				continue
			}
			l.sent.Add(1)
		}
	}
}

func (l *leases) view() *RateLimiterView {
	return &RateLimiterView{ClusterStatus: l.lim.Status(), MessagesSent: l.sent.Load(),
		MessagesReceived: l.received.Load(), MessagesDropped: l.dropped.Load()}
}
