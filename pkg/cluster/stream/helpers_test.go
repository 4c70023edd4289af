package stream

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
)

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("STREAM_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// recorder keeps, per origin, the numbers carried in the first 8 payload
// bytes of delivered messages.
type recorder struct {
	mu   sync.Mutex
	got  map[string][]uint64
	gate chan struct{} // when set, deliver waits for it to close
}

func newRecorder() *recorder { return &recorder{got: make(map[string][]uint64)} }

func (r *recorder) deliver(from string, m Message) {
	r.mu.Lock()
	gate := r.gate
	r.mu.Unlock()
	if gate != nil {
		<-gate
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got[from] = append(r.got[from], binary.BigEndian.Uint64(m.Payload))
}

// block makes deliver wait until the returned channel is closed.
func (r *recorder) block() chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gate = make(chan struct{})
	return r.gate
}

func (r *recorder) count(from string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got[from])
}

func (r *recorder) seqs(from string) []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got[from])
}

func (r *recorder) last(from string) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if g := r.got[from]; len(g) > 0 {
		return g[len(g)-1]
	}
	return 0
}

type node struct {
	*Streams
	id   string
	addr string // what peers Dial
	rec  *recorder
}

// listen opens a TCP listener on addr, closed when the test ends.
func listen(t testing.TB, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// newNode starts a node listening on 127.0.0.1 over plain TCP; mutate
// adjusts its Config (a transport, a listener on a given address).
func newNode(t testing.TB, id string, mutate func(*Config)) *node {
	t.Helper()
	cfg := Config{NodeID: id, Listener: listen(t, "127.0.0.1:0"), Logger: testLogger(t)}
	if mutate != nil {
		mutate(&cfg)
	}
	rec := newRecorder()
	s, err := New(cfg, rec.deliver)
	if err != nil {
		t.Fatalf("New(%s): %v", id, err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("Start(%s): %v", id, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return &node{Streams: s, id: id, addr: cfg.Listener.Addr().String(), rec: rec}
}

// mesh makes every node a peer of every other.
func mesh(nodes ...*node) {
	for _, n := range nodes {
		peers := make(map[string]Peer)
		for _, o := range nodes {
			peers[o.id] = Peer{Addr: o.addr}
		}
		n.SetPeers(peers)
	}
}

// both applies every non-nil mutation in turn.
func both(fs ...func(*Config)) func(*Config) {
	return func(c *Config) {
		for _, f := range fs {
			if f != nil {
				f(c)
			}
		}
	}
}

func numbered(i uint64, size int) Message {
	p := make([]byte, max(size, 8))
	binary.BigEndian.PutUint64(p, i)
	return Message{Kind: KindPublish, App: "app-id", Channel: "presence-room", Except: "123.456", Payload: p}
}

// sendAll sends messages from..to to peer, retrying on back-pressure.
func sendAll(t testing.TB, s *Streams, peer string, from, to uint64, size int) {
	t.Helper()
	for i := from; i <= to; i++ {
		for {
			err := s.Send(context.Background(), peer, numbered(i, size))
			if err == nil {
				break
			}
			if err != ErrBackpressure {
				t.Errorf("Send %d: %v", i, err)
				return
			}
		}
	}
}

// checkRange fails unless got is exactly from..to.
func checkRange(t testing.TB, got []uint64, from, to uint64) {
	t.Helper()
	if uint64(len(got)) != to-from+1 {
		t.Fatalf("got %d messages, want %d (%s)", len(got), to-from+1, summary(got))
	}
	for i, v := range got {
		if v != from+uint64(i) {
			t.Fatalf("message %d is %d, want %d (%s)", i, v, from+uint64(i), summary(got))
		}
	}
}

func summary(got []uint64) string {
	if len(got) <= 8 {
		return fmt.Sprint(got)
	}
	return fmt.Sprintf("%v … %v", got[:4], got[len(got)-4:])
}

func (s *Streams) peerStats(id string) PeerStats { return s.Stats().Peers[id] }

// killOutbound closes the current connection to peer, as a network fault would.
func (s *Streams) killOutbound(peer string) bool {
	p := (*s.peers.Load())[peer]
	if p == nil {
		return false
	}
	p.mu.Lock()
	c := p.conn
	p.mu.Unlock()
	if c == nil {
		return false
	}
	_ = c.Close()
	return true
}

// killInbound closes every inbound connection.
func (s *Streams) killInbound() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.inbound {
		_ = c.Close()
	}
	return len(s.inbound)
}

// proxy forwards TCP to target until cut, which closes its connections and
// refuses new ones until restore.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	thawed chan struct{} // open while frozen: data is held, connections stay up
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newProxy(t testing.TB, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.conns = append(p.conns, c, u)
		p.wg.Add(2)
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			defer dst.Close()
			defer src.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := src.Read(buf)
				p.mu.Lock()
				thawed := p.thawed
				p.mu.Unlock()
				if thawed != nil {
					<-thawed
				}
				if n > 0 {
					if _, werr := dst.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}
		go pipe(u, c)
		go pipe(c, u)
	}
}

// freeze holds all data in flight, like a peer that hangs without closing.
func (p *proxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.thawed == nil {
		p.thawed = make(chan struct{})
	}
}

func (p *proxy) thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.thawed != nil {
		close(p.thawed)
		p.thawed = nil
	}
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.thawed != nil {
		close(p.thawed)
		p.thawed = nil
	}
	p.down = true
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

func (p *proxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}
