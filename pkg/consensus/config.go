package consensus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/soketi-go/soketi/pkg/clusternet"
)

// Config configures a Node. main fills it from soketi's environment.
type Config struct {
	// NodeID is the stable raft server id (the gossip node id).
	NodeID string
	// Incarnation identifies this process's life (gossip's incarnation, its
	// start time in Unix nanoseconds); default now. Entries of older lives
	// are purged when it registers.
	Incarnation uint64
	// Dir holds the raft log, stable store and snapshots (CLUSTER_DATA_DIR).
	// A restart with the same Dir rejoins with its own log.
	Dir string
	// Port is the cluster port that raft and the forwarding RPC share with
	// the message streams (mutual TLS when the cluster has a key). Required;
	// the caller starts and closes it.
	Port *clusternet.Port
	// ExpectedServers is how many alive members must be visible before the
	// group is bootstrapped (CLUSTER_EXPECTED_SERVERS). Default 1: no count
	// is awaited; the nodes that find each other within DiscoveryWindow
	// bootstrap one group, and a single node works alone.
	ExpectedServers int
	// DiscoveryWindow is how long a node with no raft state listens for
	// peers, with ExpectedServers 1, before it bootstraps without full
	// agreement (alone if it found nobody). Nodes that found each other
	// and agree on who is alive bootstrap earlier. Default 2s; pkg/cluster
	// sets a few gossip beacon intervals.
	DiscoveryWindow time.Duration
	// MasterTimeout (CLUSTER_MASTER_TIMEOUT, default 2s) sets raft's
	// timing; see DeriveTiming.
	MasterTimeout time.Duration
	// ReapDelay is how long a dead member keeps its presence entries
	// before the leader purges them (NodeGone), and how long a dead server
	// stays in the raft configuration before it may be removed: a dead
	// voter is removed only if enough voters remain, or once an alive
	// non-voter has been promoted in its place. Default 10s.
	ReapDelay time.Duration
	// ReconcileInterval is how long the leader waits before it tries again
	// to admit a member it could not reach, or one in another group that
	// wins the merge rule (a membership event for it retries at once). The
	// leader reconciles on every control tick (at most 500 ms). Default 3s.
	ReconcileInterval time.Duration
	// ApplyTimeout bounds Apply when ctx has no deadline. Default 5s.
	ApplyTimeout time.Duration
	// Limits cap the replicated state.
	Limits Limits
	// OnApply is called with every applied Result on this node, in log
	// order, on raft's apply goroutine: it must not block or call Apply.
	OnApply func(Result)
	// OnRegistered is called after this node's NodeUp committed: at start,
	// after its entries were purged (NodeGone after a false death) and after
	// a merge wiped its replica. The owner re-proposes its local presence
	// and occupancy. It runs on its own goroutine; ctx ends at shutdown.
	OnRegistered func(ctx context.Context)
	Logger       *slog.Logger
}

const (
	DefaultMasterTimeout     = 2 * time.Second
	DefaultReapDelay         = 10 * time.Second
	DefaultReconcileInterval = 3 * time.Second
	DefaultDiscoveryWindow   = 2 * time.Second
	DefaultApplyTimeout      = 5 * time.Second
)

func (c Config) withDefaults() (Config, error) {
	if err := checkName("node id", c.NodeID); err != nil {
		return c, fmt.Errorf("consensus: %w", err)
	}
	if c.Dir == "" {
		return c, errors.New("consensus: Dir is required")
	}
	if c.Incarnation == 0 {
		c.Incarnation = uint64(time.Now().UnixNano())
	}
	if c.Port == nil {
		return c, errors.New("consensus: Port is required")
	}
	if c.ExpectedServers <= 0 {
		c.ExpectedServers = 1
	}
	if c.MasterTimeout <= 0 {
		c.MasterTimeout = DefaultMasterTimeout
	}
	if c.ReapDelay <= 0 {
		c.ReapDelay = DefaultReapDelay
	}
	if c.DiscoveryWindow <= 0 {
		c.DiscoveryWindow = DefaultDiscoveryWindow
	}
	if c.ReconcileInterval <= 0 {
		c.ReconcileInterval = DefaultReconcileInterval
	}
	if c.ApplyTimeout <= 0 {
		c.ApplyTimeout = DefaultApplyTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Limits = c.Limits.withDefaults()
	return c, nil
}

// Timing is raft's timing derived from the master timeout.
type Timing struct {
	Heartbeat   time.Duration `json:"heartbeat"`
	Election    time.Duration `json:"election"`
	LeaderLease time.Duration `json:"leader_lease"`
	Commit      time.Duration `json:"commit"`
}

// DeriveTiming maps CLUSTER_MASTER_TIMEOUT onto raft. A follower starts an
// election after a random wait in [Heartbeat, 2×Heartbeat) without
// contact, and a candidate retries after a random wait in [Election,
// 2×Election). With Heartbeat = Election = MasterTimeout/2, a dead leader is
// noticed within MasterTimeout and the first vote normally completes in a
// few round trips, so a new leader is up within about MasterTimeout (plus
// one Election wait if the first vote splits). The lease, after which a
// leader that hears no quorum steps down, may not exceed Heartbeat; it is
// set equal to it because reads are served from local replicas, not by a
// leased leader, and a shorter lease makes a loaded host step down for
// nothing (the in-flight commands then fail with an unknown outcome).
// 200 ms is the floor: below it a loaded 2-core host flaps leaders.
func DeriveTiming(masterTimeout time.Duration) Timing {
	hb := max(masterTimeout/2, 200*time.Millisecond)
	return Timing{
		Heartbeat:   hb,
		Election:    hb,
		LeaderLease: hb,
		Commit:      min(5*time.Millisecond, hb/10),
	}
}

// Peer is a cluster member as the membership layer sees it.
type Peer struct {
	ID          string `json:"id"`
	RaftAddr    string `json:"raft_addr"`
	Incarnation uint64 `json:"incarnation"`
}

// MemberEventType names a membership change.
type MemberEventType uint8

const (
	PeerJoin   MemberEventType = iota + 1 // became alive
	PeerUpdate                            // alive, address changed
	PeerLeft                              // left gracefully: removed at once
	PeerDead                              // failed: removed after ReapDelay
)

// MemberEvent is a membership change.
type MemberEvent struct {
	Type MemberEventType
	Peer Peer
}

// Membership is what the consensus layer needs from gossip; pkg/cluster
// adapts gossip.Members to it. Events may drop under load: the leader also
// reconciles against Alive periodically.
type Membership interface {
	// Alive returns the alive members, this node included.
	Alive() []Peer
	// Events delivers changes; it is closed at gossip shutdown.
	Events() <-chan MemberEvent
}
