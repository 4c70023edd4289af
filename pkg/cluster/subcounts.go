package cluster

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/soketi-go/soketi/pkg/cluster/stream"
	"github.com/soketi-go/soketi/pkg/pusher"
)

// Subscription counts over the cluster: each node tells the others, over
// the ordered streams, the local count of every counted channel that
// changed (within countsTick), and all of them every countsFullEvery and
// when a peer comes up, so a restarted or rejoined node catches up. A
// node's count of a channel is its own plus the latest report of every
// alive peer; a peer that dies drops out of every sum at once. The server
// (pusher/subcount.go) decides when subscribers hear a count.
const (
	countsTick      = 100 * time.Millisecond
	countsFullEvery = 5 * time.Second
	// maxCountsPerMessage bounds one report; more go in further messages.
	maxCountsPerMessage = 1000
	// maxReportedChannels bounds the channels kept per peer; a report past
	// it is dropped (the peer then counts as having no subscriber there).
	maxReportedChannels = 100_000
)

type countKey struct{ app, channel string }

// channelCount is one entry of a report.
type channelCount struct {
	App     string `json:"a"`
	Channel string `json:"c"`
	N       int    `json:"n"`
}

type subCounts struct {
	mu       sync.Mutex
	changed  map[countKey]struct{} // local counts to report
	reported map[countKey]struct{} // local channels reported non-zero
	byPeer   map[string]map[countKey]int
	full     bool // report every channel at the next tick
}

func newSubCounts() *subCounts {
	return &subCounts{changed: map[countKey]struct{}{}, reported: map[countKey]struct{}{},
		byPeer: map[string]map[countKey]int{}}
}

// SubscriptionCount is this node's count plus every alive peer's latest.
func (a *Adapter) SubscriptionCount(appID, channel string) int {
	n := a.local.SubscriptionCount(appID, channel)
	k := countKey{appID, channel}
	a.subcounts.mu.Lock()
	for _, counts := range a.subcounts.byPeer {
		n += counts[k]
	}
	a.subcounts.mu.Unlock()
	return n
}

// PublishLocal delivers to this node's subscribers: every node sends the
// count to its own.
func (a *Adapter) PublishLocal(appID, channel string, f pusher.Frame) int {
	return a.local.PublishLocal(appID, channel, f)
}

// SendsCountWebhooks: the master sends the subscription_count webhooks.
func (a *Adapter) SendsCountWebhooks() bool { return a.replica.IsLeader() }

// localCountChanged queues a local count for the next report.
func (a *Adapter) localCountChanged(app *pusher.App, channel string) {
	if !pusher.CountsSubscriptions(app, channel) {
		return
	}
	a.subcounts.mu.Lock()
	a.subcounts.changed[countKey{app.ID, channel}] = struct{}{}
	a.subcounts.mu.Unlock()
}

// peersChanged forgets the counts of peers that are no longer alive and
// asks for a full report, for the peers that came up.
func (a *Adapter) peersChanged(alive []string) {
	up := make(map[string]bool, len(alive))
	for _, p := range alive {
		up[p] = true
	}
	var dropped []countKey
	sc := a.subcounts
	sc.mu.Lock()
	for p, counts := range sc.byPeer {
		if !up[p] {
			for k := range counts {
				dropped = append(dropped, k)
			}
			delete(sc.byPeer, p)
		}
	}
	for p := range up {
		if _, known := sc.byPeer[p]; !known {
			sc.byPeer[p] = map[countKey]int{}
			sc.full = true
		}
	}
	sc.mu.Unlock()
	a.countsChanged(dropped)
}

func (a *Adapter) countsChanged(keys []countKey) {
	if len(keys) == 0 {
		return
	}
	b := a.handler.Load()
	if b == nil {
		return
	}
	for _, k := range keys {
		b.h.SubscriptionCountChanged(k.app, k.channel)
	}
}

// reportCounts runs until ctx ends.
func (a *Adapter) reportCounts(ctx context.Context) {
	t := time.NewTicker(countsTick)
	defer t.Stop()
	lastFull := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sc := a.subcounts
		sc.mu.Lock()
		full := sc.full || time.Since(lastFull) >= countsFullEvery
		sc.full = false
		keys := sc.changed
		sc.changed = map[countKey]struct{}{}
		if full {
			for k := range sc.reported {
				keys[k] = struct{}{}
			}
		}
		sc.mu.Unlock()
		if full {
			lastFull = time.Now()
		}
		if len(keys) == 0 {
			continue
		}
		entries := make([]channelCount, 0, len(keys))
		for k := range keys {
			n := a.local.SubscriptionCount(k.app, k.channel)
			entries = append(entries, channelCount{App: k.app, Channel: k.channel, N: n})
		}
		sc.mu.Lock()
		for _, e := range entries {
			if e.N == 0 {
				delete(sc.reported, countKey{e.App, e.Channel})
			} else {
				sc.reported[countKey{e.App, e.Channel}] = struct{}{}
			}
		}
		sc.mu.Unlock()
		peers := a.alivePeers()
		for len(entries) > 0 && len(peers) > 0 {
			part := entries[:min(len(entries), maxCountsPerMessage)]
			entries = entries[len(part):]
			b, err := json.Marshal(control{Type: ctlSubCounts, Counts: part})
			if err != nil {
				break
			}
			if err := a.streams.Broadcast(ctx, stream.Message{Kind: stream.KindControl, Payload: b}, peers); err != nil {
				// A peer that refused a part gets everything at the next
				// full report.
				sc.mu.Lock()
				sc.full = true
				sc.mu.Unlock()
			}
		}
	}
}

// receiveCounts takes a peer's report.
func (a *Adapter) receiveCounts(from string, entries []channelCount) {
	var changed []countKey
	sc := a.subcounts
	sc.mu.Lock()
	counts, alive := sc.byPeer[from]
	if alive {
		for _, e := range entries {
			k := countKey{e.App, e.Channel}
			old, had := counts[k]
			switch {
			case e.N <= 0 && had:
				delete(counts, k)
			case e.N > 0 && (had || len(counts) < maxReportedChannels):
				counts[k] = e.N
			default:
				continue
			}
			if old != max(e.N, 0) {
				changed = append(changed, k)
			}
		}
	}
	sc.mu.Unlock()
	a.countsChanged(changed)
}
