package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// fakeServer speaks just enough of the Pusher protocol for the tool:
// connection_established, subscribe, ping, and signed HTTP publishes that are
// broadcast to the channel's subscribers.
type fakeServer struct {
	t      *testing.T
	key    string
	secret string

	// copies decides how often the n-th accepted publish (0-based) is
	// delivered to each subscriber; nil means once.
	copies func(n int) int
	// status decides the HTTP status of the n-th publish; nil means 200.
	status func(n int) int
	// delay postpones delivery of the n-th publish, to provoke reordering.
	delay func(n int) time.Duration

	mu    sync.Mutex
	chans map[string][]*fakeConn
	n     int
}

type fakeConn struct {
	mu sync.Mutex
	c  *websocket.Conn
}

func (f *fakeConn) send(v any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.c.WriteJSON(v)
}

func newFakeServer(t *testing.T) (*fakeServer, string) {
	f := &fakeServer{t: t, key: "app-key", secret: "app-secret", chans: map[string][]*fakeConn{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, strings.TrimPrefix(srv.URL, "http://")
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasPrefix(r.URL.Path, "/app/"):
		f.serveWS(w, r)
	case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/apps/"):
		f.servePublish(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeServer) serveWS(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/app/"+f.key {
		http.Error(w, "unknown app", http.StatusNotFound)
		return
	}
	c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	fc := &fakeConn{c: c}
	fc.send(map[string]string{
		"event": "pusher:connection_established",
		"data":  `{"socket_id":"1.1","activity_timeout":30}`,
	})
	for {
		var m struct {
			Event string `json:"event"`
			Data  struct {
				Channel string `json:"channel"`
			} `json:"data"`
		}
		if err := c.ReadJSON(&m); err != nil {
			return
		}
		switch m.Event {
		case "pusher:subscribe":
			f.mu.Lock()
			f.chans[m.Data.Channel] = append(f.chans[m.Data.Channel], fc)
			f.mu.Unlock()
			fc.send(map[string]string{"event": "pusher_internal:subscription_succeeded", "channel": m.Data.Channel})
		case "pusher:ping":
			fc.send(map[string]any{"event": "pusher:pong", "data": map[string]any{}})
		}
	}
}

func (f *fakeServer) servePublish(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	q := r.URL.Query()
	ts, _ := strconv.ParseInt(q.Get("auth_timestamp"), 10, 64)
	want := signedQuery(r.Method, r.URL.Path, f.key, f.secret, body, ts)
	if q.Get("auth_key") != f.key || r.URL.RawQuery != want {
		http.Error(w, `{"error":"bad signature"}`, http.StatusUnauthorized)
		return
	}
	var ev struct {
		Name    string `json:"name"`
		Channel string `json:"channel"`
		Data    string `json:"data"`
	}
	if err := json.Unmarshal(body, &ev); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	n := f.n
	f.n++
	subs := append([]*fakeConn(nil), f.chans[ev.Channel]...)
	f.mu.Unlock()
	if f.status != nil {
		if s := f.status(n); s != http.StatusOK {
			http.Error(w, `{"error":"rejected"}`, s)
			return
		}
	}
	copies := 1
	if f.copies != nil {
		copies = f.copies(n)
	}
	msg := map[string]string{"event": ev.Name, "channel": ev.Channel, "data": ev.Data}
	deliver := func() {
		for _, c := range subs {
			for range copies {
				c.send(msg)
			}
		}
	}
	if f.delay != nil && f.delay(n) > 0 {
		time.AfterFunc(f.delay(n), deliver)
	} else {
		deliver()
	}
	w.Write([]byte("{}"))
}

func testConfig(t *testing.T, target string, args ...string) *config {
	t.Helper()
	cfg, err := parseFlags(append([]string{"-urls", target, "-quiet", "-deadline", "20s", "-drain", "1s"}, args...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func runBench(t *testing.T, cfg *config) *report {
	t.Helper()
	rep, err := run(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if testing.Verbose() {
		var sb strings.Builder
		rep.writeText(&sb)
		t.Log("\n" + sb.String())
	}
	return rep
}

func TestEndToEndRate(t *testing.T) {
	_, target := newFakeServer(t)
	cfg := testConfig(t, target, "-subscribers", "60", "-channels", "3", "-rate", "100", "-duration", "500ms", "-publishers", "2")
	rep := runBench(t, cfg)

	if rep.Connect.Subscribed != 60 || rep.Connect.Failed != 0 {
		t.Fatalf("connect = %+v, errors %v", rep.Connect, rep.Errors)
	}
	p, d := rep.Publish, rep.Delivery
	if p.Sent < 30 || p.Accepted != p.Sent || p.Rejected != 0 || p.Errors != 0 {
		t.Fatalf("publish = %+v, errors %v", p, rep.Errors)
	}
	// Publishes go round-robin over 3 channels of 20 subscribers each.
	if d.Expected != p.Accepted*20 || d.Received != d.Expected || d.Frames != d.Received {
		t.Fatalf("delivery = %+v", d)
	}
	if d.Lost+d.Duplicated+d.OutOfOrder+d.Unacked+d.Foreign+d.Invalid != 0 {
		t.Fatalf("anomalies in %+v", d)
	}
	if rep.LatencyUS.Count != uint64(d.Received) || rep.LatencyUS.Max == 0 {
		t.Fatalf("latency = %+v", rep.LatencyUS)
	}
}

func TestEndToEndDetectsAnomalies(t *testing.T) {
	f, target := newFakeServer(t)
	f.copies = func(n int) int {
		switch n {
		case 3:
			return 0 // dropped for every subscriber
		case 5:
			return 2 // delivered twice
		}
		return 1
	}
	f.delay = func(n int) time.Duration {
		if n == 2 {
			return 50 * time.Millisecond
		}
		return 0
	}
	f.status = func(n int) int {
		if n == 7 {
			return http.StatusTooManyRequests
		}
		return http.StatusOK
	}
	cfg := testConfig(t, target, "-subscribers", "10", "-saturate", "-messages", "20", "-publishers", "1", "-drain", "300ms")
	rep := runBench(t, cfg)

	p, d := rep.Publish, rep.Delivery
	if p.Sent != 20 || p.Accepted != 19 || p.Rejected429 != 1 || p.StoppedBy != "messages" {
		t.Fatalf("publish = %+v", p)
	}
	if d.Expected != 190 || d.Received != 180 || d.Lost != 10 || d.Duplicated != 10 || d.Frames != 190 || d.OutOfOrder != 10 {
		t.Fatalf("delivery = %+v", d)
	}
}

func TestEndToEndIdleAndServerPID(t *testing.T) {
	_, target := newFakeServer(t)
	// The fake server runs inside the test process, so sample ourselves.
	cfg := testConfig(t, target, "-subscribers", "30", "-idle", "-idle-wait", "200ms", "-server-pid", strconv.Itoa(os.Getpid()))
	rep := runBench(t, cfg)
	if rep.Publish != nil || rep.Delivery != nil || rep.IdleSeconds == 0 {
		t.Fatalf("idle run published: %+v", rep)
	}
	s := rep.Server
	if s == nil || s.Error != "" || s.RSSBeforeConnect == 0 || s.RSSAfterIdle == 0 {
		t.Fatalf("server = %+v", s)
	}
	out, err := json.Marshal(rep)
	if err != nil || !strings.Contains(string(out), `"rss_per_connection_bytes"`) {
		t.Fatalf("json = %s, %v", out, err)
	}
}

func TestDeadlineStopsRun(t *testing.T) {
	_, target := newFakeServer(t)
	cfg := testConfig(t, target, "-subscribers", "5", "-duration", "1m", "-deadline", "700ms", "-rate", "20")
	start := time.Now()
	rep := runBench(t, cfg)
	if !rep.DeadlineHit || time.Since(start) > 5*time.Second {
		t.Fatalf("deadline not honoured: hit=%v after %v", rep.DeadlineHit, time.Since(start))
	}
}
