package wstransport

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/soketi-go/soketi/internal/testutil"
	"github.com/soketi-go/soketi/pkg/pusher"
)

// dialSmallWindow connects a raw client whose receive buffer is a few KiB,
// so that the server's writes to it stop short once it stops reading.
func (n *testNode) dialSmallWindow(t *testing.T) *rawClient {
	t.Helper()
	d := ws.Dialer{NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		nd := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			})
			if err != nil {
				return err
			}
			return serr
		}}
		return nd.DialContext(ctx, network, addr)
	}}
	return n.dialRawWith(t, d)
}

// unread is how many bytes wait in nc's receive queue (FIONREAD).
func unread(t *testing.T, nc net.Conn) int {
	t.Helper()
	rc, err := nc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := rc.Control(func(fd uintptr) { n, err = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil {
		t.Fatal(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (c *rawClient) subscribe(channel string) {
	c.t.Helper()
	c.write(text(`{"event":"pusher:subscribe","data":{"channel":"` + channel + `"}}`))
	c.expectEvent("pusher_internal:subscription_succeeded")
}

// seqFrame is event "seq" on channel with data {"n":i} and some padding.
func seqFrame(channel string, i, pad int) pusher.Frame {
	data, _ := json.Marshal(fmt.Sprintf(`{"n":%d,"pad":%q}`, i, strings.Repeat("x", pad)))
	return pusher.TextFrame(pusher.EventJSON("seq", channel, data, nil))
}

func seqOf(t *testing.T, p []byte) int {
	t.Helper()
	var m struct{ Event, Data string }
	var d struct{ N int }
	if json.Unmarshal(p, &m) != nil || m.Event != "seq" || json.Unmarshal([]byte(m.Data), &d) != nil {
		t.Fatalf("not a seq event: %.80q", p)
	}
	return d.N
}

// A subscriber that stops reading gets, once it reads again, every frame in
// order: a send the socket takes only part of leaves the rest to nbio, and
// later frames queue behind it.
func TestEventLoop_BackloggedReaderGetsEveryFrameInOrder(t *testing.T) {
	eachTransport(t, testBackloggedReaderGetsEveryFrameInOrder)
}

func testBackloggedReaderGetsEveryFrameInOrder(t *testing.T, kind string) {
	n := newTestNodeSndbuf(t, newHandler(t, kind, nil), 8<<10)
	slow := n.dialSmallWindow(t)
	slow.subscribe("news")
	fast := n.dial(t)
	fast.Send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": "news"}})
	fast.Expect("pusher_internal:subscription_succeeded")

	// 120 frames of 5 KiB: far more than the slow client's window and the
	// server's send buffer, far less than the outbox bound.
	const frames = 120
	for i := range frames {
		if _, err := n.srv.Adapter().Publish(t.Context(), "app-id", "news", seqFrame("news", i, 5<<10), ""); err != nil {
			t.Fatal(err)
		}
		fast.Expect("seq") // one at a time, so that each is its own send
	}
	for i := range frames {
		op, p := slow.frame()
		if op != ws.OpText {
			t.Fatalf("frame %d: opcode %v", i, op)
		}
		if got := seqOf(t, p); got != i {
			t.Fatalf("frame %d carries seq %d", i, got)
		}
	}
	n.servesFreshClient(t)
}

// The client's close frame comes while its socket is backlogged: the close
// reply waits in nbio behind the backlog, and the socket closes once the
// client has read it all. (Closing from nbio's write callback, which holds
// the connection's lock, once hung the poller and every connection on it.)
func TestEventLoop_CloseAfterBackloggedReplyEndsTheSocket(t *testing.T) {
	eachTransport(t, func(t *testing.T, kind string) {
		n := newTestNodeSndbuf(t, newHandler(t, kind, nil), 8<<10)
		c := n.dialSmallWindow(t)
		c.subscribe("news")
		for i := range 60 {
			if _, err := n.srv.Adapter().Publish(t.Context(), "app-id", "news", seqFrame("news", i, 5<<10), ""); err != nil {
				t.Fatal(err)
			}
		}
		testutil.WaitFor(t, 5*time.Second, "frames in the client's socket", func() bool { return unread(t, c.nc) > 0 })
		c.write(clientFrame(true, 0x8, closePayload(1000, "")))
		// The server forgets the connection once it has read the close
		// frame: the reply is then queued behind the backlog.
		testutil.WaitFor(t, 5*time.Second, "the close frame read", func() bool { return n.srv.ConnectionCount() == 0 })
		for i := 0; ; i++ {
			op, p := c.frame()
			if op == ws.OpClose {
				break
			}
			if got := seqOf(t, p); got != i {
				t.Fatalf("frame %d carries seq %d", i, got)
			}
		}
		_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.nc.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("after the close reply: %v, want EOF", err)
		}
		for range 4 { // on each poller
			n.servesFreshClient(t)
		}
	})
}

// Connections come and go (abruptly: a reset) while a channel's fan-outs
// run. A descriptor closed by one connection is reused by the next one
// accepted, so a send aimed at the old one must never reach the new one:
// clients on a quiet channel never see the busy channel's events. Seeded
// and bounded in time and count.
func TestEventLoop_ChurnNeverCrossesConnections(t *testing.T) {
	eachTransport(t, func(t *testing.T, kind string) {
		const seed = 20261202
		rng := rand.New(rand.NewSource(seed))
		n := newTestNode(t, newHandler(t, kind, nil))
		url := "ws" + strings.TrimPrefix(n.http.URL, "http") + "/app/app-key?protocol=7"

		var crossed atomic.Int64
		var readers sync.WaitGroup
		dial := func(channel string) net.Conn {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			nc, br, _, err := ws.Dial(ctx, url)
			if err != nil {
				// A bad handshake reply is what a frame sent to a reused
				// descriptor looks like to the connection that has it now.
				t.Fatalf("dial: %v", err)
			}
			if br != nil {
				ws.PutReader(br) // the server says nothing before it is asked
			}
			if _, err := nc.Write(text(`{"event":"pusher:subscribe","data":{"channel":"` + channel + `"}}`)); err != nil {
				t.Fatal(err)
			}
			readers.Add(1)
			go func() {
				defer readers.Done()
				for {
					_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
					h, err := ws.ReadHeader(nc)
					if err != nil || h.Length > 1<<20 {
						return
					}
					p := make([]byte, h.Length)
					if _, err := io.ReadFull(nc, p); err != nil {
						return
					}
					if channel == "quiet" && bytes.Contains(p, []byte(`"busy"`)) {
						crossed.Add(1)
					}
				}
			}()
			return nc
		}
		var busy []net.Conn
		for range 40 {
			busy = append(busy, dial("busy"))
		}
		var quiet []net.Conn
		stop := make(chan struct{})
		published := make(chan int)
		go func() {
			i := 0
			defer func() { published <- i }()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, _ = n.srv.Adapter().Publish(context.Background(), "app-id", "busy", seqFrame("busy", i, 64), "")
				i++
				time.Sleep(250 * time.Microsecond)
			}
		}()
		deadline := time.Now().Add(2 * time.Second)
		churned := 0
		for ; churned < 2000 && time.Now().Before(deadline); churned++ {
			i := rng.Intn(len(busy))
			_ = busy[i].(*net.TCPConn).SetLinger(0) // a reset: the server sees an error at once
			_ = busy[i].Close()
			// The freed descriptor goes to the next connection accepted.
			if rng.Intn(2) == 0 {
				quiet = append(quiet, dial("quiet"))
			}
			busy[i] = dial("busy")
		}
		close(stop)
		fanouts := <-published
		time.Sleep(100 * time.Millisecond) // the last fan-outs land
		for _, c := range append(busy, quiet...) {
			_ = c.Close()
		}
		readers.Wait()
		t.Logf("seed %d: %d connections churned, %d quiet clients, %d fan-outs", seed, churned, len(quiet), fanouts)
		if got := crossed.Load(); got != 0 {
			t.Fatalf("%d busy-channel frames reached quiet clients", got)
		}
		if churned < 50 || fanouts < 50 {
			t.Fatalf("too little load to mean anything: %d churned, %d fan-outs", churned, fanouts)
		}
		n.servesFreshClient(t)
	})
}

// A ring the kernel stops taking submissions from is given up with one log
// line, and every send, that one and later ones, goes through nbio.
func TestEventLoop_RingGivenUpFallsBackToWrites(t *testing.T) {
	logs := &lockedBuffer{}
	e, err := NewEventLoop(slog.New(slog.NewJSONHandler(logs, nil)), true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	for _, f := range e.flushers {
		if f.ring == nil {
			t.Fatal("no io_uring: this machine must permit one")
		}
		// The ring's descriptor now names /dev/null: io_uring_enter fails.
		if err := syscall.Dup2(int(devNull.Fd()), f.ring.FD()); err != nil {
			t.Fatal(err)
		}
	}
	n := newTestNode(t, e)
	c := n.dialRaw(t)
	c.subscribe("news")
	for i := range 3 {
		if _, err := n.srv.Adapter().Publish(t.Context(), "app-id", "news", seqFrame("news", i, 16), ""); err != nil {
			t.Fatal(err)
		}
		op, p := c.frame()
		if op != ws.OpText || seqOf(t, p) != i {
			t.Fatalf("frame %d: %v %.80q", i, op, p)
		}
	}
	if !strings.Contains(logs.String(), "from now on") {
		t.Fatalf("no log line for the ring given up:\n%s", logs.String())
	}
}
