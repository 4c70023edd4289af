package wstransport

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/soketi-go/soketi/internal/testutil"
	"github.com/soketi-go/soketi/pkg/metrics"
	"github.com/soketi-go/soketi/pkg/pusher"
)

// testNode is the real server stack behind a real listener, as main builds
// it: pusher.Server, this package's handler, the Prometheus metrics.
type testNode struct {
	srv     *pusher.Server
	http    *httptest.Server
	metrics *metrics.Metrics
	logs    *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// transports are the two pusher.WebSocketHandlers, the event loop both
// with its io_uring sends and with a write(2) per socket (where io_uring
// is not permitted): every test here runs on each.
var transports = []string{"goroutine", "eventloop", "eventloop-write"}

// newHandler builds the named transport; handle, if not nil, replaces the
// protocol's message handler (to inject a panic).
func newHandler(t *testing.T, kind string, handle func(*pusher.Server, *pusher.Conn, []byte)) pusher.WebSocketHandler {
	t.Helper()
	if kind == "eventloop" || kind == "eventloop-write" {
		e, err := NewEventLoop(nil, kind == "eventloop")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.Stop) // after the node's own cleanup, registered later
		if handle != nil {
			e.handle = handle
		}
		return e
	}
	h := New()
	if handle != nil {
		h.handle = handle
	}
	return h
}

// eachTransport runs test once per transport.
func eachTransport(t *testing.T, test func(t *testing.T, kind string)) {
	for _, kind := range transports {
		t.Run(kind, func(t *testing.T) { test(t, kind) })
	}
}

func newTestNode(t *testing.T, h pusher.WebSocketHandler, mut ...func(*pusher.App)) *testNode {
	t.Helper()
	return newTestNodeSndbuf(t, h, 0, mut...)
}

// newTestNodeSndbuf: sndbuf > 0 fixes the send buffer of each accepted
// socket, as a kernel under memory pressure would, so that a client that
// stops reading backs the server's writes up into nbio within a few KiB.
func newTestNodeSndbuf(t *testing.T, h pusher.WebSocketHandler, sndbuf int, mut ...func(*pusher.App)) *testNode {
	t.Helper()
	app, err := pusher.ParseApp(map[string]any{}, pusher.DefaultAppLimits)
	if err != nil {
		t.Fatal(err)
	}
	app.MaxEventPayloadInKB = float64(testLimit-64*1024) / 2048 // readLimit(app) == testLimit
	for _, m := range mut {
		m(app)
	}
	apps, err := pusher.NewStaticApps([]*pusher.App{app})
	if err != nil {
		t.Fatal(err)
	}
	m, err := metrics.New(metrics.Config{Port: 6001})
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	srv := pusher.New(pusher.Options{Apps: apps, Metrics: m, Logger: logger, WebSocket: h})
	hs := httptest.NewUnstartedServer(srv.Router())
	if sndbuf > 0 {
		hs.Config.ConnState = func(c net.Conn, state http.ConnState) {
			if tc, ok := c.(*net.TCPConn); ok && state == http.StateNew {
				_ = tc.SetWriteBuffer(sndbuf)
			}
		}
	}
	hs.Start()
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
		srv.Close()
	})
	return &testNode{srv: srv, http: hs, metrics: m, logs: logs}
}

func (n *testNode) dial(t *testing.T) *testutil.Client {
	t.Helper()
	c := testutil.Dial(t, "ws"+strings.TrimPrefix(n.http.URL, "http")+"/app/app-key?protocol=7")
	c.Established()
	return c
}

// servesFreshClient checks that the node still takes a new client through
// connect, connection_established and a subscription.
func (n *testNode) servesFreshClient(t *testing.T) {
	t.Helper()
	c := n.dial(t)
	c.Send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": "news"}})
	c.Expect("pusher_internal:subscription_succeeded")
	c.Close()
}

// rejected returns soketi_rejected_total by reason.
func (n *testNode) rejected(t *testing.T) map[string]float64 {
	t.Helper()
	fams, err := n.metrics.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "soketi_rejected_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" {
					out[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

// rawClient speaks WebSocket by hand after a real handshake: it writes
// whatever bytes a test gives it and reads the server's frames itself, so
// that no client library's own checks stand between the test and the wire.
type rawClient struct {
	t  *testing.T
	nc net.Conn
	r  io.Reader
}

func (n *testNode) dialRaw(t *testing.T) *rawClient {
	t.Helper()
	return n.dialRawWith(t, ws.Dialer{})
}

// dialRawWith dials with d (its NetDial, say) and reads connection_established.
func (n *testNode) dialRawWith(t *testing.T, d ws.Dialer) *rawClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	nc, br, _, err := d.Dial(ctx, "ws"+strings.TrimPrefix(n.http.URL, "http")+"/app/app-key?protocol=7")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c := &rawClient{t: t, nc: nc, r: nc}
	if br != nil {
		c.r = io.MultiReader(br, nc)
	}
	if op, p := c.frame(); op != ws.OpText || !bytes.Contains(p, []byte("pusher:connection_established")) {
		t.Fatalf("first frame %v %q", op, p)
	}
	return c
}

// write sends b as it is; the server may close before it has read it all.
func (c *rawClient) write(b []byte) {
	_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.nc.Write(b)
}

// frame reads the server's next frame.
func (c *rawClient) frame() (ws.OpCode, []byte) {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	h, err := ws.ReadHeader(c.r)
	if err != nil {
		c.t.Fatalf("read a frame: %v", err)
	}
	if h.Masked || h.Rsv != 0 || !h.Fin || h.Length > 1<<20 {
		c.t.Fatalf("server frame header %+v", h)
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(c.r, p); err != nil {
		c.t.Fatalf("read a payload: %v", err)
	}
	return h.OpCode, p
}

// expectClose reads up to the server's close frame and checks its code.
func (c *rawClient) expectClose(code int) {
	c.t.Helper()
	for {
		op, p := c.frame()
		if op != ws.OpClose {
			continue
		}
		if len(p) < 2 || int(binary.BigEndian.Uint16(p)) != code {
			c.t.Fatalf("close frame %q, want code %d", p, code)
		}
		return
	}
}

// expectEvent reads up to a text frame carrying event.
func (c *rawClient) expectEvent(event string) {
	c.t.Helper()
	for {
		op, p := c.frame()
		var m struct{ Event string }
		if op == ws.OpText && json.Unmarshal(p, &m) == nil && m.Event == event {
			return
		}
		if op == ws.OpClose {
			c.t.Fatalf("closed (%q) while waiting for %s", p, event)
		}
	}
}

var closeReasons = map[string]string{"fail 1002": "bad_frame", "fail 1007": "bad_utf8", "fail 1009": "frame_too_large"}

// Every framing edge case, sent as raw bytes on a real socket: the client
// gets the close code RFC 6455 asks for, the violation is counted, and the
// node serves a fresh client afterwards.
func TestHostileClient_EveryEdgeCase(t *testing.T) { eachTransport(t, testEveryEdgeCase) }

func testEveryEdgeCase(t *testing.T, kind string) {
	n := newTestNode(t, newHandler(t, kind, nil))
	wantRejected := map[string]float64{}
	for _, tc := range edgeCases(testLimit) {
		if tc.want == "truncated" || len(tc.stream) == 0 {
			continue // the server waits for the rest, as it should
		}
		t.Run(tc.name, func(t *testing.T) {
			c := n.dialRaw(t)
			c.write(tc.stream)
			switch tc.want {
			case "eof": // valid: the connection lives on
				c.write(text(`{"event":"pusher:ping"}`))
				c.expectEvent("pusher:pong")
			case "close 1005": // no code: answered with a normal close
				c.expectClose(1000)
			default: // "fail N" or "close N": the server's close frame carries N
				var code int
				if _, err := fmt.Sscanf(tc.want[strings.IndexByte(tc.want, ' ')+1:], "%d", &code); err != nil {
					t.Fatal(err)
				}
				c.expectClose(code)
			}
			if r, ok := closeReasons[tc.want]; ok {
				wantRejected[r]++
			}
			n.servesFreshClient(t)
		})
	}
	got := n.rejected(t)
	for reason, want := range wantRejected {
		if got[reason] != want {
			t.Errorf("soketi_rejected_total{reason=%q} = %v, want %v", reason, got[reason], want)
		}
	}
	testutil.WaitFor(t, 5*time.Second, "every connection cleaned up", func() bool { return n.srv.ConnectionCount() == 0 })
}

// The report that started this package: a fragment, then a continuation
// declaring 0xFFFFFFFFFFFFFFFF bytes, used to overflow the length check and
// panic the read goroutine, ending the process.
func TestHostileClient_ContinuationLengthOverflow(t *testing.T) {
	eachTransport(t, testContinuationLengthOverflow)
}

func testContinuationLengthOverflow(t *testing.T, kind string) {
	n := newTestNode(t, newHandler(t, kind, nil))
	c := n.dialRaw(t)
	attack := concat(clientFrame(false, 0x1, []byte(`{"event":`)),
		[]byte{0x80, 0x80 | 127, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, testMask[:])
	c.write(attack)
	c.expectClose(1002)
	if got := n.rejected(t)["bad_frame"]; got != 1 {
		t.Fatalf("bad_frame rejections = %v, want 1", got)
	}
	n.servesFreshClient(t)
}

func TestHostileClient_OversizedMessageIsCleanedUp(t *testing.T) {
	eachTransport(t, testOversizedMessageIsCleanedUp)
}

func testOversizedMessageIsCleanedUp(t *testing.T, kind string) {
	n := newTestNode(t, newHandler(t, kind, nil), func(a *pusher.App) { a.MaxEventPayloadInKB = 1 })
	c := n.dialRaw(t)
	big := `{"event":"client-x","channel":"private-a","data":"` + strings.Repeat("a", 200<<10) + `"}`
	c.write(text(big))
	c.expectClose(1009)
	testutil.WaitFor(t, 2*time.Second, "connection cleaned", func() bool { return n.srv.ConnectionCount() == 0 })
	n.servesFreshClient(t)
}

// A panic while handling one client's message closes that connection with
// 1011 and is logged once with its stack; the node goes on serving.
func TestHostileClient_PanicClosesOnlyThatConnection(t *testing.T) {
	eachTransport(t, testPanicClosesOnlyThatConnection)
}

func testPanicClosesOnlyThatConnection(t *testing.T, kind string) {
	h := newHandler(t, kind, func(s *pusher.Server, c *pusher.Conn, msg []byte) {
		if bytes.Contains(msg, []byte("boom")) {
			panic("boom")
		}
		s.HandleFrame(c, msg)
	})
	n := newTestNode(t, h)
	bystander := n.dial(t)
	victim := n.dial(t)
	victim.Send(map[string]any{"event": "boom"})
	victim.ExpectClose(1011)

	bystander.Send(map[string]any{"event": "pusher:ping"})
	bystander.Expect("pusher:pong")
	n.servesFreshClient(t)
	testutil.WaitFor(t, 5*time.Second, "the victim cleaned up", func() bool { return n.srv.ConnectionCount() == 1 })

	var panics []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(n.logs.String()), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "panic serving a connection" {
			panics = append(panics, rec)
		}
	}
	if len(panics) != 1 {
		t.Fatalf("%d panic log records, want 1:\n%s", len(panics), n.logs.String())
	}
	rec := panics[0]
	if rec["level"] != "ERROR" || rec["component"] != "ws" || rec["panic"] != "boom" ||
		rec["socket_id"] != victim.SocketID || !strings.Contains(fmt.Sprint(rec["stack"]), "hostile_test.go") {
		t.Fatalf("panic record = %v", rec)
	}
	if got := n.rejected(t)["panic"]; got != 1 {
		t.Fatalf("panic rejections = %v, want 1", got)
	}
}

// A client that stops reading is closed once what the server holds for it
// (the outbox, and on the event loop what nbio keeps unwritten) passes the
// 1 MiB bound; the fan-out goes on for the others.
func TestHostileClient_NonReaderIsClosedAtTheBound(t *testing.T) {
	eachTransport(t, testNonReaderIsClosedAtTheBound)
}

func testNonReaderIsClosedAtTheBound(t *testing.T, kind string) {
	n := newTestNode(t, newHandler(t, kind, nil))
	stuck := n.dialRaw(t)
	stuck.write(text(`{"event":"pusher:subscribe","data":{"channel":"news"}}`))
	stuck.expectEvent("pusher_internal:subscription_succeeded")
	reader := n.dial(t)
	reader.Send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": "news"}})
	reader.Expect("pusher_internal:subscription_succeeded")

	// 256 KiB messages: 16 MiB in all, past the kernel's socket buffers
	// (loopback autotunes them to a few MiB) and the bound.
	data, _ := json.Marshal(strings.Repeat("x", 256<<10))
	frame := pusher.TextFrame(pusher.EventJSON("big", "news", data, nil))
	ctx := t.Context()
	for range 64 {
		if _, err := n.srv.Adapter().Publish(ctx, "app-id", "news", frame, ""); err != nil {
			t.Fatal(err)
		}
		reader.Expect("big") // a reader keeps up, under the bound
	}
	testutil.WaitFor(t, 10*time.Second, "the non-reader closed", func() bool { return n.srv.ConnectionCount() == 1 })
	if got := n.rejected(t)["slow_consumer"]; got != 1 {
		t.Fatalf("slow_consumer rejections = %v, want 1", got)
	}
	n.servesFreshClient(t)
}
