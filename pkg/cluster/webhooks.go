package cluster

import (
	"context"
	"encoding/json"
	"time"

	"github.com/soketi-go/soketi/pkg/consensus"
	"github.com/soketi-go/soketi/pkg/pusher"
)

// The leader sends every presence and occupancy webhook from the
// replicated outbox (consensus/hooks.go), with ids made of log positions:
// one rule for every transition, whoever proposed it and whatever happened
// to the proposer's write. A new leader resends what the outbox still
// holds under the same ids.
const (
	hookPoll      = 50 * time.Millisecond
	hookMarkEvery = 250 * time.Millisecond
	hookBatch     = 1000
)

// sendHooks runs until ctx ends.
func (a *Adapter) sendHooks(ctx context.Context) {
	t := time.NewTicker(hookPoll)
	defer t.Stop()
	var (
		leading  bool
		cursor   uint64 // last index handed to the webhook sender
		marked   uint64 // last index trimmed by a HooksSent
		lastMark time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !a.replica.IsLeader() {
			leading = false
			continue
		}
		if !leading {
			// Everything still in the outbox may not have been sent by the
			// previous leader: resend it all, under the same ids.
			leading, cursor, marked = true, 0, 0
		}
		fsm := a.replica.FSM()
		for {
			hooks := fsm.PendingHooks(cursor, hookBatch)
			if len(hooks) == 0 {
				break
			}
			for _, h := range hooks {
				a.announce(ctx, h.App, hookTransition(h))
			}
			cursor = hooks[len(hooks)-1].Index
		}
		if cursor > marked && time.Since(lastMark) >= hookMarkEvery {
			lastMark = time.Now()
			mctx, cancel := context.WithTimeout(ctx, a.cfg.ApplyTimeout)
			if _, err := a.replica.Apply(mctx, consensus.HooksSent{UpTo: cursor}); err == nil {
				marked = cursor
			}
			cancel()
		}
	}
}

func hookTransition(h consensus.Hook) pusher.Transition {
	t := pusher.Transition{Channel: h.Channel, WebhooksOnly: true, ID: h.ID()}
	m := &pusher.Member{UserID: json.RawMessage(h.UserID)}
	switch h.Event {
	case consensus.HookMemberAdded:
		t.MemberAdded = m
	case consensus.HookMemberRemoved:
		t.MemberRemoved = m
	case consensus.HookChannelOccupied:
		t.Occupied = true
	case consensus.HookChannelVacated:
		t.Vacated = true
	}
	return t
}
