package pusher

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testutil"
)

func TestConnect_EstablishedWithSocketID(t *testing.T) {
	ts := newTestServer(t, Options{})
	c := ts.connect(t, "app-key")
	if !socketIDPattern.MatchString(c.SocketID) {
		t.Fatalf("socket id %q is not digits.digits", c.SocketID)
	}
}

func TestConnect_Refusals(t *testing.T) {
	disabled := testApp(func(a *App) { a.ID, a.Key, a.Enabled = "off", "off-key", false })
	quota := testApp(func(a *App) { a.ID, a.Key, a.MaxConnections = "q", "q-key", 1 })
	ts := newTestServer(t, Options{}, testApp(), disabled, quota)

	for _, tc := range []struct {
		key  string
		code int
	}{{"nope", 4001}, {"off-key", 4003}} {
		c := ts.dial(t, tc.key)
		if got := errorCode(c.Expect("pusher:error")); got != tc.code {
			t.Fatalf("key %s: pusher:error code %d, want %d", tc.key, got, tc.code)
		}
		c.ExpectClose(tc.code)
	}

	first := ts.connect(t, "q-key")
	second := ts.dial(t, "q-key")
	if got := errorCode(second.Expect("pusher:error")); got != 4100 {
		t.Fatalf("over quota: code %d, want 4100", got)
	}
	second.ExpectClose(4100)
	first.Send(map[string]any{"event": "pusher:ping", "data": map[string]any{}})
	first.Expect("pusher:pong")
}

func TestPing_PongDataIsObject(t *testing.T) {
	ts := newTestServer(t, Options{})
	c := ts.connect(t, "app-key")
	c.Send(map[string]any{"event": "pusher:ping", "data": map[string]any{}})
	m := c.Expect("pusher:pong")
	if _, ok := m["data"].(map[string]any); !ok {
		t.Fatalf("pong data = %#v, want {}", m["data"])
	}
}

func TestPublicChannel_SubscribeReceiveUnsubscribe(t *testing.T) {
	ts := newTestServer(t, Options{})
	app := testApp()
	c := ts.connect(t, app.Key)
	c.subscribe("news")
	m := c.Expect("pusher_internal:subscription_succeeded")
	if _, has := m["data"]; has {
		t.Fatalf("public subscription_succeeded has data: %v", m)
	}
	if r := ts.trigger(t, app, "news", "update", "abc/d"); r.status != 200 {
		t.Fatalf("trigger: %d %v", r.status, r.body)
	}
	ev := c.Expect("update")
	if ev["channel"] != "news" || ev["data"] != "abc/d" {
		t.Fatalf("event = %v", ev)
	}
	c.Send(map[string]any{"event": "pusher:unsubscribe", "data": map[string]any{"channel": "news"}})
	testutil.WaitFor(t, 2*time.Second, "channel removed", func() bool { return ts.local().Stats().Channels == 0 })
	ts.trigger(t, app, "news", "update", "after")
	c.ExpectNone("update", 200*time.Millisecond)
}

func TestChannelNames(t *testing.T) {
	app := testApp(func(a *App) { a.MaxChannelNameLength = 10 })
	ts := newTestServer(t, Options{}, app)
	c := ts.connect(t, app.Key)
	for _, tc := range []struct {
		name   string
		status int
		typ    any
	}{
		{"abcdefghijk", 4009, "LimitReached"},
		{"bad name", 4009, nil},
		{"#server-to", 4009, nil},
		{"", 4009, nil},
	} {
		c.subscribe(tc.name)
		m := c.Expect("pusher:subscription_error")
		d := m["data"].(map[string]any)
		if subscriptionStatus(m) != tc.status || d["type"] != tc.typ {
			t.Fatalf("%q: got %v, want status %d type %v", tc.name, d, tc.status, tc.typ)
		}
	}
	// Prefixes are prefixes: this public channel needs no auth.
	c.subscribe("x-private-")
	c.Expect("pusher_internal:subscription_succeeded")
}

func TestPrivateChannel_Auth(t *testing.T) {
	app := testApp()
	ts := newTestServer(t, Options{}, app)
	c := ts.connect(t, app.Key)
	c.subscribe("private-a", "app-key:0000")
	m := c.Expect("pusher:subscription_error")
	if subscriptionStatus(m) != 401 || m["data"].(map[string]any)["type"] != "AuthError" {
		t.Fatalf("bad auth: %v", m)
	}
	c.subscribe("private-a", channelAuth(app, c.SocketID, "private-a", ""))
	c.Expect("pusher_internal:subscription_succeeded")
	// A token for another socket is refused.
	other := ts.connect(t, app.Key)
	other.subscribe("private-a", channelAuth(app, c.SocketID, "private-a", ""))
	if subscriptionStatus(other.Expect("pusher:subscription_error")) != 401 {
		t.Fatal("token of another socket accepted")
	}
}

func presenceJoin(t *testing.T, ts *testServer, app *App, c *client, channel, channelData string) map[string]any {
	t.Helper()
	c.subscribe(channel, channelAuth(app, c.SocketID, channel, channelData), channelData)
	m := c.Expect("pusher_internal:subscription_succeeded")
	var d struct {
		Presence map[string]any `json:"presence"`
	}
	if err := json.Unmarshal([]byte(m["data"].(string)), &d); err != nil {
		t.Fatalf("presence data: %v", err)
	}
	return d.Presence
}

func TestPresence_MembersAddedRemovedOncePerUser(t *testing.T) {
	app := testApp()
	ts := newTestServer(t, Options{}, app)
	const ch = "presence-room"
	a := ts.connect(t, app.Key)
	p := presenceJoin(t, ts, app, a, ch, `{"user_id":1,"user_info":{"name":"John"}}`)
	if p["count"].(float64) != 1 {
		t.Fatalf("count = %v", p["count"])
	}
	if ids := p["ids"].([]any); ids[0] != float64(1) {
		t.Fatalf("numeric id not kept: %#v", ids)
	}

	b := ts.connect(t, app.Key)
	p = presenceJoin(t, ts, app, b, ch, `{"user_id":"2","user_info":{"name":"Ann"}}`)
	if p["count"].(float64) != 2 {
		t.Fatalf("count = %v", p["count"])
	}
	added := a.Expect("pusher_internal:member_added")
	var md map[string]any
	_ = json.Unmarshal([]byte(added["data"].(string)), &md)
	if md["user_id"] != "2" || md["user_info"].(map[string]any)["name"] != "Ann" {
		t.Fatalf("member_added = %v", md)
	}

	// Same user on a second socket: no second member_added, count unchanged.
	b2 := ts.connect(t, app.Key)
	p = presenceJoin(t, ts, app, b2, ch, `{"user_id":"2","user_info":{"name":"Ann"}}`)
	if p["count"].(float64) != 2 {
		t.Fatalf("count after same user = %v", p["count"])
	}
	a.ExpectNone("pusher_internal:member_added", 150*time.Millisecond)

	r := ts.api(t, app, "GET", "/apps/app-id/channels/"+ch+"/users", nil, nil)
	if users := r.body["users"].([]any); len(users) != 2 {
		t.Fatalf("users = %v", r.body)
	}

	b.WS.Close() // sudden disconnect of one of user 2's sockets
	a.ExpectNone("pusher_internal:member_removed", 200*time.Millisecond)
	b2.Send(map[string]any{"event": "pusher:unsubscribe", "data": map[string]any{"channel": ch}})
	removed := a.Expect("pusher_internal:member_removed")
	_ = json.Unmarshal([]byte(removed["data"].(string)), &md)
	if md["user_id"] != "2" {
		t.Fatalf("member_removed = %v", md)
	}
}

func TestPresence_Limits(t *testing.T) {
	app := testApp(func(a *App) { a.MaxPresenceMembersPerChannel = 1; a.MaxPresenceMemberSizeInKB = 0.01 })
	ts := newTestServer(t, Options{}, app)
	a := ts.connect(t, app.Key)
	presenceJoin(t, ts, app, a, "presence-x", `{"user_id":"1"}`)

	b := ts.connect(t, app.Key)
	cd := `{"user_id":"2"}`
	b.subscribe("presence-x", channelAuth(app, b.SocketID, "presence-x", cd), cd)
	if m := b.Expect("pusher:subscription_error"); subscriptionStatus(m) != 4100 {
		t.Fatalf("member limit: %v", m)
	}
	// The user already present may join again from another socket.
	a2 := ts.connect(t, app.Key)
	presenceJoin(t, ts, app, a2, "presence-x", `{"user_id":"1"}`)

	big := `{"user_id":"3","user_info":{"x":"` + strings.Repeat("y", 64) + `"}}`
	b.subscribe("presence-y", channelAuth(app, b.SocketID, "presence-y", big), big)
	if m := b.Expect("pusher:subscription_error"); subscriptionStatus(m) != 4301 {
		t.Fatalf("member size: %v", m)
	}
	bad := `not json`
	b.subscribe("presence-z", channelAuth(app, b.SocketID, "presence-z", bad), bad)
	if m := b.Expect("pusher:subscription_error"); subscriptionStatus(m) != 4302 {
		t.Fatalf("bad channel_data: %v", m)
	}
}

func TestClientEvents(t *testing.T) {
	app := testApp(func(a *App) { a.MaxClientEventsPerSecond = 2 })
	off := testApp(func(a *App) { a.ID, a.Key, a.EnableClientMessages = "off", "off-key", false })
	ts := newTestServer(t, Options{}, app, off)
	a := ts.connect(t, app.Key)
	b := ts.connect(t, app.Key)
	a.subscribe("private-c", channelAuth(app, a.SocketID, "private-c", ""))
	a.Expect("pusher_internal:subscription_succeeded")
	b.subscribe("private-c", channelAuth(app, b.SocketID, "private-c", ""))
	b.Expect("pusher_internal:subscription_succeeded")

	a.Send(map[string]any{"event": "client-typing", "channel": "private-c", "data": map[string]any{"x": 1}})
	got := b.Expect("client-typing")
	if got["data"].(map[string]any)["x"] != float64(1) {
		t.Fatalf("client event = %v", got)
	}
	a.ExpectNone("client-typing", 100*time.Millisecond)

	// Public channel: rejected.
	a.subscribe("pub")
	a.Expect("pusher_internal:subscription_succeeded")
	a.Send(map[string]any{"event": "client-x", "channel": "pub", "data": "{}"})
	if m := a.Expect("pusher:error"); errorCode(m) != 4301 || m["channel"] != "pub" {
		t.Fatalf("public client event: %v", m)
	}
	// Rate limit: the 3rd within a second is refused with 4301.
	a.Send(map[string]any{"event": "client-y", "channel": "private-c", "data": "1"})
	a.Send(map[string]any{"event": "client-y", "channel": "private-c", "data": "2"})
	if m := a.Expect("pusher:error"); errorCode(m) != 4301 {
		t.Fatalf("rate limited client event: %v", m)
	}
	// Too long an event name.
	a.Send(map[string]any{"event": "client-" + strings.Repeat("n", 200), "channel": "private-c", "data": "1"})
	if m := a.Expect("pusher:error"); errorCode(m) != 4301 {
		t.Fatalf("long name: %v", m)
	}

	o := ts.connect(t, off.Key)
	o.Send(map[string]any{"event": "client-x", "channel": "private-c", "data": "{}"})
	if m := o.Expect("pusher:error"); errorCode(m) != 4301 {
		t.Fatalf("disabled client events: %v", m)
	}
}

func TestPresenceClientEventCarriesUserID(t *testing.T) {
	app := testApp()
	ts := newTestServer(t, Options{}, app)
	a := ts.connect(t, app.Key)
	b := ts.connect(t, app.Key)
	presenceJoin(t, ts, app, a, "presence-c", `{"user_id":7}`)
	presenceJoin(t, ts, app, b, "presence-c", `{"user_id":8}`)
	a.Send(map[string]any{"event": "client-hi", "channel": "presence-c", "data": "{}"})
	if m := b.Expect("client-hi"); m["user_id"] != float64(7) {
		t.Fatalf("user_id = %#v", m["user_id"])
	}
}

func signin(app *App, c *client, userData string) {
	c.Send(map[string]any{"event": "pusher:signin", "data": map[string]any{
		"user_data": userData, "auth": app.Key + ":" + Sign(app.Secret, c.SocketID+"::user::"+userData)}})
}

func TestSignin_ServerToUserAndTerminate(t *testing.T) {
	app := testApp()
	ts := newTestServer(t, Options{}, app)
	a := ts.connect(t, app.Key)
	signin(app, a, `{"id":"1","name":"John"}`)
	a.Expect("pusher:signin_success")

	if r := ts.trigger(t, app, "#server-to-user-1", "hello", "x"); r.status != 200 {
		t.Fatalf("server to user: %d %v", r.status, r.body)
	}
	if m := a.Expect("hello"); m["channel"] != "#server-to-user-1" {
		t.Fatalf("server-to-user event = %v", m)
	}
	if r := ts.api(t, app, "POST", "/apps/app-id/users/1/terminate_connections", nil, map[string]any{}); r.status != 200 {
		t.Fatalf("terminate: %d", r.status)
	}
	if m := a.Expect("pusher:error"); errorCode(m) != 4009 {
		t.Fatalf("terminate: %v", m)
	}
	a.ExpectClose(4009)
	testutil.WaitFor(t, 2*time.Second, "user forgotten", func() bool { return ts.local().Stats().Users == 0 })
}

func TestSignin_Failures(t *testing.T) {
	app := testApp()
	ts := newTestServer(t, Options{}, app)
	a := ts.connect(t, app.Key)
	a.Send(map[string]any{"event": "pusher:signin", "data": map[string]any{"user_data": `{"id":"1"}`, "auth": "app-key:bad"}})
	if m := a.Expect("pusher:error"); errorCode(m) != 4009 {
		t.Fatalf("bad signin: %v", m)
	}
	a.ExpectClose(4009)

	b := ts.connect(t, app.Key)
	signin(app, b, `{"name":"no id"}`)
	if m := b.Expect("pusher:error"); errorCode(m) != 4009 || !strings.Contains(m["data"].(map[string]any)["message"].(string), "id") {
		t.Fatalf("signin without id: %v", m)
	}
}

func TestUserAuthenticationTimeout(t *testing.T) {
	app := testApp(func(a *App) { a.EnableUserAuthentication = true })
	ts := newTestServer(t, Options{UserAuthenticationTimeout: 200 * time.Millisecond}, app)
	lazy := ts.connect(t, app.Key)
	good := ts.connect(t, app.Key)
	signin(app, good, `{"id":"9"}`)
	good.Expect("pusher:signin_success")
	if m := lazy.Expect("pusher:error"); errorCode(m) != 4009 {
		t.Fatalf("timeout: %v", m)
	}
	lazy.ExpectClose(4009)
	good.Send(map[string]any{"event": "pusher:ping"})
	good.Expect("pusher:pong")
}

func TestCacheChannel(t *testing.T) {
	app := testApp()
	ts := newTestServer(t, Options{}, app)
	a := ts.connect(t, app.Key)
	a.subscribe("cache-news")
	a.Expect("pusher_internal:subscription_succeeded")
	a.Expect("pusher:cache_miss")
	ts.trigger(t, app, "cache-news", "headline", "hi")
	a.Expect("headline")

	b := ts.connect(t, app.Key)
	b.subscribe("cache-news")
	b.Expect("pusher_internal:subscription_succeeded")
	if m := b.Expect("headline"); m["data"] != "hi" {
		t.Fatalf("cached event = %v", m)
	}
	b.ExpectNone("pusher:cache_miss", 100*time.Millisecond)
}

func TestSuddenDisconnect_LeavesNothing(t *testing.T) {
	app := testApp()
	ts := newTestServer(t, Options{}, app)
	for i := 0; i < 20; i++ {
		c := ts.connect(t, app.Key)
		c.subscribe("pub")
		c.Expect("pusher_internal:subscription_succeeded")
		presenceJoin(t, ts, app, c, "presence-p", `{"user_id":"u"}`)
		signin(app, c, `{"id":"u"}`)
		c.Expect("pusher:signin_success")
		c.WS.Close()
	}
	testutil.WaitFor(t, 3*time.Second, "state emptied", func() bool {
		return ts.local().Stats() == Stats{} && ts.ConnectionCount() == 0
	})
}

func TestMalformedFramesAreIgnored(t *testing.T) {
	ts := newTestServer(t, Options{})
	c := ts.connect(t, "app-key")
	for _, raw := range []string{"", "{", "null", "[]", `{"event":5}`, `{"event":"pusher:subscribe","data":7}`,
		`{"event":"pusher:subscribe","data":"not json"}`, `{"event":"unknown"}`} {
		if err := c.WS.WriteMessage(1, []byte(raw)); err != nil {
			t.Fatal(err)
		}
	}
	c.Send(map[string]any{"event": "pusher:ping"})
	c.Expect("pusher:pong")
}

func TestActivity_PingThenClose4201(t *testing.T) {
	ts := newTestServer(t, Options{ActivityTimeout: 100 * time.Millisecond, PongTimeout: 100 * time.Millisecond})
	c := ts.connect(t, "app-key")
	c.Expect("pusher:ping")
	c.Send(map[string]any{"event": "pusher:pong"}) // answering keeps it alive
	c.Expect("pusher:ping")
	c.ExpectClose(4201)
}

func TestSlowReaderIsDisconnected(t *testing.T) {
	app := testApp()
	ts := newTestServer(t, Options{MaxQueuedBytes: 64 << 10}, app)
	slow := ts.connect(t, app.Key)
	slow.subscribe("firehose")
	slow.Expect("pusher_internal:subscription_succeeded")
	fast := ts.connect(t, app.Key)
	fast.subscribe("other")
	fast.Expect("pusher_internal:subscription_succeeded")

	// Stop reading on the slow client: its reader goroutine is blocked once
	// the frames channel is full and the kernel buffers fill.
	payload := strings.Repeat("z", 60<<10)
	deadline := time.Now().Add(10 * time.Second)
	for ts.local().Stats().Sockets == 2 && time.Now().Before(deadline) {
		for i := 0; i < 50; i++ {
			ts.Adapter().Publish(t.Context(), app.ID, "firehose", TextFrame(EventJSON("big", "firehose", json.RawMessage(`"`+payload+`"`), nil)), "")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := ts.local().Stats().Sockets; n != 1 {
		t.Fatalf("slow socket still connected (%d sockets)", n)
	}
	fast.Send(map[string]any{"event": "pusher:ping"})
	fast.Expect("pusher:pong")
}

func TestShutdown_Sends4200(t *testing.T) {
	ts := newTestServer(t, Options{})
	a := ts.connect(t, "app-key")
	b := ts.connect(t, "app-key")
	done := make(chan error, 1)
	go func() { done <- ts.Shutdown(t.Context()) }()
	for _, c := range []*client{a, b} {
		if m := c.Expect("pusher:error"); errorCode(m) != 4200 {
			t.Fatalf("shutdown: %v", m)
		}
		c.ExpectClose(4200)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	late := ts.dial(t, "app-key")
	if m := late.Expect("pusher:error"); errorCode(m) != 4200 {
		t.Fatalf("connect while closing: %v", m)
	}
}

func TestResubscribeKeepsTheFirstMember(t *testing.T) {
	app := testApp()
	ts := newTestServer(t, Options{}, app)
	a := ts.connect(t, app.Key)
	presenceJoin(t, ts, app, a, "presence-r", `{"user_id":"1"}`)
	p := presenceJoin(t, ts, app, a, "presence-r", `{"user_id":"2"}`)
	if p["count"].(float64) != 1 || p["ids"].([]any)[0] != "1" {
		t.Fatalf("re-subscribe changed the member: %v", p)
	}
	a.subscribe("pub")
	a.Expect("pusher_internal:subscription_succeeded")
	a.subscribe("pub")
	a.Expect("pusher_internal:subscription_succeeded")
	a.WS.Close()
	testutil.WaitFor(t, 2*time.Second, "state emptied", func() bool { return ts.local().Stats() == Stats{} })
}

func TestSignin_OwnUserChannelAcknowledged(t *testing.T) {
	app := testApp()
	ts := newTestServer(t, Options{}, app)
	a := ts.connect(t, app.Key)
	a.subscribe("#server-to-user-3")
	if m := a.Expect("pusher:subscription_error"); subscriptionStatus(m) != 4009 {
		t.Fatalf("user channel before signin: %v", m)
	}
	signin(app, a, `{"id":"3"}`)
	a.Expect("pusher:signin_success")
	a.subscribe("#server-to-user-3")
	a.Expect("pusher_internal:subscription_succeeded")
	a.subscribe("#server-to-user-4")
	if m := a.Expect("pusher:subscription_error"); subscriptionStatus(m) != 4009 {
		t.Fatalf("another user's channel: %v", m)
	}
	ts.trigger(t, app, "#server-to-user-3", "hi", "x")
	a.Expect("hi")
	a.ExpectNone("hi", 150*time.Millisecond) // delivered once, not also as a channel subscriber
}

func TestAnnounce_MemberRemovedReachesSubscribers(t *testing.T) {
	app := testApp()
	ts := newTestServer(t, Options{}, app)
	a := ts.connect(t, app.Key)
	presenceJoin(t, ts, app, a, "presence-r", `{"user_id":"1"}`)
	ts.Announce(t.Context(), app.ID, Transition{Channel: "presence-r", MemberRemoved: &Member{UserID: json.RawMessage(`"9"`)}})
	m := a.Expect("pusher_internal:member_removed")
	if !strings.Contains(m["data"].(string), `"9"`) {
		t.Fatalf("member_removed = %v", m)
	}
}

// The outbox bound counts the batch a blocked write holds, not only what
// queued behind it: a stalled client holds at most MaxQueuedBytes.
func TestOutbox_BoundCountsTheWriteInFlight(t *testing.T) {
	tr := &stalledTransport{writing: make(chan struct{}, 1), release: make(chan struct{})}
	defer close(tr.release)
	o := &outbox{maxBytes: 1000, maxFrames: DefaultMaxQueuedFrames, transport: tr}
	frame := make([]byte, 100)
	if !o.push(frame, false) {
		t.Fatal("first frame refused")
	}
	<-tr.writing // its batch is in flight now
	accepted := 1
	for o.push(frame, false) {
		accepted++
		if accepted > 20 {
			t.Fatal("the bound does not hold")
		}
	}
	if accepted != 10 {
		t.Fatalf("%d frames of 100 bytes held under a 1,000-byte bound, want 10", accepted)
	}
}
