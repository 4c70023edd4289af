package pusher

import (
	"encoding/json"
	"time"
)

// Webhook event names.
const (
	WebhookChannelOccupied = "channel_occupied"
	WebhookChannelVacated  = "channel_vacated"
	WebhookMemberAdded     = "member_added"
	WebhookMemberRemoved   = "member_removed"
	WebhookClientEvent     = "client_event"
	WebhookCacheMiss       = "cache_miss"
	// WebhookSubscriptionCount carries a channel's new count, for apps
	// with subscription counts (subcount.go).
	WebhookSubscriptionCount = "subscription_count"
)

// WebhookEvent is one entry of a webhook payload's "events" array.
type WebhookEvent struct {
	Name     string          `json:"name"`
	Channel  string          `json:"channel"`
	Event    string          `json:"event,omitempty"`
	Data     json.RawMessage `json:"data,omitempty"`
	SocketID string          `json:"socket_id,omitempty"`
	UserID   json.RawMessage `json:"user_id,omitempty"`
	// SubscriptionCount is set on subscription_count events.
	SubscriptionCount *int `json:"subscription_count,omitempty"`
	// ID identifies the transition that caused the event, the same on every
	// node (a Raft log index in a cluster); empty for events of one node.
	ID string `json:"-"`
}

// WebhookSink takes webhook events for delivery. Send must not block.
type WebhookSink interface {
	Send(app *App, ev WebhookEvent)
}

// Metrics receives counts from the connection and API paths. Calls are made
// per frame or per publish, never per delivered message.
type Metrics interface {
	ConnectionOpened(appID string)
	ConnectionClosed(appID string)
	FrameReceived(appID string, bytes int)
	// FramesSent counts n frames of size bytes each, e.g. one publish fanned out to n sockets.
	FramesSent(appID string, n, bytes int)
	HTTPCall(appID string, received, sent int)
	// Rejected counts bad input and refusals by reason (bad_json, auth, quota, ...).
	Rejected(reason string)
}

// RateLimiter enforces per-app request rates. limit < 0 disables the check.
type RateLimiter interface {
	Consume(appID, key string, points, limit int) LimitResult
}

// LimitResult is the outcome of a Consume.
type LimitResult struct {
	Allowed   bool
	Limit     int
	Remaining int
	ResetIn   time.Duration
}

// Rate limiter keys, as in soketi.
const (
	LimitBackendEvents = "backend:events"
	LimitReadRequests  = "backend:request_read"
)

type nopWebhooks struct{}

func (nopWebhooks) Send(*App, WebhookEvent) {}

type nopMetrics struct{}

func (nopMetrics) ConnectionOpened(string)     {}
func (nopMetrics) ConnectionClosed(string)     {}
func (nopMetrics) FrameReceived(string, int)   {}
func (nopMetrics) FramesSent(string, int, int) {}
func (nopMetrics) HTTPCall(string, int, int)   {}
func (nopMetrics) Rejected(string)             {}

type unlimited struct{}

func (unlimited) Consume(_, _ string, _, limit int) LimitResult {
	return LimitResult{Allowed: true, Limit: limit, Remaining: -1}
}

// window is a fixed one-second rate window owned by one connection, so
// per-socket client-event limits need no shared map and cannot leak.
type window struct {
	start time.Time
	used  int
}

func (w *window) take(now time.Time, limit int) bool {
	if limit < 0 {
		return true
	}
	if now.Sub(w.start) >= time.Second {
		w.start, w.used = now, 0
	}
	w.used++
	return w.used <= limit
}
