// Package clusternet is the cluster's one TCP port: raft, the forwarding
// RPC and the message streams share it, behind mutual TLS when the cluster
// has a key. See DESIGN.md.
package clusternet

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/soketi-go/soketi/internal/logevery"
)

// Kind is the first byte a dialer sends after the TLS handshake: it says
// which service the connection is for (as Consul's RPC port does).
type Kind byte

const (
	KindRaft   Kind = 'R'
	KindRPC    Kind = 'F'
	KindStream Kind = 'S'
)

func (k Kind) String() string {
	switch k {
	case KindRaft:
		return "raft"
	case KindRPC:
		return "rpc"
	case KindStream:
		return "stream"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Bounds on what a peer, or anyone who can reach the port, can hold open.
const (
	// HandshakeTimeout bounds the TLS handshake plus the kind byte.
	HandshakeTimeout = 5 * time.Second
	// maxHandshakes bounds connections still in their handshake; beyond it
	// new connections are closed at once.
	maxHandshakes = 64
	// handoffTimeout bounds how long an accepted connection waits for its
	// service to take it (raft being re-created after a wipe, say).
	handoffTimeout = 5 * time.Second
)

// MaxConns bounds the open connections of each kind. Raft pools a few per
// peer, the RPC client a few dozen per peer, the streams one per origin.
var MaxConns = map[Kind]int{KindRaft: 64, KindRPC: 256, KindStream: 128}

// ErrClosed is returned by Accept and Dial after Close; it wraps
// net.ErrClosed, which is what accept loops test for.
var ErrClosed = fmt.Errorf("clusternet: closed: %w", net.ErrClosed)

// Config configures a Port.
type Config struct {
	// BindAddr is the TCP listen address; port 0 picks a free one.
	BindAddr string
	// AdvertiseAddr is what peers dial; a missing or zero port takes the
	// bound port. Required when BindAddr has an unspecified IP.
	AdvertiseAddr string
	// Credentials turn on mutual TLS; nil leaves the port open to whoever
	// can reach it (a cluster without CLUSTER_KEY).
	Credentials *Credentials
	Logger      *slog.Logger
}

// Port is the listener and dialer of the cluster port.
type Port struct {
	ln        net.Listener
	adv       string
	creds     *Credentials
	log       *slog.Logger
	services  map[Kind]*serviceListener
	handshake chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{} // every connection past accept, until closed

	refused    atomic.Uint64    // failed handshakes: bad certificate, kind, timeout
	overLimit  atomic.Uint64    // closed because a bound was reached
	refusalLog logevery.Limiter // anyone who reaches the port can cause refusals
}

var keepAlive = net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 5 * time.Second, Count: 3}

// Listen binds the port. Connections are accepted once Start is called.
func Listen(cfg Config) (*Port, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	lc := net.ListenConfig{KeepAliveConfig: keepAlive}
	ln, err := lc.Listen(context.Background(), "tcp", cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("clusternet: listen %s: %w", cfg.BindAddr, err)
	}
	adv, err := advertised(ln.Addr().(*net.TCPAddr), cfg.AdvertiseAddr)
	if err != nil {
		ln.Close()
		return nil, err
	}
	p := &Port{
		ln:        ln,
		adv:       adv,
		creds:     cfg.Credentials,
		log:       cfg.Logger.With("component", "clusternet"),
		services:  make(map[Kind]*serviceListener),
		handshake: make(chan struct{}, maxHandshakes),
		done:      make(chan struct{}),
		conns:     make(map[net.Conn]struct{}),
	}
	for _, k := range []Kind{KindRaft, KindRPC, KindStream} {
		p.services[k] = &serviceListener{port: p, kind: k, conns: make(chan net.Conn),
			slots: make(chan struct{}, MaxConns[k]), done: make(chan struct{})}
	}
	return p, nil
}

// advertised fills the advertise address from the listener: a missing or
// zero port takes the bound port; a missing host needs a specific bind IP.
func advertised(bound *net.TCPAddr, advertise string) (string, error) {
	if advertise == "" {
		if bound.IP.IsUnspecified() {
			return "", fmt.Errorf("clusternet: bound to %s: an advertise address is required", bound)
		}
		return bound.String(), nil
	}
	host, port, err := net.SplitHostPort(advertise)
	if err != nil {
		host, port = advertise, "0"
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		return "", fmt.Errorf("clusternet: advertise address %q has no usable host", advertise)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return "", fmt.Errorf("clusternet: advertise address %q: bad port", advertise)
	} else if p == 0 {
		port = strconv.Itoa(bound.Port)
	}
	return net.JoinHostPort(host, port), nil
}

// Start accepts connections until Close.
func (p *Port) Start() {
	p.wg.Add(1)
	go p.acceptLoop()
}

// Addr is the advertised address (the actual port when bound to 0).
func (p *Port) Addr() string { return p.adv }

// Secured reports whether the port requires mutual TLS.
func (p *Port) Secured() bool { return p.creds != nil }

// Listener returns the connections of one kind. Closing it stops its
// Accept only; the port keeps serving the other kinds, and a new Listener
// of the same kind can be taken later (raft is re-created after a wipe).
func (p *Port) Listener(k Kind) net.Listener {
	s := p.services[k]
	if s == nil {
		panic("clusternet: unknown kind " + k.String())
	}
	return &kindListener{s: s, done: make(chan struct{})}
}

// Stats counts refused connections.
type Stats struct {
	Refused   uint64 `json:"refused"`
	OverLimit uint64 `json:"over_limit"`
}

// Stats reads the counters.
func (p *Port) Stats() Stats {
	return Stats{Refused: p.refused.Load(), OverLimit: p.overLimit.Load()}
}

func (p *Port) acceptLoop() {
	defer p.wg.Done()
	var backoff time.Duration
	for {
		c, err := p.ln.Accept()
		if err != nil {
			select {
			case <-p.done:
				return
			default:
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			p.log.Warn("accept failed", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-p.done:
				return
			}
			continue
		}
		backoff = 0
		select {
		case p.handshake <- struct{}{}:
			p.wg.Add(1)
			go p.serve(c)
		default:
			p.overLimit.Add(1)
			c.Close()
		}
	}
}

// serve runs the handshake: TLS first, so that nothing is read from a peer
// that cannot prove the key, then the kind byte; then hands the connection
// to its service.
func (p *Port) serve(raw net.Conn) {
	defer p.wg.Done()
	c, kind, err := p.accept(raw)
	<-p.handshake
	if err != nil {
		p.refused.Add(1)
		p.logRefusal("cluster connection refused", "remote", raw.RemoteAddr().String(), "err", err)
		raw.Close()
		return
	}
	s := p.services[kind]
	select {
	case s.slots <- struct{}{}:
	default:
		p.overLimit.Add(1)
		p.logRefusal("cluster connection over limit", "kind", kind.String(), "limit", cap(s.slots))
		c.Close()
		return
	}
	tc := &trackedConn{Conn: c, release: func() { <-s.slots }}
	if !p.track(tc) {
		tc.Close()
		return
	}
	t := time.NewTimer(handoffTimeout)
	defer t.Stop()
	select {
	case s.conns <- tc:
	case <-t.C:
		tc.Close()
	case <-p.done:
		tc.Close()
	}
}

func (p *Port) accept(raw net.Conn) (net.Conn, Kind, error) {
	_ = raw.SetDeadline(time.Now().Add(HandshakeTimeout))
	c := raw
	if p.creds != nil {
		tc := tls.Server(raw, p.creds.serverConfig())
		if err := tc.Handshake(); err != nil {
			return nil, 0, err
		}
		c = tc
	}
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil {
		return nil, 0, fmt.Errorf("read kind: %w", err)
	}
	kind := Kind(b[0])
	if p.services[kind] == nil {
		return nil, 0, fmt.Errorf("unknown kind %d", b[0])
	}
	_ = raw.SetDeadline(time.Time{})
	return c, kind, nil
}

// track registers c so that Close closes it; it refuses after Close.
func (p *Port) track(c *trackedConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		return false
	default:
	}
	p.conns[c] = struct{}{}
	c.untrack = func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}
	return true
}

// Dial connects to the cluster port at addr for kind. With credentials the
// peer must prove the cluster CA and, when peerID is set, be that node.
func (p *Port) Dial(ctx context.Context, addr string, kind Kind, peerID string) (net.Conn, error) {
	select {
	case <-p.done:
		return nil, ErrClosed
	default:
	}
	d := net.Dialer{Timeout: HandshakeTimeout, KeepAliveConfig: keepAlive}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	dl := time.Now().Add(HandshakeTimeout)
	if ctxDL, ok := ctx.Deadline(); ok && ctxDL.Before(dl) {
		dl = ctxDL
	}
	_ = raw.SetDeadline(dl)
	c := raw
	if p.creds != nil {
		tc := tls.Client(raw, p.creds.clientConfig(peerID))
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("clusternet: tls to %s: %w", addr, err)
		}
		c = tc
	}
	if _, err := c.Write([]byte{byte(kind)}); err != nil {
		c.Close()
		return nil, err
	}
	_ = raw.SetDeadline(time.Time{})
	return c, nil
}

// DialTimeout is Dial with a timeout instead of a context (raft's
// StreamLayer dials this way).
func (p *Port) DialTimeout(addr string, kind Kind, peerID string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return p.Dial(ctx, addr, kind, peerID)
}

// Close stops accepting, closes every accepted connection and waits for
// the handshakes in progress.
func (p *Port) Close() {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		close(p.done)
		conns := make([]net.Conn, 0, len(p.conns))
		for c := range p.conns {
			conns = append(conns, c)
		}
		p.mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
		p.ln.Close()
	})
	p.wg.Wait()
}

func (p *Port) logRefusal(msg string, args ...any) { p.refusalLog.Warn(p.log, msg, args...) }

// PeerID is the node id that c's certificate proves: "" for a connection
// of a port without credentials. A TLS connection that has not proved one
// gets unverifiedPeer, which no node id can equal, so a check fails safe.
func PeerID(c net.Conn) string {
	if tc, ok := c.(*trackedConn); ok {
		c = tc.Conn
	}
	tc, ok := c.(*tls.Conn)
	if !ok {
		return ""
	}
	cs := tc.ConnectionState()
	if !cs.HandshakeComplete || len(cs.PeerCertificates) == 0 || cs.PeerCertificates[0].Subject.CommonName == "" {
		return unverifiedPeer
	}
	return cs.PeerCertificates[0].Subject.CommonName
}

// unverifiedPeer is longer than any node id (ids are at most 256 bytes).
var unverifiedPeer = "\x00unverified" + strings.Repeat("\x00", 256)

// serviceListener hands accepted connections of one kind to its service.
type serviceListener struct {
	port  *Port
	kind  Kind
	conns chan net.Conn
	slots chan struct{} // open connections of this kind
	done  chan struct{}
}

type kindListener struct {
	s    *serviceListener
	done chan struct{}
	once sync.Once
}

func (l *kindListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.s.conns:
		return c, nil
	case <-l.done:
		return nil, ErrClosed
	case <-l.s.port.done:
		return nil, ErrClosed
	}
}

func (l *kindListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *kindListener) Addr() net.Addr { return advAddr(l.s.port.adv) }

// advAddr is the advertised host:port; host names are allowed.
type advAddr string

func (a advAddr) Network() string { return "tcp" }
func (a advAddr) String() string  { return string(a) }

// trackedConn gives back its kind's slot and leaves the port's set when
// closed.
type trackedConn struct {
	net.Conn
	once    sync.Once
	release func()
	untrack func()
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.release()
		if c.untrack != nil {
			c.untrack()
		}
	})
	return err
}
