package consensus

import (
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Server is a member of the raft configuration.
type Server struct {
	ID      string `json:"id"`
	Address string `json:"address"`
}

// NodeStatus is this node's raft view, for GET /cluster.
type NodeStatus struct {
	NodeID        string `json:"node_id"`
	Address       string `json:"address"`
	Incarnation   uint64 `json:"incarnation"`
	State         string `json:"state"` // leader, follower, candidate, shutdown
	Registered    bool   `json:"registered"`
	Ready         bool   `json:"ready"` // Node.Ready: joined a group for good (latched)
	LeaderID      string `json:"leader_id"`
	LeaderAddress string `json:"leader_address"`
	Term          uint64 `json:"term"`
	CommitIndex   uint64 `json:"commit_index"`
	AppliedIndex  uint64 `json:"applied_index"` // of the local replica
	// RaftAppliedIndex also counts the entries the replica never sees
	// (barriers, configuration changes), so it reaches CommitIndex.
	RaftAppliedIndex uint64 `json:"raft_applied_index"`
	LastLogIndex     uint64 `json:"last_log_index"`
	// LastContactMs is the time since the last contact with the leader:
	// 0 on the leader, -1 if never.
	LastContactMs int64    `json:"last_contact_ms"`
	Voters        []Server `json:"voters"`
	NonVoters     []Server `json:"non_voters"`
	Stats         Stats    `json:"stats"`
}

// Status returns a snapshot of this node's raft state.
func (n *Node) Status() NodeStatus {
	st := NodeStatus{
		NodeID:       n.cfg.NodeID,
		Address:      n.Addr(),
		Incarnation:  n.cfg.Incarnation,
		State:        "shutdown",
		Registered:   n.Registered(),
		Ready:        n.Ready(),
		AppliedIndex: n.fsm.AppliedIndex(),
		Voters:       []Server{},
		NonVoters:    []Server{},
		Stats:        n.Stats(),
	}
	r := n.raft()
	if r == nil {
		return st
	}
	state := r.State()
	st.State = strings.ToLower(state.String())
	st.LeaderID, st.LeaderAddress = n.Leader()
	st.Term = r.CurrentTerm()
	st.CommitIndex = r.CommitIndex()
	st.RaftAppliedIndex = r.AppliedIndex()
	st.LastLogIndex = r.LastIndex()
	switch last := r.LastContact(); {
	case state == raft.Leader:
		st.LastContactMs = 0
	case last.IsZero():
		st.LastContactMs = -1
	default:
		st.LastContactMs = time.Since(last).Milliseconds()
	}
	if servers, err := n.configuration(); err == nil {
		for _, s := range servers {
			v := Server{ID: string(s.ID), Address: string(s.Address)}
			if s.Suffrage == raft.Voter {
				st.Voters = append(st.Voters, v)
			} else {
				st.NonVoters = append(st.NonVoters, v)
			}
		}
	}
	return st
}

// Stats are counters since start, for metrics.
type Stats struct {
	Applies        uint64 `json:"applies"`         // commands committed through Apply
	Forwards       uint64 `json:"forwards"`        // forward attempts to the leader
	ForwardsServed uint64 `json:"forwards_served"` // forwarded commands received
	Errors         uint64 `json:"errors"`          // Apply calls that failed to commit
	NoLeader       uint64 `json:"no_leader"`       // ... because no leader was known
	Timeouts       uint64 `json:"timeouts"`        // ... or the wait ran out
	Bootstraps     uint64 `json:"bootstraps"`
	Resets         uint64 `json:"resets"`  // wipes after losing a merge
	Refused        uint64 `json:"refused"` // RPCs refused: not from a member, or a malformed reset
}

type counters struct {
	applies, forwards, forwardsServed, errors, noLeader, timeouts, bootstraps, resets, refused atomic.Uint64
}

// Stats returns the counters.
func (n *Node) Stats() Stats {
	c := &n.stats
	return Stats{
		Applies: c.applies.Load(), Forwards: c.forwards.Load(), ForwardsServed: c.forwardsServed.Load(),
		Errors: c.errors.Load(), NoLeader: c.noLeader.Load(), Timeouts: c.timeouts.Load(),
		Bootstraps: c.bootstraps.Load(), Resets: c.resets.Load(), Refused: c.refused.Load(),
	}
}
