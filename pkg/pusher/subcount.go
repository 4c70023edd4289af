package pusher

import (
	"context"
	"strconv"
	"sync"
	"time"
)

// Subscription counts, as Pusher sends them to apps that enable them
// (enableSubscriptionCount): every subscriber of a channel that is not a
// presence channel gets pusher_internal:subscription_count
// {"subscription_count": N}, N counted over every node, which pusher-js
// re-emits as pusher:subscription_count.
//
// The rule: a channel's count is sent when it changed, at most once per
// countTick (changes within one tick are sent as one), and, on a channel
// of more than countBusy subscriptions, at most once per countBusyEvery; a
// new subscriber is sent the count even when another left in the same
// tick. Each node sends to its own subscribers from one loop, so every
// subscriber sees the counts in the order they were taken. One node (the
// master, in a cluster) sends the subscription_count webhook by the same
// rule.
const (
	countTick      = 100 * time.Millisecond
	countBusy      = 100
	countBusyEvery = 5 * time.Second
	// maxCountedChannels bounds the channels whose last sent count is
	// kept; past it a channel's count is sent as if for the first time.
	maxCountedChannels = 1_000_000
)

// SubscriptionCounter is implemented by adapters that know a channel's
// subscriptions on every node without asking the other nodes.
type SubscriptionCounter interface {
	// SubscriptionCount is the channel's subscriptions on every node, as
	// this node knows them now.
	SubscriptionCount(appID, channel string) int
	// PublishLocal delivers f to this node's subscribers of channel only.
	PublishLocal(appID, channel string, f Frame) int
	// SendsCountWebhooks reports whether this node sends the
	// subscription_count webhooks (one node in a cluster does).
	SendsCountWebhooks() bool
}

type countKey struct{ app, channel string }

type countSent struct {
	n  int
	at time.Time
}

// subCounts tracks the channels whose count may have changed.
type subCounts struct {
	mu     sync.Mutex
	dirty  map[countKey]bool // → a subscriber joined since the last send
	sent   map[countKey]countSent
	wake   chan struct{}
	counts SubscriptionCounter
}

func newSubCounts(counts SubscriptionCounter) *subCounts {
	return &subCounts{dirty: map[countKey]bool{}, sent: map[countKey]countSent{}, wake: make(chan struct{}, 1), counts: counts}
}

// changed marks a channel's count for the next tick; joined says a
// subscriber of this node joined, who must hear the count.
func (sc *subCounts) changed(app, channel string, joined bool) {
	sc.mu.Lock()
	k := countKey{app, channel}
	sc.dirty[k] = sc.dirty[k] || joined
	sc.mu.Unlock()
	select {
	case sc.wake <- struct{}{}:
	default:
	}
}

// SubscriptionCountChanged is how an adapter reports a change of a
// channel's count made on another node.
func (s *Server) SubscriptionCountChanged(appID, channel string) {
	if s.counts != nil {
		s.counts.changed(appID, channel, false)
	}
}

// countsLoop sends the counts of changed channels every tick.
func (s *Server) countsLoop() {
	t := time.NewTicker(countTick)
	defer t.Stop()
	for {
		select {
		case <-s.stopSweep:
			return
		case <-s.counts.wake:
		}
		// Changes in the next tick join this send.
		select {
		case <-s.stopSweep:
			return
		case <-t.C:
		}
		s.sendCounts(time.Now())
	}
}

// sendCounts sends what changed; channels held back by the busy rule stay
// dirty and wake the loop again.
func (s *Server) sendCounts(now time.Time) {
	sc := s.counts
	sc.mu.Lock()
	dirty := sc.dirty
	sc.dirty = map[countKey]bool{}
	sc.mu.Unlock()
	webhooks := sc.counts.SendsCountWebhooks()
	var later map[countKey]bool
	for k, joined := range dirty {
		// Another node's report names any channel: only counted ones go on.
		app, err := s.opts.Apps.FindByID(context.Background(), k.app)
		if err != nil || app == nil || !CountsSubscriptions(app, k.channel) {
			continue
		}
		n := sc.counts.SubscriptionCount(k.app, k.channel)
		sc.mu.Lock()
		prev, known := sc.sent[k]
		sc.mu.Unlock()
		if known && prev.n == n && !joined {
			continue
		}
		if known && n > countBusy && now.Sub(prev.at) < countBusyEvery {
			if later == nil {
				later = map[countKey]bool{}
			}
			later[k] = joined
			continue
		}
		sc.mu.Lock()
		if n == 0 {
			delete(sc.sent, k)
		} else if known || len(sc.sent) < maxCountedChannels {
			sc.sent[k] = countSent{n: n, at: now}
		}
		sc.mu.Unlock()
		if n == 0 {
			continue // nobody left anywhere to tell
		}
		f := TextFrame(subscriptionCountJSON(k.channel, n))
		sent := sc.counts.PublishLocal(k.app, k.channel, f)
		if sent > 0 {
			s.opts.Metrics.FramesSent(k.app, sent, len(f))
		} else if !webhooks {
			// No subscriber here, and another node sends the webhooks:
			// nothing to remember.
			sc.mu.Lock()
			delete(sc.sent, k)
			sc.mu.Unlock()
		}
		if webhooks && (!known || prev.n != n) {
			s.webhook(app, WebhookEvent{Name: WebhookSubscriptionCount, Channel: k.channel, SubscriptionCount: &n})
		}
	}
	if len(later) > 0 {
		sc.mu.Lock()
		for k, j := range later {
			sc.dirty[k] = sc.dirty[k] || j
		}
		sc.mu.Unlock()
		select {
		case sc.wake <- struct{}{}:
		default:
		}
	}
}

// CountsSubscriptions reports whether app is sent the count of channel.
func CountsSubscriptions(app *App, channel string) bool {
	return app.EnableSubscriptionCount && KindOf(channel) != KindPresence
}

func subscriptionCountJSON(channel string, n int) []byte {
	b := append([]byte(nil), `{"event":"pusher_internal:subscription_count","channel":`...)
	b = appendJSONString(b, channel)
	b = append(b, `,"data":"{\"subscription_count\":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, `}"}`...)
}
