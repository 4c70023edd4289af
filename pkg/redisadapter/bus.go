package redisadapter

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/soketi-go/soketi/pkg/pusher"
)

// Pub/Sub: broadcasts in soketi's format on the adapter channel, soketi's
// requests (this node answers the ones it can from its own sockets, so a
// soketi node in the same fleet counts them), and this server's control
// messages. Pub/Sub delivers at most once: a message sent while a node's
// subscription is down does not reach it (the README says so).

// control is a message between nodes of this server.
type control struct {
	UUID    string `json:"uuid"`
	Type    string `json:"t"`
	App     string `json:"app"`
	Channel string `json:"channel,omitempty"`
	User    string `json:"user,omitempty"`
	Online  bool   `json:"online,omitempty"`
}

const (
	ctlUser  = "user"  // a user went online or offline
	ctlCount = "count" // a node's count of a counted channel changed
)

func (a *Adapter) control(ctx context.Context, c control) {
	c.UUID = a.cfg.NodeID
	b, _ := json.Marshal(c)
	ctx, cancel := a.op(ctx)
	defer cancel()
	if err := a.rdb.Publish(ctx, a.ctlCh, b).Err(); err != nil {
		a.warnf("control message not sent", "type", c.Type, "err", err)
	}
}

// soketiRequest and the answers below are soketi's request/response
// messages (its horizontal adapter).
type soketiRequest struct {
	RequestID string         `json:"requestId"`
	AppID     string         `json:"appId"`
	Type      int            `json:"type"`
	Opts      map[string]any `json:"opts,omitempty"`
}

// soketi's request types this node answers.
const (
	reqChannelMembers      = 3
	reqChannelMembersCount = 5
	reqSocketsCount        = 4
	reqChannelSocketsCount = 6
	reqSocketExists        = 7
	reqChannelsWithSockets = 8
	reqTerminateUser       = 9
	maxMessageBytes        = 16 << 20 // larger messages are dropped, never decoded
	ownRequestsKeptFor     = time.Minute
)

// receive handles every message until the subscription closes.
func (a *Adapter) receive() {
	ch := a.pubsub.Channel(redis.WithChannelSize(4096))
	sweep := time.NewTicker(ownRequestsKeptFor)
	defer sweep.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-sweep.C:
			a.ownReqs.Range(func(k, v any) bool {
				if time.Since(v.(time.Time)) > ownRequestsKeptFor {
					a.ownReqs.Delete(k)
				}
				return true
			})
		case m, ok := <-ch:
			if !ok {
				return
			}
			if len(m.Payload) > maxMessageBytes {
				continue
			}
			switch m.Channel {
			case a.bcast:
				a.onBroadcast(m.Payload)
			case a.reqCh:
				a.onRequest(m.Payload)
			case a.ctlCh:
				a.onControl(m.Payload)
			}
		}
	}
}

func (a *Adapter) onBroadcast(payload string) {
	var m busMessage
	if json.Unmarshal([]byte(payload), &m) != nil || m.UUID == a.cfg.NodeID || m.AppID == "" || m.Channel == "" || m.Data == "" {
		return
	}
	ctx := context.Background()
	f := pusher.TextFrame([]byte(m.Data))
	var n int
	if user, ok := strings.CutPrefix(m.Channel, pusher.PrefixServerToUser); ok {
		n, _ = a.local.SendToUser(ctx, m.AppID, user, f)
	} else {
		except := ""
		if m.ExceptingID != nil {
			except = *m.ExceptingID
		}
		n, _ = a.local.Publish(ctx, m.AppID, m.Channel, f, except)
	}
	if h := a.handlerOf(); h != nil && n > 0 {
		h.Delivered(m.AppID, n, f)
	}
}

func (a *Adapter) onControl(payload string) {
	var c control
	if json.Unmarshal([]byte(payload), &c) != nil || c.UUID == a.cfg.NodeID || c.App == "" {
		return
	}
	h := a.handlerOf()
	if h == nil {
		return
	}
	switch c.Type {
	case ctlUser:
		h.UserStatus(c.App, c.User, c.Online)
	case ctlCount:
		h.SubscriptionCountChanged(c.App, c.Channel)
	}
}

// onRequest answers a soketi node's request from this node's sockets.
func (a *Adapter) onRequest(payload string) {
	var r soketiRequest
	if json.Unmarshal([]byte(payload), &r) != nil || r.RequestID == "" || r.AppID == "" {
		return
	}
	if _, mine := a.ownReqs.Load(r.RequestID); mine {
		return
	}
	ctx := context.Background()
	opt := func(name string) string { s, _ := r.Opts[name].(string); return s }
	answer := map[string]any{"requestId": r.RequestID}
	switch r.Type {
	case reqSocketsCount:
		n, _ := a.local.SocketCount(ctx, r.AppID)
		answer["totalCount"] = n
	case reqChannelSocketsCount:
		answer["totalCount"] = a.local.SubscriptionCount(r.AppID, opt("channel"))
	case reqChannelMembersCount:
		ms, _ := a.local.Members(ctx, r.AppID, opt("channel"))
		answer["totalCount"] = len(ms)
	case reqChannelMembers:
		ms, _ := a.local.Members(ctx, r.AppID, opt("channel"))
		pairs := make([][2]json.RawMessage, 0, len(ms))
		for _, m := range ms {
			info := m.UserInfo
			if info == nil {
				info = json.RawMessage("null")
			}
			pairs = append(pairs, [2]json.RawMessage{m.UserID, info})
		}
		answer["members"] = pairs
	case reqSocketExists:
		exists := false
		for _, c := range a.local.LocalSockets(r.AppID) {
			if c.ID == opt("wsId") {
				for _, ch := range c.Channels() {
					exists = exists || ch == opt("channel")
				}
			}
		}
		answer["exists"] = exists
	case reqChannelsWithSockets:
		chans, _ := a.local.Channels(ctx, r.AppID)
		pairs := make([][2]any, 0, len(chans))
		for name, ci := range chans {
			pairs = append(pairs, [2]any{name, ci.SubscriptionCount})
		}
		answer["channelsWithSocketsCount"] = pairs
	case reqTerminateUser:
		_ = a.local.TerminateUser(ctx, r.AppID, opt("userId"))
	default:
		return // socket lists (0, 1, 2): this server does not expose them
	}
	b, _ := json.Marshal(answer)
	ctx, cancel := a.op(ctx)
	defer cancel()
	_ = a.rdb.Publish(ctx, a.resCh, b).Err()
}
