package pusher

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// App is one tenant of the server: its credentials, flags and limits, normalised
// from any of the field spellings soketi accepts.
type App struct {
	ID     string
	Key    string
	Secret string

	Enabled              bool
	EnableClientMessages bool
	// EnableSubscriptionCount sends subscribers of non-presence channels
	// their channel's count (subcount.go).
	EnableSubscriptionCount  bool
	EnableUserAuthentication bool

	// Limits below zero disable the check; MaxConnections 0 also means unlimited
	// (soketi's `parseInt(x) || -1`).
	MaxConnections            int
	MaxBackendEventsPerSecond int
	MaxClientEventsPerSecond  int
	MaxReadRequestsPerSecond  int

	AppLimits

	Webhooks []Webhook
}

// Webhook is one webhook target of an app.
type Webhook struct {
	URL        string            `json:"url,omitempty"`
	EventTypes []string          `json:"event_types"`
	Headers    map[string]string `json:"headers,omitempty"`
	Filter     WebhookFilter     `json:"filter,omitempty"`
	// LambdaFunction is accepted so that soketi configurations load, but
	// AWS Lambda targets are not called by this server.
	LambdaFunction string `json:"lambda_function,omitempty"`
}

// WebhookFilter restricts a webhook to channels whose names match both parts.
type WebhookFilter struct {
	ChannelNameStartsWith string `json:"channel_name_starts_with,omitempty"`
	ChannelNameEndsWith   string `json:"channel_name_ends_with,omitempty"`
}

// Matches reports whether channel passes the filter.
func (f WebhookFilter) Matches(channel string) bool {
	return strings.HasPrefix(channel, f.ChannelNameStartsWith) && strings.HasSuffix(channel, f.ChannelNameEndsWith)
}

// HasWebhook reports whether any webhook of the app wants events of this type.
func (a *App) HasWebhook(eventType string) bool {
	for _, w := range a.Webhooks {
		for _, t := range w.EventTypes {
			if t == eventType {
				return true
			}
		}
	}
	return false
}

// ConnectionLimit returns the effective connection quota, or -1 for none.
func (a *App) ConnectionLimit() int {
	if a.MaxConnections <= 0 {
		return -1
	}
	return a.MaxConnections
}

// AppLimits are the size and count limits of an app; the server-level values
// are the defaults of every app that sets none.
type AppLimits struct {
	MaxPresenceMembersPerChannel int
	MaxPresenceMemberSizeInKB    float64
	MaxChannelNameLength         int
	MaxEventChannelsAtOnce       int
	MaxEventNameLength           int
	MaxEventPayloadInKB          float64
	MaxEventBatchSize            int
}

// DefaultAppLimits are soketi's server-level limits.
var DefaultAppLimits = AppLimits{
	MaxPresenceMembersPerChannel: 100,
	MaxPresenceMemberSizeInKB:    2,
	MaxChannelNameLength:         200,
	MaxEventChannelsAtOnce:       100,
	MaxEventNameLength:           200,
	MaxEventPayloadInKB:          100,
	MaxEventBatchSize:            10,
}

// appField lists the spellings of one field; the last one present wins, as in soketi.
type appField []string

func aliases(camel string, snake ...string) appField {
	pascal := strings.ToUpper(camel[:1]) + camel[1:]
	return append(appField{camel, pascal}, snake...)
}

var (
	fID                = appField{"id", "AppId"}
	fKey               = appField{"key", "AppKey"}
	fSecret            = appField{"secret", "AppSecret"}
	fMaxConnections    = aliases("maxConnections", "max_connections")
	fClientMessages    = aliases("enableClientMessages", "enable_client_messages")
	fSubscriptionCount = aliases("enableSubscriptionCount", "enable_subscription_count")
	fEnabled           = appField{"enabled", "Enabled"}
	fBackendPerSec     = aliases("maxBackendEventsPerSecond", "max_backend_events_per_sec")
	fClientPerSec      = aliases("maxClientEventsPerSecond", "max_client_events_per_sec")
	fReadPerSec        = aliases("maxReadRequestsPerSecond", "max_read_req_per_sec")
	fWebhooks          = appField{"webhooks", "Webhooks"}
	fPresenceMembers   = aliases("maxPresenceMembersPerChannel", "max_presence_members_per_channel")
	fPresenceSize      = aliases("maxPresenceMemberSizeInKb", "max_presence_member_size_in_kb")
	fChannelNameLength = aliases("maxChannelNameLength", "max_channel_name_length")
	fChannelsAtOnce    = aliases("maxEventChannelsAtOnce", "max_event_channels_at_once")
	fEventNameLength   = aliases("maxEventNameLength", "max_event_name_length")
	fEventPayload      = aliases("maxEventPayloadInKb", "max_event_payload_in_kb")
	fBatchSize         = aliases("maxEventBatchSize", "max_event_batch_size")
	fUserAuth          = aliases("enableUserAuthentication", "enable_user_authentication")
)

// ParseApp builds an App from a decoded JSON object using soketi's field
// aliases. Empty strings and nulls count as absent.
func ParseApp(raw map[string]any, d AppLimits) (*App, error) {
	a := &App{
		ID: "app-id", Key: "app-key", Secret: "app-secret",
		Enabled: true, MaxConnections: -1,
		MaxBackendEventsPerSecond: -1, MaxClientEventsPerSecond: -1, MaxReadRequestsPerSecond: -1,
		AppLimits: d,
	}
	var err error
	str := func(f appField, dst *string) {
		if v, ok := lookup(raw, f); ok && err == nil {
			*dst, err = asString(f, v)
		}
	}
	num := func(f appField, dst *int) {
		if v, ok := lookup(raw, f); ok && err == nil {
			var x float64
			x, err = asNumber(f, v)
			*dst = int(math.Trunc(x))
		}
	}
	flt := func(f appField, dst *float64) {
		if v, ok := lookup(raw, f); ok && err == nil {
			*dst, err = asNumber(f, v)
		}
	}
	flag := func(f appField, dst *bool) {
		if v, ok := lookup(raw, f); ok {
			*dst = truthy(v)
		}
	}
	str(fID, &a.ID)
	str(fKey, &a.Key)
	str(fSecret, &a.Secret)
	num(fMaxConnections, &a.MaxConnections)
	flag(fClientMessages, &a.EnableClientMessages)
	flag(fSubscriptionCount, &a.EnableSubscriptionCount)
	flag(fEnabled, &a.Enabled)
	num(fBackendPerSec, &a.MaxBackendEventsPerSecond)
	num(fClientPerSec, &a.MaxClientEventsPerSecond)
	num(fReadPerSec, &a.MaxReadRequestsPerSecond)
	num(fPresenceMembers, &a.MaxPresenceMembersPerChannel)
	flt(fPresenceSize, &a.MaxPresenceMemberSizeInKB)
	num(fChannelNameLength, &a.MaxChannelNameLength)
	num(fChannelsAtOnce, &a.MaxEventChannelsAtOnce)
	num(fEventNameLength, &a.MaxEventNameLength)
	flt(fEventPayload, &a.MaxEventPayloadInKB)
	num(fBatchSize, &a.MaxEventBatchSize)
	flag(fUserAuth, &a.EnableUserAuthentication)
	if err != nil {
		return nil, err
	}
	if v, ok := lookup(raw, fWebhooks); ok {
		hooks, werr := parseWebhooks(v)
		if werr != nil {
			return nil, werr
		}
		a.Webhooks = hooks
	}
	if a.ID == "" || a.Key == "" || a.Secret == "" {
		return nil, fmt.Errorf("app needs a non-empty id, key and secret")
	}
	return a, nil
}

func lookup(raw map[string]any, f appField) (any, bool) {
	var found any
	ok := false
	for _, name := range f {
		v, present := raw[name]
		if !present || v == nil || v == "" {
			continue
		}
		found, ok = v, true
	}
	return found, ok
}

func asString(f appField, v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case json.Number:
		return x.String(), nil
	}
	return "", fmt.Errorf("app field %s: want a string, got %T", f[0], v)
}

func asNumber(f appField, v any) (float64, error) {
	switch x := v.(type) {
	case float64:
		return x, nil
	case json.Number:
		return x.Float64()
	case bool:
		if x {
			return 1, nil
		}
		return 0, nil
	case string:
		n, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		if err != nil {
			return 0, fmt.Errorf("app field %s: %q is not a number", f[0], x)
		}
		return n, nil
	}
	return 0, fmt.Errorf("app field %s: want a number, got %T", f[0], v)
}

func truthy(v any) bool {
	switch x := v.(type) {
	case bool:
		return x
	case float64:
		return x != 0
	case string:
		return x != "" && x != "0" && x != "false"
	case nil:
		return false
	}
	return true
}

func parseWebhooks(v any) ([]Webhook, error) {
	if s, ok := v.(string); ok {
		var parsed any
		if json.Unmarshal([]byte(s), &parsed) != nil {
			return nil, nil
		}
		v = parsed
	}
	list, ok := v.([]any)
	if !ok {
		return nil, nil
	}
	b, err := json.Marshal(list)
	if err != nil {
		return nil, err
	}
	var hooks []Webhook
	if err := json.Unmarshal(b, &hooks); err != nil {
		return nil, fmt.Errorf("app webhooks: %w", err)
	}
	for i, h := range hooks {
		if h.URL == "" && h.LambdaFunction == "" {
			return nil, fmt.Errorf("app webhooks[%d]: needs a url", i)
		}
	}
	return hooks, nil
}

// AppManager finds apps by id or key. Both return (nil, nil) when there is no such app.
type AppManager interface {
	FindByID(ctx context.Context, id string) (*App, error)
	FindByKey(ctx context.Context, key string) (*App, error)
}

// StaticApps is the "array" app manager: a fixed list loaded at start-up.
type StaticApps struct {
	byID  map[string]*App
	byKey map[string]*App
	list  []*App
}

// NewStaticApps indexes apps; duplicate ids or keys are an error.
func NewStaticApps(apps []*App) (*StaticApps, error) {
	s := &StaticApps{byID: map[string]*App{}, byKey: map[string]*App{}, list: apps}
	for _, a := range apps {
		if _, dup := s.byID[a.ID]; dup {
			return nil, fmt.Errorf("duplicate app id %q", a.ID)
		}
		if _, dup := s.byKey[a.Key]; dup {
			return nil, fmt.Errorf("duplicate app key %q", a.Key)
		}
		s.byID[a.ID] = a
		s.byKey[a.Key] = a
	}
	return s, nil
}

func (s *StaticApps) FindByID(_ context.Context, id string) (*App, error) { return s.byID[id], nil }
func (s *StaticApps) FindByKey(_ context.Context, key string) (*App, error) {
	return s.byKey[key], nil
}

// All returns every app, in configuration order.
func (s *StaticApps) All() []*App { return s.list }
