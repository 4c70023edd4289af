package pusher

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

type fixedLimiter struct{ allowed int }

func (f *fixedLimiter) Consume(_, _ string, points, limit int) LimitResult {
	f.allowed -= points
	return LimitResult{Allowed: f.allowed >= 0, Limit: limit, Remaining: max(f.allowed, 0), ResetIn: 500 * time.Millisecond}
}

func TestAPI_HealthRoutes(t *testing.T) {
	ts := newTestServer(t, Options{})
	for path, want := range map[string]int{"/": 200, "/ready": 200, "/usage": 200, "/accept-traffic": 200, "/favicon.ico": 404} {
		resp, err := http.Get(ts.http.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET %s = %d, want %d", path, resp.StatusCode, want)
		}
		if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Fatalf("GET %s: no CORS header", path)
		}
	}
	req, _ := http.NewRequest(http.MethodOptions, ts.http.URL+"/apps/app-id/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Methods") == "" {
		t.Fatalf("preflight = %d %v", resp.StatusCode, resp.Header)
	}
}

func TestAPI_PathPrefix(t *testing.T) {
	ts := newTestServer(t, Options{PathPrefix: "/ws"})
	app := testApp()
	for path, want := range map[string]int{"/ws/": 200, "/ws/ready": 200, "/ready": 404} {
		resp, err := http.Get(ts.http.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET %s = %d, want %d", path, resp.StatusCode, want)
		}
	}
	r := ts.api(t, app, "GET", "/ws/apps/app-id/channels", nil, nil)
	if r.status != 200 {
		t.Fatalf("prefixed signed call = %d %v", r.status, r.body)
	}
}

func TestAPI_Signatures(t *testing.T) {
	app := testApp()
	ts := newTestServer(t, Options{}, app)
	get := func(u string) int {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	path := "/apps/app-id/channels"
	if code := get(signedURL(ts.http.URL, app, "GET", path, nil, nil, time.Now())); code != 200 {
		t.Fatalf("good signature = %d", code)
	}
	wrong := *app
	wrong.Secret = "other"
	if code := get(signedURL(ts.http.URL, &wrong, "GET", path, nil, nil, time.Now())); code != 401 {
		t.Fatalf("wrong secret = %d", code)
	}
	if code := get(signedURL(ts.http.URL, app, "GET", path, nil, nil, time.Now().Add(-11*time.Minute))); code != 401 {
		t.Fatalf("stale timestamp = %d", code)
	}
	wrongKey := *app
	wrongKey.Key = "other-key"
	wrongKey.Secret = app.Secret
	if code := get(signedURL(ts.http.URL, &wrongKey, "GET", path, nil, nil, time.Now())); code != 401 {
		t.Fatalf("wrong auth_key = %d", code)
	}
	tampered := strings.Replace(signedURL(ts.http.URL, app, "GET", path, url.Values{"filter_by_prefix": {"a"}}, nil, time.Now()),
		"filter_by_prefix=a", "filter_by_prefix=b", 1)
	if code := get(tampered); code != 401 {
		t.Fatalf("tampered query = %d", code)
	}
	if code := get(ts.http.URL + "/apps/nope/channels"); code != 404 {
		t.Fatalf("unknown app = %d", code)
	}
	// A body that does not match body_md5 fails.
	u := signedURL(ts.http.URL, app, "POST", "/apps/app-id/events", nil, []byte(`{"name":"a","channel":"b","data":"c"}`), time.Now())
	resp, err := http.Post(u, "application/json", strings.NewReader(`{"name":"a","channel":"b","data":"EVIL"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("body swapped = %d", resp.StatusCode)
	}
}

func TestAPI_ChannelQueries(t *testing.T) {
	app := testApp()
	ts := newTestServer(t, Options{}, app)
	a := ts.connect(t, app.Key)
	a.subscribe("pub-1")
	a.Expect("pusher_internal:subscription_succeeded")
	presenceJoin(t, ts, app, a, "presence-r", `{"user_id":1}`)
	b := ts.connect(t, app.Key)
	presenceJoin(t, ts, app, b, "presence-r", `{"user_id":1}`)

	r := ts.api(t, app, "GET", "/apps/app-id/channels", nil, nil)
	chans := r.body["channels"].(map[string]any)
	if len(chans) != 2 || chans["presence-r"].(map[string]any)["subscription_count"] != float64(2) {
		t.Fatalf("channels = %v", r.body)
	}
	r = ts.api(t, app, "GET", "/apps/app-id/channels", url.Values{"filter_by_prefix": {"presence-"}, "info": {"user_count"}}, nil)
	chans = r.body["channels"].(map[string]any)
	if len(chans) != 1 || chans["presence-r"].(map[string]any)["user_count"] != float64(1) {
		t.Fatalf("filtered channels = %v", r.body)
	}
	if r = ts.api(t, app, "GET", "/apps/app-id/channels", url.Values{"info": {"user_count"}}, nil); r.status != 400 {
		t.Fatalf("user_count without presence filter = %d", r.status)
	}
	r = ts.api(t, app, "GET", "/apps/app-id/channels/presence-r", nil, nil)
	if r.body["user_count"] != float64(1) || r.body["subscription_count"] != float64(2) || r.body["occupied"] != true {
		t.Fatalf("channel = %v", r.body)
	}
	r = ts.api(t, app, "GET", "/apps/app-id/channels/empty", nil, nil)
	if r.body["occupied"] != false || r.body["subscription_count"] != float64(0) {
		t.Fatalf("empty channel = %v", r.body)
	}
	r = ts.api(t, app, "GET", "/apps/app-id/channels/presence-r/users", nil, nil)
	if users := r.body["users"].([]any); len(users) != 1 || users[0].(map[string]any)["id"] != float64(1) {
		t.Fatalf("users = %v", r.body)
	}
	if r = ts.api(t, app, "GET", "/apps/app-id/channels/pub-1/users", nil, nil); r.status != 400 {
		t.Fatalf("users of public channel = %d", r.status)
	}
}

func TestAPI_EventValidation(t *testing.T) {
	app := testApp(func(a *App) {
		a.MaxEventChannelsAtOnce = 2
		a.MaxEventNameLength = 5
		a.MaxEventPayloadInKB = 1
		a.MaxEventBatchSize = 2
	})
	ts := newTestServer(t, Options{RequestLimitBytes: 4096}, app)
	post := func(path string, body any) apiResponse {
		return ts.api(t, app, "POST", "/apps/app-id/"+path, nil, body)
	}
	for _, tc := range []struct {
		name string
		path string
		body any
		want int
	}{
		{"ok", "events", map[string]any{"name": "e", "channel": "c", "data": "d"}, 200},
		{"no name", "events", map[string]any{"channel": "c", "data": "d"}, 400},
		{"no data", "events", map[string]any{"name": "e", "channel": "c"}, 400},
		{"no channel", "events", map[string]any{"name": "e", "data": "d"}, 400},
		{"too many channels", "events", map[string]any{"name": "e", "channels": []string{"a", "b", "c"}, "data": "d"}, 400},
		{"long name", "events", map[string]any{"name": "eeeeee", "channel": "c", "data": "d"}, 400},
		{"bad channel", "events", map[string]any{"name": "e", "channel": "a b", "data": "d"}, 400},
		{"bad socket id", "events", map[string]any{"name": "e", "channel": "c", "data": "d", "socket_id": "x"}, 400},
		{"big data", "events", map[string]any{"name": "e", "channel": "c", "data": strings.Repeat("x", 1100)}, 413},
		{"not json", "events", []byte("{"), 400},
		{"huge body", "events", []byte(strings.Repeat("x", 5000)), 413},
		{"batch ok", "batch_events", map[string]any{"batch": []any{map[string]any{"name": "e", "channel": "c", "data": "d"}}}, 200},
		{"batch missing", "batch_events", map[string]any{}, 400},
		{"batch too big", "batch_events", map[string]any{"batch": []any{
			map[string]any{"name": "e", "channel": "c", "data": "d"}, map[string]any{"name": "e", "channel": "c", "data": "d"},
			map[string]any{"name": "e", "channel": "c", "data": "d"}}}, 400},
		{"batch bad item", "batch_events", map[string]any{"batch": []any{map[string]any{"name": "e", "channel": "c"}}}, 400},
	} {
		if r := post(tc.path, tc.body); r.status != tc.want {
			t.Errorf("%s: status %d, want %d (%v)", tc.name, r.status, tc.want, r.body)
		} else if tc.want != 200 && (r.body["error"] == nil || r.body["code"] != float64(tc.want)) && tc.name != "huge body" {
			t.Errorf("%s: body %v lacks error/code", tc.name, r.body)
		}
	}
}

func TestAPI_PublishExcludesSocketAndReportsInfo(t *testing.T) {
	app := testApp()
	ts := newTestServer(t, Options{}, app)
	a := ts.connect(t, app.Key)
	b := ts.connect(t, app.Key)
	for _, c := range []*client{a, b} {
		c.subscribe("room")
		c.Expect("pusher_internal:subscription_succeeded")
	}
	r := ts.api(t, app, "POST", "/apps/app-id/events", nil, map[string]any{
		"name": "e", "channel": "room", "data": "x", "socket_id": a.SocketID, "info": "subscription_count"})
	if r.status != 200 || r.body["channels"].(map[string]any)["room"].(map[string]any)["subscription_count"] != float64(2) {
		t.Fatalf("publish with info = %d %v", r.status, r.body)
	}
	b.Expect("e")
	a.ExpectNone("e", 150*time.Millisecond)

	r = ts.api(t, app, "POST", "/apps/app-id/batch_events", nil, map[string]any{"batch": []any{
		map[string]any{"name": "b1", "channel": "room", "data": "1"},
		map[string]any{"name": "b2", "channels": []string{"room"}, "data": "2"},
	}})
	if r.status != 200 {
		t.Fatalf("batch = %d %v", r.status, r.body)
	}
	a.Expect("b1")
	a.Expect("b2")
}

func TestAPI_RateLimitHeadersAnd429(t *testing.T) {
	app := testApp(func(a *App) { a.MaxBackendEventsPerSecond = 2; a.MaxReadRequestsPerSecond = 1 })
	lim := &fixedLimiter{allowed: 2}
	ts := newTestServer(t, Options{Limiter: lim}, app)
	r := ts.trigger(t, app, "c", "e", "d")
	if r.status != 200 || r.header.Get("X-RateLimit-Limit") != "2" || r.header.Get("X-RateLimit-Remaining") != "1" || r.header.Get("Retry-After") != "0.5" {
		t.Fatalf("allowed: %d %v", r.status, r.header)
	}
	ts.trigger(t, app, "c", "e", "d")
	r = ts.trigger(t, app, "c", "e", "d")
	if r.status != 429 || r.body["code"] != float64(429) || r.body["error"] != "Too many requests." {
		t.Fatalf("limited: %d %v", r.status, r.body)
	}
}

func TestAPI_TerminateWithEmptyBody(t *testing.T) {
	app := testApp()
	ts := newTestServer(t, Options{}, app)
	u := signedURL(ts.http.URL, app, "POST", "/apps/app-id/users/5/terminate_connections", nil, nil, time.Now())
	resp, err := http.Post(u, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != `{"ok":true}` {
		t.Fatalf("terminate = %d %s", resp.StatusCode, b)
	}
}

func TestAPI_ReadyFailsWhileClosing(t *testing.T) {
	ts := newTestServer(t, Options{})
	_ = ts.Shutdown(t.Context())
	for _, p := range []string{"/ready", "/accept-traffic"} {
		resp, err := http.Get(ts.http.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 500 {
			t.Fatalf("%s while closing = %d", p, resp.StatusCode)
		}
	}
}
