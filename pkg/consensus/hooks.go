package consensus

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
)

// The webhook outbox. Every transition that has a webhook (a member added
// or removed, a channel occupied or vacated, by a join, a leave, an
// occupancy change or a purge) is recorded in the replicated state when it
// commits. The leader hands each one to its webhook sender with an id made
// of its log position, then commits HooksSent to trim what it has handed
// over. A new leader resends what is still recorded, under the same ids, so
// no committed transition goes without its webhook when a forwarded write
// times out or the leader changes, and a receiver can drop a repeat by its
// X-Soketi-Webhook-Id.

// Hook event names, as Pusher's webhooks call them.
const (
	HookMemberAdded     = "member_added"
	HookMemberRemoved   = "member_removed"
	HookChannelOccupied = "channel_occupied"
	HookChannelVacated  = "channel_vacated"
)

// DefaultMaxPendingHooks bounds the outbox: beyond it the oldest are
// dropped (and counted), as a webhook queue that is full does.
const DefaultMaxPendingHooks = 100_000

// Hook is a transition whose webhook the leader owes.
type Hook struct {
	Index   uint64          `json:"index"`
	Seq     int             `json:"seq"` // its position among the entry's transitions
	Event   string          `json:"event"`
	App     string          `json:"app"`
	Channel string          `json:"channel"`
	UserID  json.RawMessage `json:"user_id,omitempty"`
}

// ID identifies the hook's webhook on every node and every leader.
func (h Hook) ID() string { return fmt.Sprintf("%d.%d", h.Index, h.Seq) }

// HooksSent trims the outbox up to and including log index UpTo: the
// leader has handed those webhooks to its sender.
type HooksSent struct {
	UpTo uint64 `json:"up_to"`
}

func (HooksSent) Type() CommandType { return CmdHooksSent }

func (c HooksSent) validate() error {
	if c.UpTo == 0 {
		return fmt.Errorf("%w: hooks_sent up to 0", ErrBadCommand)
	}
	return nil
}

// recordHooks appends the webhooks that res's transitions owe, numbered
// from seq, and returns the next number: the sub-results of one Batch
// entry continue one sequence. f.mu is held. Only applied results have any.
func (f *FSM) recordHooks(res *Result, seq int) int {
	if res.Status != StatusApplied {
		return seq
	}
	add := func(event, app, channel string, user json.RawMessage) {
		if channel == OnlineChannel {
			return // sign-ins have no webhooks
		}
		f.st.hooks = append(f.st.hooks, Hook{Index: res.Index, Seq: seq, Event: event, App: app, Channel: channel, UserID: user})
		seq++
	}
	if res.Member != nil && res.MemberAdded {
		add(HookMemberAdded, res.App, res.Channel, res.Member.UserID)
	}
	if res.Member != nil && res.MemberRemoved {
		add(HookMemberRemoved, res.App, res.Channel, res.Member.UserID)
	}
	if res.ChannelOccupied {
		add(HookChannelOccupied, res.App, res.Channel, nil)
	}
	if res.ChannelVacated {
		add(HookChannelVacated, res.App, res.Channel, nil)
	}
	for _, rm := range res.Removed {
		add(HookMemberRemoved, rm.App, rm.Channel, rm.Member.UserID)
	}
	for _, v := range res.Vacated {
		add(HookChannelVacated, v.App, v.Channel, nil)
	}
	return seq
}

// trimHooks drops the oldest hooks beyond the outbox's bound; f.mu is held.
func (f *FSM) trimHooks() {
	if over := len(f.st.hooks) - f.limits.MaxPendingHooks; over > 0 {
		f.st.hooksDropped += uint64(over)
		f.st.hooks = append(f.st.hooks[:0:0], f.st.hooks[over:]...)
	}
}

// hooksSent trims the outbox; f.mu is held.
func (f *FSM) hooksSent(c HooksSent) {
	i := 0
	for i < len(f.st.hooks) && f.st.hooks[i].Index <= c.UpTo {
		i++
	}
	if i > 0 {
		f.st.hooks = append(f.st.hooks[:0:0], f.st.hooks[i:]...)
	}
}

// PendingHooks returns up to about max recorded hooks of entries after log
// index after, oldest first; the hooks of one entry are never split.
func (f *FSM) PendingHooks(after uint64, max int) []Hook {
	f.mu.RLock()
	defer f.mu.RUnlock()
	// The outbox is in log order: skip what was handed over without a
	// scan, since the leader polls it every few tens of milliseconds.
	start, _ := slices.BinarySearchFunc(f.st.hooks, after+1, func(h Hook, i uint64) int { return cmp.Compare(h.Index, i) })
	var out []Hook
	for _, h := range f.st.hooks[start:] {
		if len(out) >= max && out[len(out)-1].Index != h.Index {
			break
		}
		out = append(out, h)
	}
	return out
}

// HooksDropped counts hooks dropped at the outbox's bound.
func (f *FSM) HooksDropped() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.hooksDropped
}
