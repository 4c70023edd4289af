package pusher

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testutil"
)

// serveHTTP serves s from NewHTTPServer with timeouts on a real listener.
func serveHTTP(t *testing.T, s *Server, timeouts HTTPTimeouts) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewHTTPServer(s.Router(), timeouts, nil)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// stalledBody yields n bytes of a body and then blocks until ctx ends, as a
// client still sending a large body does. A server that waits for the body
// never answers it.
type stalledBody struct {
	ctx  context.Context
	left int
}

func (b *stalledBody) Read(p []byte) (int, error) {
	if b.left == 0 {
		<-b.ctx.Done()
		return 0, b.ctx.Err()
	}
	n := min(len(p), b.left)
	for i := range p[:n] {
		p[i] = 'x'
	}
	b.left -= n
	return n, nil
}

// doStalled sends a POST whose body stalls after prefix bytes and returns the
// answer the server gave without waiting for the rest. length is the declared
// Content-Length, -1 for a chunked body.
func doStalled(t *testing.T, u string, length int64, prefix int) (int, map[string]any) {
	t.Helper()
	// The deadline ends the stall too: the transport waits for the body
	// writer before it reports a failed round trip.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u, &stalledBody{ctx: ctx, left: prefix})
	req.ContentLength = length
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("no answer while the body was still being sent: %v", err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

func wantAPIError(t *testing.T, what string, status int, body map[string]any, wantStatus int, wantMsg string) {
	t.Helper()
	if status != wantStatus || body["error"] != wantMsg || body["code"] != float64(wantStatus) {
		t.Errorf("%s = %d %v, want %d %q", what, status, body, wantStatus, wantMsg)
	}
}

func TestAPI_RefusesBeforeReadingTheBody(t *testing.T) {
	app := testApp()
	ts := newTestServer(t, Options{}, app)
	base := serveHTTP(t, ts.Server, HTTPTimeouts{})
	path := "/apps/app-id/events"
	wrong := *app
	wrong.Secret = "other"
	claimed := []byte(`{"name":"e","channel":"c","data":"d"}`)
	for _, tc := range []struct {
		name, url string
		status    int
		msg       string
	}{
		{"unsigned", base + path, 401, "The secret authentication failed"},
		{"wrong secret", signedURL(base, &wrong, "POST", path, nil, claimed, time.Now()), 401, "The secret authentication failed"},
		{"stale", signedURL(base, app, "POST", path, nil, claimed, time.Now().Add(-11*time.Minute)), 401, "The secret authentication failed"},
		{"unknown app", base + "/apps/nope/events", 404, "The app nope could not be found."},
	} {
		// 64 MiB declared is under the 100 MB limit, so only the signature
		// check can answer it; 1 MiB is sent before the client stalls.
		status, body := doStalled(t, tc.url, 64<<20, 1<<20)
		wantAPIError(t, tc.name+", declared length", status, body, tc.status, tc.msg)
		// A short chunked body is not drained either (net/http would wait
		// for up to 256 KiB of it before answering a keep-alive request).
		status, body = doStalled(t, tc.url, -1, 4<<10)
		wantAPIError(t, tc.name+", chunked", status, body, tc.status, tc.msg)
	}
}

func TestAPI_BodyMD5(t *testing.T) {
	app := testApp()
	ts := newTestServer(t, Options{}, app)
	path := "/apps/app-id/events"
	good := []byte(`{"name":"a","channel":"b","data":"c"}`)
	post := func(u string, body []byte) (int, map[string]any) {
		resp, err := http.Post(u, "application/json", strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	if status, body := post(signedURL(ts.http.URL, app, "POST", path, nil, good, time.Now()), good); status != 200 {
		t.Fatalf("matching body_md5 = %d %v", status, body)
	}
	status, body := post(signedURL(ts.http.URL, app, "POST", path, nil, good, time.Now()), []byte(`{"name":"a","channel":"b","data":"X"}`))
	wantAPIError(t, "signed, other body", status, body, 401, "The secret authentication failed")
	status, body = post(signedURL(ts.http.URL, app, "POST", path, nil, nil, time.Now()), good)
	wantAPIError(t, "signed without body_md5, with a body", status, body, 401, "The secret authentication failed")
	q := SignedQuery(app.Key, app.Secret, "POST", path, url.Values{"body_md5": {strings.Repeat("0", 32)}}, nil, time.Now())
	status, body = post(ts.http.URL+path+"?"+q.Encode(), good)
	wantAPIError(t, "signed body_md5 of another body", status, body, 401, "The secret authentication failed")
}

func TestAPI_OverLimitBody(t *testing.T) {
	app := testApp()
	const limit = 64 << 10
	ts := newTestServer(t, Options{RequestLimitBytes: limit}, app)
	base := serveHTTP(t, ts.Server, HTTPTimeouts{})
	path := "/apps/app-id/events"
	u := signedURL(base, app, "POST", path, nil, []byte("the body the client means to send"), time.Now())
	// A declared length over the limit is refused unread; a chunked body is
	// cut off at the limit, before the client has sent the rest.
	status, body := doStalled(t, u, 1<<20, 8<<10)
	wantAPIError(t, "declared over the limit", status, body, 413, "The payload size is too big.")
	status, body = doStalled(t, u, -1, 2*limit)
	wantAPIError(t, "chunked over the limit", status, body, 413, "The payload size is too big.")

	event := `{"name":"e","channel":"c","data":"d"}`
	exact := []byte(event + strings.Repeat(" ", limit-len(event)))
	if r := ts.api(t, app, "POST", path, nil, exact); r.status != 200 {
		t.Fatalf("body of exactly the limit = %d %v", r.status, r.body)
	}
}

func TestHTTPServer_SlowHeadersTimeOut(t *testing.T) {
	ts := newTestServer(t, Options{})
	const timeout = 300 * time.Millisecond
	addr := strings.TrimPrefix(serveHTTP(t, ts.Server, HTTPTimeouts{ReadHeader: timeout, Idle: timeout, MaxHeaderBytes: 1 << 10}), "http://")

	t.Run("trickled headers", func(t *testing.T) {
		start := time.Now()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go func() { // one header byte every 20 ms: it would take 4 s
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			msg := "GET /ready HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 200) + "\r\n\r\n"
			for i := range len(msg) {
				if _, err := c.Write([]byte{msg[i]}); err != nil {
					return
				}
				<-tick.C
			}
		}()
		got := waitClosed(t, c)
		if d := time.Since(start); d < timeout || d > timeout+2*time.Second {
			t.Fatalf("closed after %v, want about %v", d, timeout)
		}
		if strings.Contains(got, "200 OK") {
			t.Fatalf("the slow request was served: %q", got)
		}
	})

	t.Run("idle keep-alive", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET /ready HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		start := time.Now()
		if _, err := br.ReadByte(); err == nil {
			t.Fatal("data after the response")
		}
		if d := time.Since(start); d > timeout+2*time.Second {
			t.Fatalf("idle connection closed after %v, want about %v", d, timeout)
		}
	})

	t.Run("header too large", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/ready", nil)
		req.Header.Set("X-Big", strings.Repeat("a", 8<<10))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("8 KiB header = %d, want 431", resp.StatusCode)
		}
	})
}

// waitClosed reads c until the server closes it and returns what it sent.
func waitClosed(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server did not close the connection")
	}
	return string(b)
}

// trickleBody yields n bytes of body, one every interval.
type trickleBody struct {
	body []byte
	tick *time.Ticker
}

func (b *trickleBody) Read(p []byte) (int, error) {
	if len(b.body) == 0 {
		return 0, io.EOF
	}
	<-b.tick.C
	p[0] = b.body[0]
	b.body = b.body[1:]
	return 1, nil
}

func TestHTTPServer_TricklingBodyCutOff(t *testing.T) {
	app := testApp()
	ts := newTestServer(t, Options{}, app)
	const timeout = 300 * time.Millisecond
	base := serveHTTP(t, ts.Server, HTTPTimeouts{Body: timeout})
	event := `{"name":"e","channel":"c","data":"` + strings.Repeat("d", 500) + `"}`
	path := "/apps/app-id/events"
	u := signedURL(base, app, "POST", path, nil, []byte(event), time.Now())

	// One byte every 10 ms: the whole body would take over 5 s.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, u, &trickleBody{body: []byte(event), tick: tick})
	req.ContentLength = int64(len(event))
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	start := time.Now()
	resp, err := (&http.Client{Transport: tr, Timeout: 4 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("the trickled body was not cut off: %v", err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	wantAPIError(t, "trickled body", resp.StatusCode, body, 400, "The received data is incorrect.")
	if d := time.Since(start); d < timeout || d > timeout+2*time.Second {
		t.Fatalf("answered after %v, want about %v", d, timeout)
	}

	// The deadline is per request: a prompt body on the same server passes.
	if resp := postNow(t, u, event); resp != 200 {
		t.Fatalf("prompt body = %d", resp)
	}
}

func postNow(t *testing.T, u, body string) int {
	t.Helper()
	resp, err := http.Post(u, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// The http.Server bounds must not reach the WebSocket connections it hijacks.
func TestHTTPServer_WebSocketOutlivesTimeouts(t *testing.T) {
	app := testApp()
	ts := newTestServer(t, Options{}, app)
	const timeout = 100 * time.Millisecond
	base := serveHTTP(t, ts.Server, HTTPTimeouts{ReadHeader: timeout, Body: timeout, Idle: timeout})
	c := &client{testutil.Dial(t, "ws"+strings.TrimPrefix(base, "http")+"/app/"+app.Key+"?protocol=7")}
	c.Established()
	c.ExpectNone("pusher:error", 5*timeout)
	c.Send(map[string]any{"event": "pusher:ping", "data": map[string]any{}})
	c.Expect("pusher:pong")
}
