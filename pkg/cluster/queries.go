package cluster

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/soketi-go/soketi/pkg/cluster/stream"
)

// Cluster-wide queries ask every alive peer for its local answer over the
// streams and wait at most RequestTimeout; a peer that does not answer in
// time is left out, never waited on past the bound.
const (
	opChannels = "channels"
	opChannel  = "channel"
	opReport   = "report" // the peer's NodeReport, for the cluster page
	// maxAnswering bounds queries being answered at once; more are dropped
	// (the asker then times out on this node).
	maxAnswering = 64
	// maxPending bounds this node's own queries in flight.
	maxPending = 1024
)

type query struct {
	ID      uint64 `json:"id"`
	Op      string `json:"op"`
	App     string `json:"app"`
	Channel string `json:"channel,omitempty"`
}

type reply struct {
	ID       uint64         `json:"id"`
	Channels map[string]int `json:"channels"`
	Report   *NodeReport    `json:"report,omitempty"`
}

type queries struct {
	a         *Adapter
	next      atomic.Uint64
	mu        sync.Mutex
	pending   map[uint64]chan reply
	answering chan struct{}
	answered  atomic.Uint64
	timedOut  atomic.Uint64
}

func newQueries(a *Adapter) *queries {
	return &queries{a: a, pending: map[uint64]chan reply{}, answering: make(chan struct{}, maxAnswering)}
}

// gather asks every alive peer and returns the replies that came in time.
func (q *queries) gather(ctx context.Context, qu query) []reply {
	peers := q.a.alivePeers()
	if len(peers) == 0 {
		return nil
	}
	qu.ID = q.next.Add(1)
	ch := make(chan reply, len(peers))
	q.mu.Lock()
	if len(q.pending) >= maxPending {
		q.mu.Unlock()
		q.timedOut.Add(1)
		return nil
	}
	q.pending[qu.ID] = ch
	q.mu.Unlock()
	defer func() {
		q.mu.Lock()
		delete(q.pending, qu.ID)
		q.mu.Unlock()
	}()

	b, _ := json.Marshal(control{Type: "query", Query: &qu})
	asked := 0
	for _, p := range peers {
		if q.a.streams.Send(ctx, p, stream.Message{Kind: stream.KindControl, Payload: b}) == nil {
			asked++
		}
	}
	timer := time.NewTimer(q.a.cfg.RequestTimeout)
	defer timer.Stop()
	out := make([]reply, 0, asked)
	for len(out) < asked {
		select {
		case r := <-ch:
			out = append(out, r)
		case <-timer.C:
			q.timedOut.Add(1)
			return out
		case <-ctx.Done():
			return out
		}
	}
	return out
}

// answer computes this node's part of a peer's query off the stream reader.
func (q *queries) answer(from string, qu query) {
	select {
	case q.answering <- struct{}{}:
	default:
		return
	}
	go func() {
		defer func() { <-q.answering }()
		ctx, cancel := context.WithTimeout(context.Background(), q.a.cfg.RequestTimeout)
		defer cancel()
		r := reply{ID: qu.ID, Channels: map[string]int{}}
		switch qu.Op {
		case opChannels:
			chans, _ := q.a.local.Channels(ctx, qu.App)
			for name, ci := range chans {
				r.Channels[name] = ci.SubscriptionCount
			}
		case opChannel:
			ci, _ := q.a.local.Channel(ctx, qu.App, qu.Channel)
			r.Channels[qu.Channel] = ci.SubscriptionCount
		case opReport:
			if q.a.reporter == nil {
				return
			}
			rep := q.a.reporter()
			r.Report = &rep
		default:
			return
		}
		b, _ := json.Marshal(control{Type: "reply", Reply: &r})
		if q.a.streams.Send(ctx, from, stream.Message{Kind: stream.KindControl, Payload: b}) == nil {
			q.answered.Add(1)
		}
	}()
}

func (q *queries) resolve(_ string, r reply) {
	q.mu.Lock()
	ch := q.pending[r.ID]
	q.mu.Unlock()
	if ch != nil {
		select {
		case ch <- r:
		default:
		}
	}
}
