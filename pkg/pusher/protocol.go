package pusher

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
)

// Error is a Pusher protocol error: a code from the 4000-4399 range and its text.
type Error struct {
	Code    int
	Message string
}

func (e *Error) Error() string { return strconv.Itoa(e.Code) + ": " + e.Message }

// Close codes and messages soketi sends; see the protocol reference.
var (
	ErrServerClosing   = &Error{4200, "Server is closing. Please reconnect shortly."}
	ErrServerClosed    = &Error{4200, "Server closed. Please reconnect shortly."}
	ErrAppDisabled     = &Error{4003, "The app is not enabled."}
	ErrOverQuota       = &Error{4100, "The current concurrent connections quota has been reached."}
	ErrOverCapacity    = &Error{4100, "Over capacity: the connection could not keep up with its messages."}
	ErrAuthTimeout     = &Error{4009, "Connection not authorized within timeout."}
	ErrSigninInvalid   = &Error{4009, "Connection not authorized."}
	ErrSigninNoID      = &Error{4009, "The returned user data must contain the \"id\" field."}
	ErrTerminated      = &Error{4009, "You got disconnected by the app."}
	ErrPongNotReceived = &Error{4201, "Pong reply not received."}
)

func errUnknownApp(key string) *Error {
	return &Error{4001, "App key " + key + " does not exist."}
}

// inbound is a frame sent by a client. Data stays raw: it may be an object or a string.
type inbound struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
}

// object returns data as a JSON object, unwrapping the string form some clients send.
func (m *inbound) object(dst any) error {
	d := bytes.TrimSpace(m.Data)
	if len(d) > 0 && d[0] == '"' {
		var s string
		if err := json.Unmarshal(d, &s); err != nil {
			return err
		}
		d = []byte(s)
	}
	if len(d) == 0 {
		d = []byte("{}")
	}
	return json.Unmarshal(d, dst)
}

type subscribeData struct {
	Channel     any    `json:"channel"`
	Auth        string `json:"auth"`
	ChannelData any    `json:"channel_data"`
}

type signinData struct {
	UserData any    `json:"user_data"`
	Auth     string `json:"auth"`
}

// Channel kinds, decided by name prefix (Pusher's rule; soketi matched substrings).
type ChannelKind int

const (
	KindPublic ChannelKind = iota
	KindPrivate
	KindEncrypted
	KindPresence
)

// Prefixes with meaning to the protocol.
const (
	PrefixPrivate      = "private-"
	PrefixEncrypted    = "private-encrypted-"
	PrefixPresence     = "presence-"
	PrefixServerToUser = "#server-to-user-"
)

// KindOf classifies a channel name.
func KindOf(channel string) ChannelKind {
	switch {
	case strings.HasPrefix(channel, PrefixPresence):
		return KindPresence
	case strings.HasPrefix(channel, PrefixEncrypted):
		return KindEncrypted
	case strings.HasPrefix(channel, PrefixPrivate):
		return KindPrivate
	}
	return KindPublic
}

// IsCacheChannel reports whether the last event of channel is kept for new subscribers.
func IsCacheChannel(channel string) bool {
	for _, p := range [...]string{"cache-", "private-cache-", "private-encrypted-cache-", "presence-cache-"} {
		if strings.HasPrefix(channel, p) {
			return true
		}
	}
	return false
}

// ValidChannelName reports whether a client may subscribe to name: Pusher's
// character set, and no leading '#', which is reserved for server channels.
func ValidChannelName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '_', c == '=', c == '@', c == ',', c == '.', c == ';':
		default:
			return false
		}
	}
	return true
}

// Outbound frames. Each is built once and its bytes shared by every recipient.

// appendJSONString appends s as a JSON string literal.
func appendJSONString(b []byte, s string) []byte {
	enc, _ := json.Marshal(s)
	return append(b, enc...)
}

// EventJSON renders {"event":E,"channel":C,"data":D[,"user_id":U]}. data must be valid JSON.
func EventJSON(event, channel string, data json.RawMessage, userID json.RawMessage) []byte {
	b := make([]byte, 0, 48+len(event)+len(channel)+len(data)+len(userID))
	b = append(b, `{"event":`...)
	b = appendJSONString(b, event)
	if channel != "" {
		b = append(b, `,"channel":`...)
		b = appendJSONString(b, channel)
	}
	if data != nil {
		b = append(b, `,"data":`...)
		b = append(b, data...)
	}
	if userID != nil {
		b = append(b, `,"user_id":`...)
		b = append(b, userID...)
	}
	return append(b, '}')
}

// stringData wraps a JSON value as a JSON string, as Pusher does for internal events.
func stringData(v any) json.RawMessage {
	inner, _ := json.Marshal(v)
	out, _ := json.Marshal(string(inner))
	return out
}

func errorJSON(e *Error, channel string) []byte {
	data, _ := json.Marshal(struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}{e.Code, e.Message})
	return EventJSON("pusher:error", channel, data, nil)
}

func subscriptionErrorJSON(channel, typ, msg string, status int) []byte {
	data, _ := json.Marshal(struct {
		Type   string `json:"type,omitempty"`
		Error  string `json:"error"`
		Status int    `json:"status"`
	}{typ, msg, status})
	return EventJSON("pusher:subscription_error", channel, data, nil)
}

var pongJSON = []byte(`{"event":"pusher:pong","data":{}}`)
var pingJSON = []byte(`{"event":"pusher:ping","data":{}}`)

// payloadKB measures a value the way soketi does: bytes of the string itself,
// or of the JSON text for anything else, divided by 1024.
func payloadKB(raw json.RawMessage) float64 {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return float64(len(s)) / 1024
		}
	}
	return float64(len(raw)) / 1024
}

// utf16Len counts UTF-16 code units, the unit of JavaScript string lengths.
func utf16Len(s string) int {
	n := 0
	for _, r := range s {
		if r >= 0x10000 {
			n += 2
		} else {
			n++
		}
	}
	return n
}

// MemberAddedJSON is the pusher_internal:member_added message for m.
func MemberAddedJSON(channel string, m Member) []byte {
	return EventJSON("pusher_internal:member_added", channel, stringData(m), nil)
}

// MemberRemovedJSON is the pusher_internal:member_removed message for m.
func MemberRemovedJSON(channel string, m Member) []byte {
	return EventJSON("pusher_internal:member_removed", channel,
		stringData(map[string]json.RawMessage{"user_id": m.UserID}), nil)
}
