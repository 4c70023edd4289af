package consensus

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// One TCP port carries both raft and the forwarding RPC, so gossip only
// advertises one address. The dialer writes one byte saying which (as
// Consul does); the listener dispatches on it.
const (
	muxRaft byte = 'R'
	muxRPC  byte = 'F'

	handshakeTimeout = 5 * time.Second
	// maxHandshakes bounds connections whose first byte has not arrived;
	// beyond it new connections are closed at once.
	maxHandshakes = 64
	// maxRPCConns bounds served RPC connections; beyond it they are closed.
	maxRPCConns = 256
	// raftHandoff bounds how long an accepted raft connection waits for the
	// raft transport to take it (e.g. while raft is being re-created).
	raftHandoff = 5 * time.Second
)

var errMuxClosed = errors.New("consensus: listener closed")

type mux struct {
	ln        net.Listener
	adv       advAddr
	log       *slog.Logger
	raftConns chan net.Conn
	serveRPC  func(net.Conn)

	handshakes chan struct{}
	rpcSlots   chan struct{}
	done       chan struct{}
	closeOnce  sync.Once
	wg         sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{} // RPC connections being served
}

// advAddr is the advertised host:port; hostnames are allowed.
type advAddr string

func (a advAddr) Network() string { return "tcp" }
func (a advAddr) String() string  { return string(a) }

func newMux(bind, advertise string, log *slog.Logger) (*mux, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", bind, err)
	}
	adv, err := advertised(ln.Addr().(*net.TCPAddr), advertise)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return &mux{
		ln:         ln,
		adv:        adv,
		log:        log,
		raftConns:  make(chan net.Conn),
		handshakes: make(chan struct{}, maxHandshakes),
		rpcSlots:   make(chan struct{}, maxRPCConns),
		done:       make(chan struct{}),
		conns:      make(map[net.Conn]struct{}),
	}, nil
}

// advertised fills the advertise address from the listener: a missing or
// zero port takes the bound port; a missing host needs a specific bind IP.
func advertised(bound *net.TCPAddr, advertise string) (advAddr, error) {
	if advertise == "" {
		if bound.IP.IsUnspecified() {
			return "", fmt.Errorf("consensus: bound to %s: an advertise address is required", bound)
		}
		return advAddr(bound.String()), nil
	}
	host, port, err := net.SplitHostPort(advertise)
	if err != nil {
		host, port = advertise, "0"
	}
	if host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified() {
		return "", fmt.Errorf("consensus: advertise address %q has no usable host", advertise)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return "", fmt.Errorf("consensus: advertise address %q: bad port", advertise)
	} else if p == 0 {
		port = strconv.Itoa(bound.Port)
	}
	return advAddr(net.JoinHostPort(host, port)), nil
}

func (m *mux) start(serveRPC func(net.Conn)) {
	m.serveRPC = serveRPC
	m.wg.Add(1)
	go m.acceptLoop()
}

func (m *mux) acceptLoop() {
	defer m.wg.Done()
	var backoff time.Duration
	for {
		c, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.done:
				return
			default:
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			m.log.Warn("accept failed", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-m.done:
				return
			}
			continue
		}
		backoff = 0
		select {
		case m.handshakes <- struct{}{}:
			m.wg.Add(1)
			go m.handshake(c)
		default:
			c.Close()
		}
	}
}

func (m *mux) handshake(c net.Conn) {
	defer m.wg.Done()
	var b [1]byte
	_ = c.SetReadDeadline(time.Now().Add(handshakeTimeout))
	_, err := c.Read(b[:])
	<-m.handshakes
	if err != nil {
		c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	switch b[0] {
	case muxRaft:
		t := time.NewTimer(raftHandoff)
		defer t.Stop()
		select {
		case m.raftConns <- c:
		case <-t.C:
			c.Close()
		case <-m.done:
			c.Close()
		}
	case muxRPC:
		select {
		case m.rpcSlots <- struct{}{}:
		default:
			c.Close()
			return
		}
		if !m.track(c, true) {
			<-m.rpcSlots
			c.Close()
			return
		}
		m.serveRPC(c)
		m.track(c, false)
		<-m.rpcSlots
		c.Close()
	default:
		c.Close()
	}
}

// track adds or removes a served connection; it refuses to add after close.
func (m *mux) track(c net.Conn, add bool) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !add {
		delete(m.conns, c)
		return true
	}
	select {
	case <-m.done:
		return false
	default:
	}
	m.conns[c] = struct{}{}
	return true
}

func (m *mux) close() {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		close(m.done)
		for c := range m.conns {
			c.Close()
		}
		m.mu.Unlock()
		m.ln.Close()
	})
	m.wg.Wait()
}

// stream returns a raft.StreamLayer over the mux. Closing it (raft does
// on shutdown) stops its Accept but keeps the listener, so a new raft
// instance can be created on the same port.
func (m *mux) stream() *streamLayer {
	return &streamLayer{m: m, done: make(chan struct{})}
}

type streamLayer struct {
	m    *mux
	done chan struct{}
	once sync.Once
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func (s *streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.m.raftConns:
		return c, nil
	case <-s.done:
		return nil, errMuxClosed
	case <-s.m.done:
		return nil, errMuxClosed
	}
}

func (s *streamLayer) Close() error {
	s.once.Do(func() { close(s.done) })
	return nil
}

func (s *streamLayer) Addr() net.Addr { return s.m.adv }

func (s *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return dialMux(string(addr), muxRaft, timeout)
}

func dialMux(addr string, kind byte, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	_ = c.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte{kind}); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetWriteDeadline(time.Time{})
	return c, nil
}
