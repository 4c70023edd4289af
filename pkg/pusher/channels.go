package pusher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/soketi-go/soketi/internal/jsonx"
)

const errIllegalChannel = "The channel name is not allowed. Read channel conventions: " +
	"https://pusher.com/docs/channels/using_channels/channels/#channel-naming-conventions"

// presenceServerError keeps soketi's (misspelt) text, which clients may match on.
const presenceServerError = "A server error has occured."

func (s *Server) subscribe(ctx context.Context, c *Conn, m *inbound) {
	if s.closing.Load() {
		c.CloseWith(ErrServerClosed)
		return
	}
	var d subscribeData
	if m.object(&d) != nil {
		s.opts.Metrics.Rejected("bad_subscribe")
		c.sendJSON(subscriptionErrorJSON("", "", errIllegalChannel, 4009))
		return
	}
	channel, _ := d.Channel.(string)
	app := c.App
	if utf16Len(channel) > app.MaxChannelNameLength {
		s.opts.Metrics.Rejected("channel_name_length")
		c.sendJSON(subscriptionErrorJSON(channel, "LimitReached",
			fmt.Sprintf("The channel name is longer than the allowed %d characters.", app.MaxChannelNameLength), 4009))
		return
	}
	if strings.HasPrefix(channel, PrefixServerToUser) {
		// pusher-js subscribes to its own user channel after signing in;
		// messages reach it through the user index, so only acknowledge.
		if uid := c.UserID(); uid != "" && channel == PrefixServerToUser+uid {
			c.sendJSON(EventJSON("pusher_internal:subscription_succeeded", channel, nil, nil))
			return
		}
	}
	if !ValidChannelName(channel) {
		s.opts.Metrics.Rejected("channel_name")
		c.sendJSON(subscriptionErrorJSON(channel, "", errIllegalChannel, 4009))
		return
	}

	kind := KindOf(channel)
	var member *Member
	if kind != KindPublic {
		channelData, isString := d.ChannelData.(string)
		toSign := c.ID + ":" + channel
		if kind == KindPresence {
			toSign += ":" + channelData
		}
		if (kind == KindPresence && !isString) || !validToken(app, d.Auth, toSign) {
			s.opts.Metrics.Rejected("channel_auth")
			c.sendJSON(subscriptionErrorJSON(channel, "AuthError", "The connection is unauthorized.", 401))
			return
		}
		if kind == KindPresence {
			var err *subscriptionFailure
			member, err = parseChannelData(app, channelData)
			if err != nil {
				s.opts.Metrics.Rejected("presence_member")
				c.sendJSON(subscriptionErrorJSON(channel, err.typ, err.msg, err.status))
				return
			}
		}
	}

	if already, current := c.isSubscribed(channel); already {
		// Re-subscribing succeeds again without a second join; the member
		// stays the one that joined first.
		if kind == KindPresence {
			members, err := s.opts.Adapter.Members(ctx, app.ID, channel)
			if err != nil || current == nil {
				c.sendJSON(subscriptionErrorJSON(channel, "ServerError", presenceServerError, 4302))
				return
			}
			c.sendJSON(SubscriptionSucceededJSON(channel, members))
		} else {
			c.sendJSON(EventJSON("pusher_internal:subscription_succeeded", channel, nil, nil))
		}
		return
	}

	res, err := s.opts.Adapter.Subscribe(ctx, c, channel, member)
	if err != nil {
		if errors.Is(err, ErrMemberLimit) {
			s.opts.Metrics.Rejected("presence_member_limit")
			c.sendJSON(subscriptionErrorJSON(channel, "LimitReached",
				"The maximum members per presence channel limit was reached", 4100))
			return
		}
		s.log.Warn("subscribe failed", "app_id", app.ID, "channel", channel, "err", err)
		c.sendJSON(subscriptionErrorJSON(channel, "ServerError", presenceServerError, 4302))
		return
	}
	c.mu.Lock()
	c.channels.set(channel, member)
	c.mu.Unlock()
	if kind != KindPublic {
		c.stopAuthTimer()
	}
	if s.counts != nil && CountsSubscriptions(app, channel) {
		s.counts.changed(app.ID, channel, true)
	}
	if res.Occupied {
		s.webhook(app, WebhookEvent{Name: WebhookChannelOccupied, Channel: channel, ID: eventID(res.ID, WebhookChannelOccupied)})
	}

	if kind == KindPresence {
		// The joiner hears first: its member list does not wait behind
		// the member_added to everyone else.
		if !res.Sent {
			c.sendJSON(SubscriptionSucceededJSON(channel, res.Members))
		}
		if res.MemberAdded {
			if !res.Announced {
				s.broadcast(ctx, app, channel, MemberAddedJSON(channel, *member), c.ID)
			}
			s.webhook(app, WebhookEvent{Name: WebhookMemberAdded, Channel: channel, UserID: member.UserID, ID: eventID(res.ID, WebhookMemberAdded)})
		}
	} else {
		c.sendJSON(EventJSON("pusher_internal:subscription_succeeded", channel, nil, nil))
	}

	if IsCacheChannel(channel) {
		if cached := s.cachedEvent(ctx, app.ID, channel); cached != nil {
			c.Send(cached)
			s.opts.Metrics.FramesSent(app.ID, 1, len(cached))
		} else {
			c.sendJSON(EventJSON("pusher:cache_miss", channel, nil, nil))
			s.webhook(app, WebhookEvent{Name: WebhookCacheMiss, Channel: channel})
		}
	}
}

type subscriptionFailure struct {
	typ    string
	msg    string
	status int
}

func parseChannelData(app *App, raw string) (*Member, *subscriptionFailure) {
	var cd struct {
		UserID   json.RawMessage `json:"user_id"`
		UserInfo json.RawMessage `json:"user_info"`
	}
	if json.Unmarshal([]byte(raw), &cd) != nil || len(cd.UserID) == 0 || string(cd.UserID) == "null" {
		return nil, &subscriptionFailure{"ServerError", presenceServerError, 4302}
	}
	if payloadKB(cd.UserInfo) > app.MaxPresenceMemberSizeInKB {
		return nil, &subscriptionFailure{"LimitReached",
			fmt.Sprintf("The maximum size for a channel member is %s KB.", formatNumber(app.MaxPresenceMemberSizeInKB)), 4301}
	}
	m := &Member{UserID: compactJSON(cd.UserID)}
	if len(cd.UserInfo) > 0 && string(cd.UserInfo) != "null" {
		m.UserInfo = compactJSON(cd.UserInfo)
	}
	return m, nil
}

func formatNumber(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// SubscriptionSucceededJSON is a presence channel's
// pusher_internal:subscription_succeeded with its member list.
func SubscriptionSucceededJSON(channel string, members []Member) []byte {
	// This is the largest frame the server makes (members × user_info),
	// once per join, so its text is quoted straight into the event.
	text := presenceText(members)
	b := make([]byte, 0, 96+len(channel)+len(text)+len(text)/8)
	b = append(b, `{"event":"pusher_internal:subscription_succeeded","channel":`...)
	b = appendJSONString(b, channel)
	b = append(b, `,"data":`...)
	b = jsonx.AppendQuoted(b, text)
	return append(b, '}')
}

// presenceText is the subscription_succeeded data before it is quoted:
// {"presence":{"ids":[...],"hash":{...},"count":n}}. Ids and user_info are
// JSON already (canonical, from the auth or the replica), so they are
// copied, not re-encoded.
func presenceText(members []Member) []byte {
	size := 64
	for _, m := range members {
		size += 2*len(m.UserID) + len(m.UserInfo) + 8
	}
	b := make([]byte, 0, size)
	b = append(b, `{"presence":{"ids":[`...)
	for i, m := range members {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, m.UserID...)
	}
	b = append(b, `],"hash":{`...)
	for i, m := range members {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendHashKey(b, m.UserID)
		b = append(b, ':')
		if m.UserInfo == nil {
			b = append(b, "null"...)
		} else {
			b = append(b, m.UserInfo...)
		}
	}
	b = append(b, `},"count":`...)
	b = strconv.AppendInt(b, int64(len(members)), 10)
	return append(b, "}}"...)
}

// appendHashKey writes a user id as an object key: a string id as it is,
// any other id (a number) as the string of its text.
func appendHashKey(b []byte, id json.RawMessage) []byte {
	if len(id) > 0 && id[0] == '"' {
		return append(b, id...)
	}
	return jsonx.AppendQuoted(b, id)
}

// leave unsubscribes c from channel and announces what changed.
func (s *Server) leave(ctx context.Context, c *Conn, channel string) {
	res, err := s.opts.Adapter.Unsubscribe(ctx, c, channel)
	c.mu.Lock()
	c.channels.del(channel)
	c.mu.Unlock()
	if err != nil {
		s.log.Warn("unsubscribe failed", "app_id", c.App.ID, "channel", channel, "err", err)
		return
	}
	app := c.App
	if s.counts != nil && res.WasSubscribed && CountsSubscriptions(app, channel) {
		s.counts.changed(app.ID, channel, false)
	}
	if res.RemovedMember != nil {
		if !res.Announced {
			s.broadcast(ctx, app, channel, MemberRemovedJSON(channel, *res.RemovedMember), "")
		}
		s.webhook(app, WebhookEvent{Name: WebhookMemberRemoved, Channel: channel, UserID: res.RemovedMember.UserID, ID: eventID(res.ID, WebhookMemberRemoved)})
	}
	if res.Vacated {
		s.webhook(app, WebhookEvent{Name: WebhookChannelVacated, Channel: channel, ID: eventID(res.ID, WebhookChannelVacated)})
	}
}

func (s *Server) clientEvent(ctx context.Context, c *Conn, m *inbound) {
	app := c.App
	fail := func(reason, msg string) {
		s.opts.Metrics.Rejected(reason)
		c.sendJSON(errorJSON(&Error{4301, msg}, m.Channel))
	}
	if !app.EnableClientMessages {
		fail("client_events_disabled", "The app does not have client messaging enabled.")
		return
	}
	kind := KindOf(m.Channel)
	if kind != KindPrivate && kind != KindPresence {
		fail("client_event_channel", "Client events are only supported on private and presence channels.")
		return
	}
	if utf16Len(m.Event) > app.MaxEventNameLength {
		fail("event_name_length", fmt.Sprintf("Event name is too long. Maximum allowed size is %d.", app.MaxEventNameLength))
		return
	}
	if payloadKB(m.Data) > app.MaxEventPayloadInKB {
		fail("payload_size", fmt.Sprintf("The event data should be less than %s KB.", formatNumber(app.MaxEventPayloadInKB)))
		return
	}
	subscribed, member := c.isSubscribed(m.Channel)
	if !subscribed {
		s.opts.Metrics.Rejected("client_event_not_subscribed")
		return
	}
	c.mu.Lock()
	allowed := c.clientWin.take(time.Now(), app.MaxClientEventsPerSecond)
	c.mu.Unlock()
	if !allowed {
		fail("client_event_rate", "The rate limit for sending client events exceeded the quota.")
		return
	}
	var userID json.RawMessage
	if member != nil {
		userID = member.UserID
	}
	s.broadcast(ctx, app, m.Channel, EventJSON(m.Event, m.Channel, m.Data, userID), c.ID)
	if app.HasWebhook(WebhookClientEvent) {
		s.webhook(app, WebhookEvent{Name: WebhookClientEvent, Channel: m.Channel, Event: m.Event,
			Data: m.Data, SocketID: c.ID, UserID: userID})
	}
}

// maxSigninsPerSecond bounds a connection's sign-ins: each may change the
// replicated online state and read its whole watchlist.
const maxSigninsPerSecond = 1

// errWatchlist refuses signed user data whose watchlist is not a list of
// at most MaxWatchlistLength ids.
var errWatchlist = &Error{4009, "The watchlist must be an array of at most 100 user ids."}

func (s *Server) signin(ctx context.Context, c *Conn, m *inbound) {
	c.mu.Lock()
	allowed := c.signinWin.take(time.Now(), maxSigninsPerSecond)
	c.mu.Unlock()
	if !allowed {
		s.opts.Metrics.Rejected("signin_rate")
		c.sendJSON(errorJSON(&Error{4301, "The rate limit for sign-ins was exceeded."}, ""))
		return
	}
	var d signinData
	if m.object(&d) != nil {
		s.opts.Metrics.Rejected("signin")
		c.CloseWith(ErrSigninInvalid)
		return
	}
	userData, ok := d.UserData.(string)
	if !ok || !validToken(c.App, d.Auth, c.ID+"::user::"+userData) {
		s.opts.Metrics.Rejected("signin")
		c.CloseWith(ErrSigninInvalid)
		return
	}
	var u struct {
		ID        any             `json:"id"`
		Watchlist json.RawMessage `json:"watchlist"`
	}
	_ = json.Unmarshal([]byte(userData), &u)
	var id string
	switch v := u.ID.(type) {
	case string:
		id = v
	case float64:
		id = strconv.FormatFloat(v, 'f', -1, 64)
	}
	if id == "" {
		s.opts.Metrics.Rejected("signin")
		c.CloseWith(ErrSigninNoID)
		return
	}
	watchlist, ok := parseWatchlist(u.Watchlist)
	if !ok {
		s.opts.Metrics.Rejected("signin_watchlist")
		c.CloseWith(errWatchlist)
		return
	}
	s.userChanged(c.App.ID, s.opts.Adapter.SignIn(ctx, c, id))
	c.stopAuthTimer()
	data, _ := json.Marshal(map[string]string{"user_data": userData, "auth": d.Auth})
	c.sendJSON(EventJSON("pusher:signin_success", "", data, nil))
	if err := s.watch.watch(ctx, c, watchlist, s.opts.Adapter); err != nil {
		s.log.Warn("watchlist state unavailable", "app_id", c.App.ID, "err", err)
	}
}

// broadcast frames payload once and hands it to the adapter for every node.
func (s *Server) broadcast(ctx context.Context, app *App, channel string, payload []byte, except string) {
	f := TextFrame(payload)
	n, err := s.opts.Adapter.Publish(ctx, app.ID, channel, f, except)
	if err != nil {
		s.log.Warn("publish failed", "app_id", app.ID, "channel", channel, "err", err)
	}
	if n > 0 {
		s.opts.Metrics.FramesSent(app.ID, n, len(f))
	}
}

func (s *Server) webhook(app *App, ev WebhookEvent) {
	if app.HasWebhook(ev.Name) {
		s.opts.Webhooks.Send(app, ev)
	}
}
