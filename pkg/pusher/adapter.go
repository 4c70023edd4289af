package pusher

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/soketi-go/soketi/internal/jsonx"
)

// Adapter owns who is connected and subscribed where, and carries messages to
// subscribers. The local adapter knows one process; a cluster adapter answers
// for every node and plugs in here without the handlers changing.
type Adapter interface {
	// AddSocket registers a new connection, enforcing the app's connection
	// quota atomically; it returns ErrOverQuota when the quota is full.
	AddSocket(ctx context.Context, c *Conn) error
	// RemoveSocket forgets a connection; its channels must already be left.
	// It reports the user who went offline with it, if any.
	RemoveSocket(c *Conn) UserChange

	// Subscribe adds c to channel (idempotent). member is non-nil for presence channels.
	Subscribe(ctx context.Context, c *Conn, channel string, member *Member) (JoinResult, error)
	// Unsubscribe removes c from channel.
	Unsubscribe(ctx context.Context, c *Conn, channel string) (LeaveResult, error)
	// SignIn records that c is authenticated as user, and reports who went
	// online (the user's first connection) or offline (c was the last
	// connection of the user it was signed in as before).
	SignIn(ctx context.Context, c *Conn, userID string) UserChange
	// OnlineUsers returns those of ids (at most a watchlist's length) that
	// have a signed-in connection, on any node.
	OnlineUsers(ctx context.Context, appID string, ids []string) ([]string, error)

	// Publish delivers f to every subscriber of channel on every node, except
	// the socket exceptSocketID. It returns the number of local deliveries.
	Publish(ctx context.Context, appID, channel string, f Frame, exceptSocketID string) (int, error)
	// SendToUser delivers f to every connection signed in as userID.
	SendToUser(ctx context.Context, appID, userID string, f Frame) (int, error)
	// TerminateUser disconnects every connection signed in as userID (4009).
	TerminateUser(ctx context.Context, appID, userID string) error

	SocketCount(ctx context.Context, appID string) (int, error)
	Channels(ctx context.Context, appID string) (map[string]ChannelInfo, error)
	Channel(ctx context.Context, appID, channel string) (ChannelInfo, error)
	Members(ctx context.Context, appID, channel string) ([]Member, error)
}

// ErrQuotaExceeded is returned by AddSocket when an app is at its connection quota.
var ErrQuotaExceeded = errors.New("pusher: connection quota reached")

// ErrUnavailable is wrapped by an adapter's Publish or SendToUser error when
// a node that should get the message could not take it: its queue is full,
// or this node is stopping. This node's own subscribers have had it. The
// API answers 503, which the caller should retry; subscribers that had the
// message get it again.
var ErrUnavailable = errors.New("pusher: not every node could take the message")

// ErrMemberLimit is returned by Subscribe when a presence channel is full.
var ErrMemberLimit = errors.New("pusher: presence channel member limit reached")

// ChannelInfo is what the HTTP API reports about a channel.
type ChannelInfo struct {
	SubscriptionCount int
	UserCount         int
}

// JoinResult tells the handler which transitions a subscription caused.
type JoinResult struct {
	Occupied    bool     // the channel went from no subscriber to one
	MemberAdded bool     // first connection of this user in the presence channel
	Members     []Member // presence members after the join, the joiner included
	// ID identifies the transitions cluster-wide, for webhook deduplication.
	ID string
	// Announced: the adapter has told the channel's subscribers on every node
	// of the member change; the server only sends the webhook.
	Announced bool
	// Sent: the adapter has sent the subscriber its subscription_succeeded
	// (a presence list it ordered with the member events that follow it).
	Sent bool
}

// LeaveResult tells the handler which transitions an unsubscription caused.
type LeaveResult struct {
	WasSubscribed bool
	Vacated       bool    // the channel has no subscriber left
	RemovedMember *Member // the user's last connection left the presence channel
	// ID identifies the transitions cluster-wide, for webhook deduplication.
	ID string
	// Announced: as in JoinResult.
	Announced bool
}

// Member is one user of a presence channel. UserID keeps its JSON type: 1 and "1" differ.
type Member struct {
	UserID   json.RawMessage `json:"user_id"`
	UserInfo json.RawMessage `json:"user_info,omitempty"`
}

// Key identifies the member within its channel.
func (m *Member) Key() string { return string(m.UserID) }

// compactJSON normalises a raw JSON value so equal values get equal keys
// (the same form the replicated state keys users by).
func compactJSON(raw json.RawMessage) json.RawMessage { return jsonx.Canonical(raw) }

// Transition is a change of a channel decided away from a local subscribe or
// unsubscribe, such as the members of a dead node being purged.
type Transition struct {
	Channel       string
	MemberAdded   *Member
	MemberRemoved *Member
	Occupied      bool
	Vacated       bool
	// WebhooksOnly: every node tells its own subscribers, so the server
	// only sends the webhooks.
	WebhooksOnly bool
	// ID identifies the transition cluster-wide, for webhook deduplication.
	ID string
}

// UserChange is a change of users' online state caused by a sign-in or a
// closed connection: watchers of those users get watchlist events.
type UserChange struct {
	Online, Offline string // user ids; "" for none
	// Announced: the adapter tells the watchers on every node itself
	// (Handler.UserStatus), once the change is decided cluster-wide.
	Announced bool
}

// Handler is how an adapter reports transitions back to the server, which
// then tells the channel's subscribers on every node and sends the webhooks.
type Handler interface {
	Announce(ctx context.Context, appID string, t Transition)
	// UserStatus tells this node's watchers of userID that the user went
	// online or offline. Every node calls it for every change, in the
	// order the changes were decided; it does not block.
	UserStatus(appID, userID string, online bool)
	// SubscriptionCountChanged says another node's count of a channel
	// changed (subcount.go); it does not block.
	SubscriptionCountChanged(appID, channel string)
	// StoreCache keeps f as the last event of a cache channel, published
	// through another node.
	StoreCache(appID, channel string, f Frame)
	// Delivered counts n local deliveries of f for a message that came from
	// another node, so the metrics count every frame this node writes.
	Delivered(appID string, n int, f Frame)
}

// CacheSharer is implemented by adapters that give the last event of a
// cache channel to the other nodes, so that a subscriber on any node gets it.
type CacheSharer interface {
	ShareCache(ctx context.Context, appID, channel string, f Frame)
}

// HandlerSetter is implemented by adapters that report transitions; New
// hands them the server.
type HandlerSetter interface {
	SetHandler(h Handler)
}
