package pusher

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// testServer is a Server behind a real HTTP listener.
type testServer struct {
	*Server
	http *httptest.Server
	apps *StaticApps
}

func testApp(mut ...func(*App)) *App {
	a, _ := ParseApp(map[string]any{}, DefaultAppLimits)
	a.EnableClientMessages = true
	for _, m := range mut {
		m(a)
	}
	return a
}

func newTestServer(t *testing.T, opts Options, apps ...*App) *testServer {
	t.Helper()
	if len(apps) == 0 {
		apps = []*App{testApp()}
	}
	sa, err := NewStaticApps(apps)
	if err != nil {
		t.Fatal(err)
	}
	opts.Apps = sa
	s := New(opts)
	h := httptest.NewServer(s.Router())
	t.Cleanup(func() {
		h.CloseClientConnections()
		h.Close()
		s.Close()
	})
	return &testServer{Server: s, http: h, apps: sa}
}

// client is a raw WebSocket client that decodes frames into maps.
type client struct {
	t        *testing.T
	ws       *websocket.Conn
	frames   chan map[string]any
	closed   chan int // close code received
	socketID string
}

func (ts *testServer) dial(t *testing.T, key string) *client {
	t.Helper()
	u := "ws" + strings.TrimPrefix(ts.http.URL, "http") + "/app/" + key + "?protocol=7"
	ws, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c := &client{t: t, ws: ws, frames: make(chan map[string]any, 1024), closed: make(chan int, 1)}
	go func() {
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				code := 1006
				if ce, ok := err.(*websocket.CloseError); ok {
					code = ce.Code
				}
				c.closed <- code
				close(c.frames)
				return
			}
			var m map[string]any
			if json.Unmarshal(msg, &m) == nil {
				c.frames <- m
			}
		}
	}()
	t.Cleanup(func() { ws.Close() })
	return c
}

// connect dials and waits for connection_established.
func (ts *testServer) connect(t *testing.T, key string) *client {
	t.Helper()
	c := ts.dial(t, key)
	m := c.expect("pusher:connection_established")
	var d struct {
		SocketID        string `json:"socket_id"`
		ActivityTimeout int    `json:"activity_timeout"`
	}
	if err := json.Unmarshal([]byte(m["data"].(string)), &d); err != nil {
		t.Fatalf("connection_established data: %v", err)
	}
	c.socketID = d.SocketID
	return c
}

func (c *client) send(v any) {
	c.t.Helper()
	b, _ := json.Marshal(v)
	if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// expect returns the next frame with the given event, failing on timeout.
func (c *client) expect(event string) map[string]any {
	c.t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case m, ok := <-c.frames:
			if !ok {
				c.t.Fatalf("connection closed while waiting for %s", event)
			}
			if m["event"] == event {
				return m
			}
		case <-timeout:
			c.t.Fatalf("timed out waiting for %s", event)
		}
	}
}

// expectNone asserts that no frame with event arrives within d.
func (c *client) expectNone(event string, d time.Duration) {
	c.t.Helper()
	timeout := time.After(d)
	for {
		select {
		case m, ok := <-c.frames:
			if !ok {
				return
			}
			if m["event"] == event {
				c.t.Fatalf("unexpected %s: %v", event, m)
			}
		case <-timeout:
			return
		}
	}
}

// expectClose waits for the close code.
func (c *client) expectClose(code int) {
	c.t.Helper()
	for {
		select {
		case _, ok := <-c.frames:
			if !ok {
				got := <-c.closed
				if got != code {
					c.t.Fatalf("close code %d, want %d", got, code)
				}
				return
			}
		case <-time.After(5 * time.Second):
			c.t.Fatalf("timed out waiting for close %d", code)
		}
	}
}

func (c *client) subscribe(channel string, extra ...string) {
	d := map[string]any{"channel": channel}
	if len(extra) > 0 {
		d["auth"] = extra[0]
	}
	if len(extra) > 1 {
		d["channel_data"] = extra[1]
	}
	c.send(map[string]any{"event": "pusher:subscribe", "data": d})
}

func channelAuth(app *App, socketID, channel, channelData string) string {
	s := socketID + ":" + channel
	if channelData != "" {
		s += ":" + channelData
	}
	return app.Key + ":" + Sign(app.Secret, s)
}

func errorCode(m map[string]any) int {
	d, _ := m["data"].(map[string]any)
	f, _ := d["code"].(float64)
	return int(f)
}

func subscriptionStatus(m map[string]any) int {
	d, _ := m["data"].(map[string]any)
	f, _ := d["status"].(float64)
	return int(f)
}

// signedURL signs an HTTP API request the way the Pusher SDKs do.
func signedURL(base string, app *App, method, path string, params url.Values, body []byte, ts time.Time) string {
	return base + path + "?" + SignedQuery(app.Key, app.Secret, method, path, params, body, ts).Encode()
}

type apiResponse struct {
	status int
	body   map[string]any
	header http.Header
}

func (ts *testServer) api(t *testing.T, app *App, method, path string, params url.Values, body any) apiResponse {
	t.Helper()
	var raw []byte
	if body != nil {
		if b, ok := body.([]byte); ok {
			raw = b
		} else {
			raw, _ = json.Marshal(body)
		}
	}
	u := signedURL(ts.http.URL, app, method, path, params, raw, time.Now())
	req, _ := http.NewRequestWithContext(context.Background(), method, u, strings.NewReader(string(raw)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return apiResponse{status: resp.StatusCode, body: m, header: resp.Header}
}

func (ts *testServer) trigger(t *testing.T, app *App, channel, event, data string) apiResponse {
	t.Helper()
	return ts.api(t, app, "POST", "/apps/"+app.ID+"/events", nil,
		map[string]any{"name": event, "channel": channel, "data": data})
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (ts *testServer) local() *LocalAdapter { return ts.opts.Adapter.(*LocalAdapter) }
