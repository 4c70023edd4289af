// Package stream is the cluster's data plane: persistent, ordered,
// back-pressured streams over the cluster port's connections that carry
// publishes, user messages and small control messages between nodes,
// exactly once across reconnects.
package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/soketi-go/soketi/internal/logevery"
)

// Defaults for the zero values of Config.
const (
	DefaultMaxQueueBytes = 8 << 20
	DefaultRetainBytes   = 8 << 20
	DefaultSendTimeout   = 100 * time.Millisecond
	DefaultPeerTimeout   = 5 * time.Second
)

const (
	minBackoff = 50 * time.Millisecond
	// minPeerTimeout keeps heartbeats (PeerTimeout/4) from flooding the link.
	minPeerTimeout = 100 * time.Millisecond
	maxBackoff     = 2 * time.Second
	// ackEvery and ackDelay bound how long a delivered message stays
	// unacknowledged: the destination acks after this many messages or this
	// long after the first unacknowledged one, whichever comes first.
	ackEvery = 256
	ackDelay = 5 * time.Millisecond
	// maxOrigins bounds the per-origin resume state a destination keeps;
	// beyond it the least recently seen disconnected origin is forgotten,
	// and a new origin is refused while all of them are connected.
	maxOrigins = 1024
	// maxHandshakes bounds the inbound connections in their handshake at
	// once; more are closed at once.
	maxHandshakes = 64
)

var (
	// ErrUnknownPeer is returned by Send for a node that is not (or no
	// longer) in the peer set.
	ErrUnknownPeer = errors.New("stream: unknown peer")
	// ErrBackpressure is returned by Send when a connected peer's queue
	// stayed full for SendTimeout; the message was not queued.
	ErrBackpressure = errors.New("stream: peer queue full")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("stream: closed")
)

// Config configures a node's streams. Zero values take the defaults.
type Config struct {
	// NodeID is this node's gossip id; peers check it in the handshake.
	NodeID string
	// Incarnation distinguishes process lives of one NodeID and must grow
	// across restarts (gossip uses the start time in Unix nanoseconds);
	// 0 means the current time. A destination that sees a larger one resets
	// its sequence state for this origin.
	Incarnation uint64
	// Listener yields inbound stream connections. The cluster port owns the
	// socket: it has already done the TLS handshake and read the connection
	// kind, so the first byte read is the stream hello. Required. Streams
	// closes it on Close (not when New fails). Accept should return an
	// error wrapping net.ErrClosed once closed; other errors are retried
	// with back-off until Close.
	Listener net.Listener
	// Dial opens an outbound stream connection to node peerID at addr, ready
	// for the hello (TLS and kind byte done by the caller's transport). A
	// transport that proves identities must refuse an address whose
	// certificate is not peerID's. ctx ends after PeerTimeout or when the
	// peer is removed. Default: plain TCP (net.Dialer, timeout PeerTimeout),
	// for tests.
	Dial func(ctx context.Context, addr, peerID string) (net.Conn, error)
	// PeerID returns the node id that conn's certificate proves, or "" when
	// the transport proves none (no CLUSTER_KEY). An inbound hello whose
	// origin differs from a proven id is refused; it is asked after the
	// hello has been read. A connection returned by Dial that it proves to
	// be another node than peerID is closed unused. Default: always "".
	PeerID func(conn net.Conn) string
	// MaxQueueBytes bounds each peer's not-yet-written messages while the
	// peer is connected (default 8 MiB).
	MaxQueueBytes int
	// RetainBytes bounds each peer's written but unacknowledged messages,
	// kept for retransmission; it is also the flow-control window: the
	// writer pauses when it is full (default 8 MiB).
	RetainBytes int
	// SendTimeout is the longest Send and Broadcast block when a connected
	// peer's queue is full before returning ErrBackpressure (default 100 ms).
	SendTimeout time.Duration
	// PeerTimeout closes and redials a connection that has been silent (no
	// frame, not even a heartbeat) or unable to write for this long; it also
	// bounds dials and handshakes. Heartbeats go every PeerTimeout/4
	// (default 5 s, at least 100 ms).
	PeerTimeout time.Duration
	Logger      *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.NodeID == "" || len(c.NodeID) > maxIDLen {
		return fmt.Errorf("stream: node id must be 1 to %d bytes", maxIDLen)
	}
	if c.Listener == nil {
		return errors.New("stream: nil listener")
	}
	if c.Incarnation == 0 {
		c.Incarnation = uint64(time.Now().UnixNano())
	}
	if c.MaxQueueBytes <= 0 {
		c.MaxQueueBytes = DefaultMaxQueueBytes
	}
	if c.RetainBytes <= 0 {
		c.RetainBytes = DefaultRetainBytes
	}
	if c.SendTimeout <= 0 {
		c.SendTimeout = DefaultSendTimeout
	}
	switch {
	case c.PeerTimeout <= 0:
		c.PeerTimeout = DefaultPeerTimeout
	case c.PeerTimeout < minPeerTimeout:
		c.PeerTimeout = minPeerTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Dial == nil {
		d := net.Dialer{Timeout: c.PeerTimeout, KeepAliveConfig: keepAlive}
		c.Dial = func(ctx context.Context, addr, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	if c.PeerID == nil {
		c.PeerID = func(net.Conn) string { return "" }
	}
	return nil
}

var keepAlive = net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 5 * time.Second, Count: 3}

// Streams holds this node's outbound stream to every peer and its inbound
// streams from every origin.
type Streams struct {
	cfg     Config
	deliver func(from string, m Message)
	log     *slog.Logger
	ln      net.Listener
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	// peers is replaced, never mutated, so Send reads it without a lock.
	peers atomic.Pointer[map[string]*peer]

	// draining makes every peer refuse new messages (Drain).
	draining atomic.Bool

	mu      sync.Mutex
	started bool
	closed  bool
	removed counters // totals of peers no longer in the set
	origins map[string]*origin
	inbound map[net.Conn]struct{}
	// handshakes holds a token per inbound connection still in its
	// handshake; when full, further connections are refused at once.
	handshakes chan struct{}

	handshakeFailures atomic.Uint64
	authFailures      atomic.Uint64
	refusalLog        logevery.Limiter // anyone who reaches the cluster port can cause refusals
}

// New prepares the streams over cfg.Listener, which Start serves. deliver
// is called with each message from another node, in the origin's order,
// exactly once per message of an origin incarnation. It runs on the
// connection's reader goroutine (one per origin, so calls for different
// origins are concurrent) and must not block: while it runs nothing more is
// read from that origin, and a stuck deliver eventually back-pressures the
// origin's Send. The Message is owned by the callee.
func New(cfg Config, deliver func(from string, m Message)) (*Streams, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if deliver == nil {
		return nil, errors.New("stream: nil deliver")
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Streams{
		cfg:        cfg,
		deliver:    deliver,
		log:        cfg.Logger.With("component", "stream", "node_id", cfg.NodeID),
		ln:         cfg.Listener,
		ctx:        ctx,
		cancel:     cancel,
		origins:    make(map[string]*origin),
		inbound:    make(map[net.Conn]struct{}),
		handshakes: make(chan struct{}, maxHandshakes),
	}
	s.peers.Store(&map[string]*peer{})
	return s, nil
}

// Start accepts inbound streams and dials the peers; it returns at once.
// Cancelling ctx closes the Streams.
func (s *Streams) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.started {
		return errors.New("stream: already started")
	}
	s.started = true
	s.wg.Add(1)
	go s.acceptLoop()
	for _, p := range *s.peers.Load() {
		s.startPeer(p)
	}
	context.AfterFunc(ctx, func() { _ = s.Close() })
	s.log.Info("streams started", "addr", s.ln.Addr().String())
	return nil
}

// Peer is a node to keep a stream to.
type Peer struct {
	// Addr is passed to Dial.
	Addr string
	// Incarnation is the node's process life as gossip knows it, 0 when
	// unknown. When it changes the stream is replaced by a new one: what
	// was queued was meant for a process that is gone.
	Incarnation uint64
	// Lingering marks a node that gossip declared dead but that may only be
	// cut off and come back. Its stream keeps its queue and keeps
	// redialling; while it is unreachable Send never fails, and beyond the
	// bound the oldest messages are evicted. To a peer not lingering
	// (believed alive) an unreachable peer's full queue refuses the message
	// instead (ErrBackpressure), so the caller knows.
	Lingering bool
}

// SetPeers replaces the peer set (node id → peer), normally the gossip
// members that are alive or dead but not gone. New peers are dialled;
// removed ones are closed and their queued messages dropped; a peer whose
// Incarnation changed is replaced by a new stream; a changed address is
// redialled with the queue kept. This node's own id is ignored.
func (s *Streams) SetPeers(peers map[string]Peer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	old := *s.peers.Load()
	next := make(map[string]*peer, len(peers))
	var added []*peer
	for id, spec := range peers {
		if id == s.cfg.NodeID {
			continue
		}
		if p, ok := old[id]; ok && (p.inc == 0 || spec.Incarnation == 0 || p.inc == spec.Incarnation) {
			p.inc = max(p.inc, spec.Incarnation)
			p.update(spec)
			next[id] = p
			continue
		}
		p := newPeer(s, id, spec)
		next[id] = p
		added = append(added, p)
	}
	for id, p := range old {
		if next[id] != p {
			dropped := p.close(ErrUnknownPeer)
			s.removed.add(p.counters())
			if next[id] != nil {
				s.log.Info("peer restarted, new stream", "peer", id, "incarnation", next[id].inc, "dropped", dropped)
			} else {
				s.log.Info("peer removed", "peer", id, "dropped", dropped)
			}
		}
	}
	for _, p := range added {
		if s.started {
			s.startPeer(p)
		}
		s.log.Info("peer added", "peer", p.id, "addr", p.addr, "lingering", p.lingering)
	}
	s.peers.Store(&next)
}

func (s *Streams) startPeer(p *peer) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		p.run()
	}()
}

// Send queues m on the ordered stream to peer. It returns nil once m is
// queued, ErrUnknownPeer, ErrInvalidMessage, ErrClosed (after Close or
// Drain), ctx's error, or ErrBackpressure when m does not fit: the peer is
// connected and its queue stayed full for SendTimeout, or it is unreachable
// and holds MaxQueueBytes+RetainBytes already. Send never blocks longer than
// SendTimeout, and not at all while the peer is unreachable. To a lingering
// peer that is unreachable it never fails: the queue keeps the newest
// MaxQueueBytes+RetainBytes and the evicted messages are counted as dropped.
func (s *Streams) Send(ctx context.Context, peer string, m Message) error {
	enc, err := encodeMessage(m)
	if err != nil {
		return err
	}
	p := (*s.peers.Load())[peer]
	if p == nil {
		if s.isClosed() {
			return ErrClosed
		}
		return ErrUnknownPeer
	}
	dl := deadline{timeout: s.cfg.SendTimeout}
	return p.enqueue(ctx, enc, &dl)
}

// Broadcast queues m to each of peers (nil means every peer), encoding it
// once; this node's own id is skipped. All peers share one SendTimeout, so
// Broadcast blocks at most SendTimeout in total. The error joins one
// "peer <id>: <cause>" error per failed peer, so errors.Is finds the causes.
func (s *Streams) Broadcast(ctx context.Context, m Message, peers []string) error {
	if peers == nil {
		all := *s.peers.Load()
		peers = make([]string, 0, len(all))
		for id := range all {
			peers = append(peers, id)
		}
	}
	return s.BroadcastTo(ctx, m, peers, nil)
}

// BroadcastTo queues m to each of peers and then, best effort, to each of
// also: the message is encoded once and both groups share the one
// SendTimeout, peers first; only the failures of peers are returned.
func (s *Streams) BroadcastTo(ctx context.Context, m Message, peers, also []string) error {
	enc, err := encodeMessage(m)
	if err != nil {
		return err
	}
	all := *s.peers.Load()
	dl := deadline{timeout: s.cfg.SendTimeout}
	var errs []error
	for _, id := range peers {
		if id == s.cfg.NodeID {
			continue
		}
		p := all[id]
		if p == nil {
			cause := ErrUnknownPeer
			if s.isClosed() {
				cause = ErrClosed
			}
			errs = append(errs, fmt.Errorf("peer %s: %w", id, cause))
			continue
		}
		if err := p.enqueue(ctx, enc, &dl); err != nil {
			errs = append(errs, fmt.Errorf("peer %s: %w", id, err))
		}
	}
	for _, id := range also {
		if p := all[id]; p != nil && id != s.cfg.NodeID {
			_ = p.enqueue(ctx, enc, &dl)
		}
	}
	return errors.Join(errs...)
}

// Drain makes Send and Broadcast refuse every new message (ErrClosed) and
// waits until everything queued to the peers that are not lingering has
// been acknowledged, or ctx ends. The streams keep running (acks, inbound
// messages) until Close. A node that is stopping calls it before it leaves,
// so that what it accepted reaches the others.
func (s *Streams) Drain(ctx context.Context) error {
	s.draining.Store(true)
	t := time.NewTicker(ackDelay)
	defer t.Stop()
	for {
		left, peers := 0, 0
		for _, p := range *s.peers.Load() {
			if n := p.undrained(); n > 0 {
				left += n
				peers++
			}
		}
		if left == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stream: %d messages to %d peers not acknowledged: %w", left, peers, ctx.Err())
		case <-t.C:
		}
	}
}

// Close stops every stream and waits for its goroutines, including any
// deliver call in progress. Queued messages are dropped.
func (s *Streams) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	peers := *s.peers.Load()
	s.peers.Store(&map[string]*peer{})
	for _, p := range peers {
		p.close(ErrClosed)
		s.removed.add(p.counters())
	}
	for c := range s.inbound {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.cancel()
	err := s.ln.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	s.wg.Wait()
	s.log.Info("streams closed")
	return err
}

func (s *Streams) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// deadline starts the SendTimeout clock the first time a Send has to wait.
type deadline struct {
	timeout time.Duration
	at      time.Time
}

func (d *deadline) remaining() time.Duration {
	if d.at.IsZero() {
		d.at = time.Now().Add(d.timeout)
	}
	return time.Until(d.at)
}

// epochs numbers stream lives: a peer removed and added again starts a new
// stream, which its destination must not mistake for a resumed one. They
// grow across Streams in one process and, being time based, across
// processes too.
var lastEpoch atomic.Uint64

func nextEpoch() uint64 {
	for {
		prev := lastEpoch.Load()
		next := max(prev+1, uint64(time.Now().UnixNano()))
		if lastEpoch.CompareAndSwap(prev, next) {
			return next
		}
	}
}

func (s *Streams) logRefusal(msg string, args ...any) { s.refusalLog.Warn(s.log, msg, args...) }
