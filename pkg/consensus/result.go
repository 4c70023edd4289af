package consensus

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Member is one user of a presence channel. It has the same fields as
// pusher.Member, so the cluster adapter converts with pusher.Member(m).
type Member struct {
	UserID   json.RawMessage `json:"user_id"`
	UserInfo json.RawMessage `json:"user_info,omitempty"`
}

// ChannelRef names a channel of an app.
type ChannelRef struct {
	App     string `json:"app"`
	Channel string `json:"channel"`
}

// RemovedMember is a member that a node purge removed from a channel.
type RemovedMember struct {
	App     string `json:"app"`
	Channel string `json:"channel"`
	Member  Member `json:"member"`
}

// Status says whether a command changed the state.
type Status string

const (
	StatusApplied Status = "applied"
	// StatusStale: the command came from a node that is not registered at
	// that incarnation (it restarted, or was declared gone). Ignored.
	StatusStale Status = "stale"
	// StatusLimit: applying the command would exceed a state cap. Ignored.
	StatusLimit Status = "limit"
	// StatusInvalid: the log data is not a valid command. Ignored.
	StatusInvalid Status = "invalid"
)

var (
	// ErrStale is Result.Err for StatusStale.
	ErrStale = errors.New("consensus: stale or unknown node incarnation")
	// ErrLimit is Result.Err for StatusLimit.
	ErrLimit = errors.New("consensus: state limit reached")
)

// Result is what applying one command decided. The FSM returns it from
// Apply, hands it to the observer on every node, and Node.Apply returns it
// to the proposer (also when forwarded).
type Result struct {
	// Index is the raft log index; with Type it identifies the transition
	// (see WebhookID), the same on every node and across retries.
	Index uint64 `json:"index"`
	// Sub is the 1-based position of a sub-command in a Batch entry, 0 for
	// a command with an entry of its own: with Index it identifies the
	// sub-command's transitions.
	Sub    int         `json:"sub,omitempty"`
	Type   CommandType `json:"type"`
	Status Status      `json:"status"`
	Reason string      `json:"reason,omitempty"`

	Node    string `json:"node,omitempty"`
	App     string `json:"app,omitempty"`
	Channel string `json:"channel,omitempty"`

	// Presence join/leave.
	MemberAdded   bool    `json:"member_added,omitempty"`   // first socket of the user cluster-wide
	MemberRemoved bool    `json:"member_removed,omitempty"` // last socket of the user cluster-wide
	Member        *Member `json:"member,omitempty"`         // the joining or leaving user
	// Members is not filled by the FSM: every replica applies every join,
	// and building the list there would cost O(members) each time. The
	// proposer reads its replica (FSM.Members) after Apply returns.
	Members []Member `json:"members,omitempty"`

	// Occupancy: the number of nodes with subscribers went 0→1 or 1→0.
	ChannelOccupied bool `json:"channel_occupied,omitempty"`
	ChannelVacated  bool `json:"channel_vacated,omitempty"`

	// NodeUp: the node was unknown or had an older incarnation, so it starts
	// with no entries and must re-propose its local state.
	NodeRegistered bool `json:"node_registered,omitempty"`

	// NodeGone, or NodeUp with a new incarnation: what the purge removed.
	Removed []RemovedMember `json:"removed,omitempty"`
	Vacated []ChannelRef    `json:"vacated,omitempty"`

	// Batch: the Result of each sub-command, in order. The Batch's own
	// Status is StatusApplied once the entry is valid; each sub-result has
	// its own.
	Batch []Result `json:"batch,omitempty"`
}

// Err maps a non-applied status to its sentinel error.
func (r Result) Err() error {
	switch r.Status {
	case StatusApplied:
		return nil
	case StatusStale:
		return fmt.Errorf("%s: %w: %s", r.Type, ErrStale, r.Reason)
	case StatusLimit:
		return fmt.Errorf("%s: %w: %s", r.Type, ErrLimit, r.Reason)
	default:
		return fmt.Errorf("%s: %w: %s", r.Type, ErrBadCommand, r.Reason)
	}
}

// WebhookID is an idempotency key for webhooks caused by this result:
// equal on every node, so a new leader re-sending it can be deduplicated,
// and distinct for each sub-command of a Batch.
func (r Result) WebhookID() string {
	if r.Sub > 0 {
		return fmt.Sprintf("%d.%d-%s", r.Index, r.Sub, r.Type)
	}
	return fmt.Sprintf("%d-%s", r.Index, r.Type)
}
