package stream

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testutil"
)

func TestStreams_HelloMustMatchProvenIdentity(t *testing.T) {
	// b's transport proves every connection to be node "c".
	b := newNode(t, "b", func(c *Config) { c.PeerID = func(net.Conn) string { return "c" } })
	a := newNode(t, "a", nil)
	a.SetPeers(map[string]Peer{"b": {Addr: b.addr}})
	if err := a.Send(context.Background(), "b", numbered(1, 8)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "both sides to refuse", func() bool {
		return b.Stats().AuthFailures >= 2 && a.Stats().AuthFailures >= 2
	})
	if b.rec.count("a") != 0 || a.peerStats("b").Connected {
		t.Fatal("a hello claiming another origin than the proven one was accepted")
	}
	if _, ok := b.Stats().Origins["a"]; ok {
		t.Error("a refused hello created origin state")
	}

	// The node the transport does prove gets through.
	c := newNode(t, "c", nil)
	c.SetPeers(map[string]Peer{"b": {Addr: b.addr}})
	sendAll(t, c.Streams, "b", 1, 10, 8)
	testutil.WaitFor(t, 10*time.Second, "delivery from the proven origin", func() bool { return b.rec.count("c") == 10 })
	checkRange(t, b.rec.seqs("c"), 1, 10)
}

func TestStreams_DialerRefusesUnprovenDestination(t *testing.T) {
	// a's transport proves that the address it dialled for "b" is node "x".
	b := newNode(t, "b", nil)
	a := newNode(t, "a", func(c *Config) { c.PeerID = func(net.Conn) string { return "x" } })
	a.SetPeers(map[string]Peer{"b": {Addr: b.addr}})
	if err := a.Send(context.Background(), "b", numbered(1, 8)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "refusal", func() bool { return a.Stats().AuthFailures >= 2 })
	if b.rec.count("a") != 0 || len(b.Stats().Origins) != 0 {
		t.Fatal("the dialler said hello to a destination proven to be another node")
	}
}

func TestStreams_DialUsedForEachPeer(t *testing.T) {
	var mu sync.Mutex
	dialled := map[string]string{}
	var d net.Dialer
	a := newNode(t, "a", func(cfg *Config) {
		cfg.Dial = func(ctx context.Context, addr, peerID string) (net.Conn, error) {
			mu.Lock()
			dialled[peerID] = addr
			mu.Unlock()
			if peerID == "c" {
				return nil, errors.New("no route to c")
			}
			return d.DialContext(ctx, "tcp", addr)
		}
	})
	b, c := newNode(t, "b", nil), newNode(t, "c", nil)
	mesh(a, b, c)
	sendAll(t, a.Streams, "b", 1, 100, 64)
	sendAll(t, a.Streams, "c", 1, 100, 64)
	sendAll(t, c.Streams, "a", 1, 100, 64)
	testutil.WaitFor(t, 10*time.Second, "b to receive", func() bool { return b.rec.count("a") == 100 })
	testutil.WaitFor(t, 10*time.Second, "a to receive from c", func() bool { return a.rec.count("c") == 100 })
	testutil.WaitFor(t, 10*time.Second, "a to try c", func() bool {
		mu.Lock()
		defer mu.Unlock()
		_, ok := dialled["c"]
		return ok
	})
	mu.Lock()
	if dialled["b"] != b.addr || dialled["c"] != c.addr {
		t.Errorf("Dial calls %v, want b at %s and c at %s", dialled, b.addr, c.addr)
	}
	mu.Unlock()
	if ps := a.peerStats("c"); ps.Connected || ps.Queued != 100 || c.rec.count("a") != 0 {
		t.Errorf("peer whose Dial fails: connected=%v queued=%d delivered=%d", ps.Connected, ps.Queued, c.rec.count("a"))
	}
	if !a.peerStats("b").Connected {
		t.Error("b disconnected")
	}
}

func TestStreams_MutualTLSIdentity(t *testing.T) {
	t.Run("certificate of another node", func(t *testing.T) {
		// a presents c's certificate: the TLS handshake succeeds, the hello
		// from "a" does not.
		b := newNode(t, "b", withTLS(t, "b"))
		a := newNode(t, "a", withTLS(t, "c"))
		a.SetPeers(map[string]Peer{"b": {Addr: b.addr}})
		if err := a.Send(context.Background(), "b", numbered(1, 8)); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 10*time.Second, "refusal", func() bool { return b.Stats().AuthFailures >= 2 })
		if b.rec.count("a") != 0 || a.peerStats("b").Connected {
			t.Fatal("stream with a stolen identity delivered")
		}
	})
	t.Run("address of another node", func(t *testing.T) {
		// a believes b is at c's address: Dial must not get past TLS.
		c := newNode(t, "c", withTLS(t, "c"))
		a := newNode(t, "a", withTLS(t, "a"))
		a.SetPeers(map[string]Peer{"b": {Addr: c.addr}})
		if err := a.Send(context.Background(), "b", numbered(1, 8)); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 10*time.Second, "c to see failed connections", func() bool { return c.Stats().HandshakeFailures >= 2 })
		if c.rec.count("a") != 0 || a.peerStats("b").Connected {
			t.Fatal("stream to the wrong node delivered")
		}
	})
}

func TestStreams_BoundsConcurrentHandshakes(t *testing.T) {
	b := newNode(t, "b", nil)
	// Silent connections hold every handshake slot until PeerTimeout.
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			_ = c.Close()
		}
	}()
	for range maxHandshakes {
		c, err := net.Dial("tcp", b.addr)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	testutil.WaitFor(t, 10*time.Second, "every slot taken", func() bool { return len(b.handshakes) == maxHandshakes })
	extra, err := net.Dial("tcp", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	_ = extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("connection beyond the limit: read %v, want EOF", err)
	}
	if b.Stats().HandshakeFailures == 0 {
		t.Error("refused connection not counted")
	}
	for _, c := range idle {
		_ = c.Close()
	}
	idle = nil
	a := newNode(t, "a", nil)
	a.SetPeers(map[string]Peer{"b": {Addr: b.addr}})
	sendAll(t, a.Streams, "b", 1, 10, 8)
	testutil.WaitFor(t, 10*time.Second, "delivery once the slots are free", func() bool { return b.rec.count("a") == 10 })
}

func TestStreams_OriginStateBounded(t *testing.T) {
	s := &Streams{origins: make(map[string]*origin)}
	for i := range maxOrigins {
		o := s.origin(string(rune('A' + i)))
		o.connected.Store(true)
	}
	if o := s.origin("new"); o != nil {
		t.Fatal("a new origin was admitted while every known one is connected")
	}
	old := s.origins[string(rune('A'))]
	old.connected.Store(false)
	if o := s.origin("new"); o == nil || len(s.origins) != maxOrigins || s.origins["A"] != nil {
		t.Fatalf("the disconnected origin was not forgotten: %d origins", len(s.origins))
	}
}

// chanListener hands out connections from a channel and, once closed,
// fails Accept with its own error, as a multiplexed cluster port does.
type chanListener struct {
	conns  chan net.Conn
	done   chan struct{}
	once   sync.Once
	closed atomic.Bool
}

var errPortClosed = errors.New("port: closed")

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, errPortClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { l.closed.Store(true); close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{} }

func TestStreams_ServesAnyListenerAndClosesIt(t *testing.T) {
	ln := &chanListener{conns: make(chan net.Conn), done: make(chan struct{})}
	b := newNode(t, "b", func(c *Config) { c.Listener = ln })
	// a's Dial hands one end of a pipe to b's listener.
	a := newNode(t, "a", func(c *Config) {
		c.Dial = func(ctx context.Context, _, _ string) (net.Conn, error) {
			client, server := net.Pipe()
			select {
			case ln.conns <- server:
				return client, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	})
	a.SetPeers(map[string]Peer{"b": {Addr: "pipe"}})
	sendAll(t, a.Streams, "b", 1, 100, 64)
	testutil.WaitFor(t, 10*time.Second, "delivery over the listener", func() bool { return b.rec.count("a") == 100 })
	checkRange(t, b.rec.seqs("a"), 1, 100)

	start := time.Now()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %s", d)
	}
	if !ln.closed.Load() {
		t.Error("Close left the listener open")
	}
}
