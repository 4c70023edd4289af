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

	"github.com/soketi-go/soketi/internal/testutil"
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
	opts.WebSocket = gorillaWS{}
	s := New(opts)
	h := httptest.NewServer(s.Router())
	t.Cleanup(func() {
		h.CloseClientConnections()
		h.Close()
		s.Close()
	})
	return &testServer{Server: s, http: h, apps: sa}
}

// client is the shared raw test client with the protocol helpers of this package.
type client struct{ *testutil.Client }

func (ts *testServer) dial(t *testing.T, key string) *client {
	t.Helper()
	return &client{testutil.Dial(t, "ws"+strings.TrimPrefix(ts.http.URL, "http")+"/app/"+key+"?protocol=7")}
}

// connect dials and waits for connection_established.
func (ts *testServer) connect(t *testing.T, key string) *client {
	t.Helper()
	c := ts.dial(t, key)
	c.Established()
	return c
}

func (c *client) subscribe(channel string, extra ...string) {
	d := map[string]any{"channel": channel}
	if len(extra) > 0 {
		d["auth"] = extra[0]
	}
	if len(extra) > 1 {
		d["channel_data"] = extra[1]
	}
	c.Send(map[string]any{"event": "pusher:subscribe", "data": d})
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

func (ts *testServer) local() *LocalAdapter { return ts.opts.Adapter.(*LocalAdapter) }
