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
	"github.com/soketi-go/soketi/pkg/pusher"
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

	// memberCopies decides how often a member event ("added" or "removed")
	// for user is sent to each other member; nil means once.
	memberCopies func(event, user string) int

	mu      sync.Mutex
	chans   map[string][]*fakeConn
	members map[string]map[*fakeConn]string // presence channel -> socket -> user id
	n       int
	sockets int
}

type fakeConn struct {
	mu sync.Mutex
	c  *websocket.Conn
	id string
}

func (f *fakeConn) send(v any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.c.WriteJSON(v)
}

func newFakeServer(t *testing.T) (*fakeServer, string) {
	f, addrs := newFakeCluster(t, 1)
	return f, addrs[0]
}

// newFakeCluster serves one fake server on n listeners: a publish on any of
// them reaches subscribers on all, like a cluster's nodes.
func newFakeCluster(t *testing.T, n int) (*fakeServer, []string) {
	f := &fakeServer{t: t, key: "app-key", secret: "app-secret",
		chans: map[string][]*fakeConn{}, members: map[string]map[*fakeConn]string{}}
	var addrs []string
	for range n {
		srv := httptest.NewServer(f)
		t.Cleanup(srv.Close)
		addrs = append(addrs, strings.TrimPrefix(srv.URL, "http://"))
	}
	return f, addrs
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
	f.mu.Lock()
	f.sockets++
	fc := &fakeConn{c: c, id: "1." + strconv.Itoa(f.sockets)}
	f.mu.Unlock()
	defer f.leaveAll(fc)
	fc.send(map[string]string{
		"event": "pusher:connection_established",
		"data":  `{"socket_id":"` + fc.id + `","activity_timeout":30}`,
	})
	for {
		var m struct {
			Event string `json:"event"`
			Data  struct {
				Channel     string `json:"channel"`
				Auth        string `json:"auth"`
				ChannelData string `json:"channel_data"`
			} `json:"data"`
		}
		if err := c.ReadJSON(&m); err != nil {
			return
		}
		switch ch := m.Data.Channel; {
		case m.Event == "pusher:subscribe" && strings.HasPrefix(ch, "presence-"):
			f.joinPresence(fc, ch, m.Data.Auth, m.Data.ChannelData)
		case m.Event == "pusher:unsubscribe" && strings.HasPrefix(ch, "presence-"):
			f.leavePresence(fc, ch)
		case m.Event == "pusher:subscribe":
			f.mu.Lock()
			f.chans[ch] = append(f.chans[ch], fc)
			f.mu.Unlock()
			fc.send(map[string]string{"event": "pusher_internal:subscription_succeeded", "channel": ch})
		case m.Event == "pusher:ping":
			fc.send(map[string]any{"event": "pusher:pong", "data": map[string]any{}})
		}
	}
}

// joinPresence checks the channel signature, sends subscription_succeeded
// and member_added to the other members (no dedup by user id: the tool uses
// a new id per join).
func (f *fakeServer) joinPresence(fc *fakeConn, ch, auth, channelData string) {
	want := f.key + ":" + pusher.Sign(f.secret, fc.id+":"+ch+":"+channelData)
	var cd struct {
		UserID   string          `json:"user_id"`
		UserInfo json.RawMessage `json:"user_info"`
	}
	if auth != want || json.Unmarshal([]byte(channelData), &cd) != nil || cd.UserID == "" || len(cd.UserInfo) == 0 {
		fc.send(map[string]any{"event": "pusher:subscription_error", "channel": ch, "data": map[string]any{"status": 401}})
		return
	}
	f.mu.Lock()
	if f.members[ch] == nil {
		f.members[ch] = map[*fakeConn]string{}
	}
	others := f.otherMembers(ch, fc)
	f.members[ch][fc] = cd.UserID
	f.mu.Unlock()
	fc.send(map[string]string{"event": "pusher_internal:subscription_succeeded", "channel": ch, "data": `{"presence":{}}`})
	f.memberEvent(others, "added", ch, cd.UserID, channelData)
}

func (f *fakeServer) leavePresence(fc *fakeConn, ch string) {
	f.mu.Lock()
	user, ok := f.members[ch][fc]
	delete(f.members[ch], fc)
	others := f.otherMembers(ch, fc)
	f.mu.Unlock()
	if ok {
		f.memberEvent(others, "removed", ch, user, `{"user_id":"`+user+`"}`)
	}
}

func (f *fakeServer) leaveAll(fc *fakeConn) {
	f.mu.Lock()
	var chans []string
	for ch, m := range f.members {
		if _, ok := m[fc]; ok {
			chans = append(chans, ch)
		}
	}
	f.mu.Unlock()
	for _, ch := range chans {
		f.leavePresence(fc, ch)
	}
}

// otherMembers must be called with f.mu held.
func (f *fakeServer) otherMembers(ch string, except *fakeConn) []*fakeConn {
	var out []*fakeConn
	for c := range f.members[ch] {
		if c != except {
			out = append(out, c)
		}
	}
	return out
}

func (f *fakeServer) memberEvent(to []*fakeConn, kind, ch, user, data string) {
	copies := 1
	if f.memberCopies != nil {
		copies = f.memberCopies(kind, user)
	}
	msg := map[string]string{"event": "pusher_internal:member_" + kind, "channel": ch, "data": data}
	for _, c := range to {
		for range copies {
			c.send(msg)
		}
	}
}

func (f *fakeServer) servePublish(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	q := r.URL.Query()
	ts, _ := strconv.ParseInt(q.Get("auth_timestamp"), 10, 64)
	want := pusher.SignedQuery(f.key, f.secret, r.Method, r.URL.Path, nil, body, time.Unix(ts, 0)).Get("auth_signature")
	if q.Get("auth_key") != f.key || q.Get("auth_signature") != want {
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
