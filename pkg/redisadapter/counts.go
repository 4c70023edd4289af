package redisadapter

import (
	"context"

	"github.com/soketi-go/soketi/pkg/pusher"
)

// Subscription counts: each node's count of a channel is in Redis already
// (the subs hash); a node whose count of a counted channel changed tells
// the others, which read the sum when the server's rule says to send it
// (pusher/subcount.go).

// SubscriptionCount sums every node's subscriptions of the channel; this
// node's own count alone while Redis is away.
func (a *Adapter) SubscriptionCount(appID, channel string) int {
	ctx, cancel := a.op(context.Background())
	defer cancel()
	counts, err := a.rdb.HGetAll(ctx, a.k.subs(appID, channel)).Result()
	if err != nil {
		return a.local.SubscriptionCount(appID, channel)
	}
	return sum(counts)
}

// PublishLocal delivers to this node's subscribers only.
func (a *Adapter) PublishLocal(appID, channel string, f pusher.Frame) int {
	return a.local.PublishLocal(appID, channel, f)
}

// SendsCountWebhooks: the live node with the smallest id sends them.
func (a *Adapter) SendsCountWebhooks() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.live) == 0 || a.live[0] == a.cfg.NodeID
}

// countChanged tells the other nodes that this node's count of a counted
// channel changed.
func (a *Adapter) countChanged(app *pusher.App, channel string) {
	if pusher.CountsSubscriptions(app, channel) {
		a.control(context.Background(), control{Type: ctlCount, App: app.ID, Channel: channel})
	}
}
