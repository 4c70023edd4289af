package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// msgOverhead is charged per queued message on top of its bytes, so a flood
// of tiny messages is bounded too.
const msgOverhead = 32

func msgCost(m []byte) int { return len(m) + msgOverhead }

// peer is the outbound stream to one node. Its queue holds every message
// from the oldest unacknowledged one on, consecutively numbered:
//
//	first … written      written, kept until acknowledged (≤ RetainBytes)
//	written+1 … next-1   not yet written (≤ MaxQueueBytes while connected)
type peer struct {
	s      *Streams
	id     string
	epoch  uint64
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wake   chan struct{} // capacity 1: the writer may have work
	redial chan struct{} // capacity 1: dial now, without waiting for the back-off
	c      counters
	inc    uint64 // the destination's incarnation as SetPeers gave it; guarded by s.mu

	mu          sync.Mutex
	addr        string
	q           [][]byte // q[head:] are the queued messages
	head        int
	first       uint64 // seq of q[head]
	written     uint64 // last seq written on the current connection
	highWritten uint64 // last seq ever written, to tell retransmissions apart
	bytes       int    // cost of all queued messages
	pending     int    // cost of the messages after written
	connected   bool
	lingering   bool // see Peer.Lingering
	closed      bool
	closeErr    error
	remoteInc   uint64 // destination incarnation at the last handshake
	conn        net.Conn
	waiters     int
	space       chan struct{} // closed to wake blocked senders
	evicting    bool          // eviction logged during this outage
}

func newPeer(s *Streams, id string, spec Peer) *peer {
	ctx, cancel := context.WithCancel(s.ctx)
	return &peer{
		s:         s,
		id:        id,
		epoch:     nextEpoch(),
		log:       s.log.With("peer", id),
		ctx:       ctx,
		cancel:    cancel,
		wake:      make(chan struct{}, 1),
		redial:    make(chan struct{}, 1),
		inc:       spec.Incarnation,
		addr:      spec.Addr,
		lingering: spec.Lingering,
		first:     1,
		space:     make(chan struct{}),
	}
}

// update applies a new address (the connection is redialled, the queue
// kept) and the lingering mark. A peer back from lingering, or at a new
// address, is dialled at once rather than after the back-off.
func (p *peer) update(spec Peer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	kick := false
	if spec.Addr != p.addr {
		p.log.Info("peer address changed", "addr", spec.Addr, "previous", p.addr)
		p.addr = spec.Addr
		if p.conn != nil {
			_ = p.conn.Close()
		}
		kick = true
	}
	if spec.Lingering != p.lingering {
		p.log.Info("peer lingering changed", "lingering", spec.Lingering, "connected", p.connected)
		p.lingering = spec.Lingering
		kick = kick || !spec.Lingering
	}
	if kick {
		select {
		case p.redial <- struct{}{}:
		default:
		}
	}
}

func (p *peer) next() uint64 { return p.first + uint64(len(p.q)-p.head) }

func (p *peer) at(seq uint64) []byte { return p.q[p.head+int(seq-p.first)] }

// enqueue appends msg. While connected and full it waits for the writer to
// make room until dl expires. While disconnected and full it refuses msg,
// or, lingering, evicts the oldest.
func (p *peer) enqueue(ctx context.Context, msg []byte, dl *deadline) error {
	p.mu.Lock()
	for !p.closed && p.connected && p.pending > 0 && p.pending+msgCost(msg) > p.s.cfg.MaxQueueBytes {
		wait := dl.remaining()
		if wait <= 0 {
			p.mu.Unlock()
			p.c.backpressure.Add(1)
			return ErrBackpressure
		}
		space := p.space
		p.waiters++
		p.mu.Unlock()
		err := waitSpace(ctx, space, wait)
		p.mu.Lock()
		p.waiters--
		if err != nil {
			p.mu.Unlock()
			if errors.Is(err, ErrBackpressure) {
				p.c.backpressure.Add(1)
			}
			return err
		}
	}
	if p.closed {
		err := p.closeErr
		p.mu.Unlock()
		return err
	}
	// Checked under p.mu, which Drain takes to look at the queue: a message
	// is either refused or waited for.
	if p.s.draining.Load() {
		p.mu.Unlock()
		return ErrClosed
	}
	n := msgCost(msg)
	if !p.connected && !p.lingering && p.bytes > 0 && p.bytes+n > p.s.cfg.MaxQueueBytes+p.s.cfg.RetainBytes {
		p.mu.Unlock()
		p.c.backpressure.Add(1)
		return ErrBackpressure
	}
	p.q = append(p.q, msg)
	p.bytes += n
	p.pending += n
	if !p.connected && p.lingering {
		p.evict()
	}
	p.mu.Unlock()
	p.c.enqueued.Add(1)
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return nil
}

func waitSpace(ctx context.Context, space <-chan struct{}, wait time.Duration) error {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-space:
		return nil
	case <-t.C:
		return ErrBackpressure
	case <-ctx.Done():
		return ctx.Err()
	}
}

// signalSpace wakes blocked senders; p.mu is held.
func (p *peer) signalSpace() {
	if p.waiters > 0 {
		close(p.space)
		p.space = make(chan struct{})
	}
}

// popFront removes the oldest message; p.mu is held.
func (p *peer) popFront() {
	n := msgCost(p.q[p.head])
	if p.first > p.written {
		p.pending -= n
		p.written = p.first
	}
	p.bytes -= n
	p.q[p.head] = nil
	p.head++
	p.first++
	if p.head >= 1024 && p.head*2 >= len(p.q) {
		k := copy(p.q, p.q[p.head:])
		clear(p.q[k:])
		p.q = p.q[:k]
		p.head = 0
	}
}

// evict keeps an unreachable lingering peer's queue within
// MaxQueueBytes+RetainBytes by dropping the oldest messages; the
// destination sees the gap. p.mu is held.
func (p *peer) evict() {
	limit := p.s.cfg.MaxQueueBytes + p.s.cfg.RetainBytes
	dropped := 0
	for p.bytes > limit && len(p.q)-p.head > 1 {
		p.popFront()
		dropped++
	}
	if dropped == 0 {
		return
	}
	p.c.dropped.Add(uint64(dropped))
	if !p.evicting {
		p.evicting = true
		p.log.Warn("peer unreachable and its queue is full, dropping oldest messages",
			"limit_bytes", limit, "first_seq", p.first)
	}
}

// take moves up to batchBytes of unwritten messages into the retransmit
// window, as far as the window allows, and returns them with the seq of the
// first. more reports that more could be written right away.
func (p *peer) take(dst [][]byte) (batch [][]byte, seq uint64, more bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	seq = p.written + 1
	next := p.next()
	size := 0
	retain := p.s.cfg.RetainBytes
	for s := seq; s < next; s++ {
		m := p.at(s)
		n := msgCost(m)
		if len(dst) > 0 && size+n > batchBytes {
			more = true
			break
		}
		if unacked := p.bytes - p.pending; unacked > 0 && unacked+n > retain {
			break
		}
		dst = append(dst, m)
		size += n
		p.pending -= n
		p.written = s
	}
	if len(dst) == 0 {
		return dst, seq, false
	}
	if p.written > p.highWritten {
		fresh := p.written - max(p.highWritten, seq-1)
		p.c.sent.Add(fresh)
		p.c.retransmitted.Add(uint64(len(dst)) - fresh)
		p.highWritten = p.written
	} else {
		p.c.retransmitted.Add(uint64(len(dst)))
	}
	p.signalSpace()
	return dst, seq, more
}

// ack drops messages the destination has delivered.
func (p *peer) ack(seq uint64) {
	p.mu.Lock()
	seq = min(seq, p.written)
	freed := false
	for p.head < len(p.q) && p.first <= seq {
		p.popFront()
		freed = true
	}
	p.mu.Unlock()
	if freed {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// prepare runs in the handshake once the destination's incarnation is
// known and returns the base: the seq before the oldest message still here.
func (p *peer) prepare(remoteInc uint64) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.remoteInc != 0 && remoteInc != p.remoteInc {
		// Written but unacknowledged messages went to a process that is
		// gone; the new one starts after them.
		dropped := 0
		for p.head < len(p.q) && p.first <= p.written {
			p.popFront()
			dropped++
		}
		p.c.dropped.Add(uint64(dropped))
		p.log.Info("peer restarted", "incarnation", remoteInc, "unacked_dropped", dropped)
	}
	p.remoteInc = remoteInc
	return p.first - 1
}

// onConnected records an established connection whose destination has
// delivered up to last; writing resumes after it.
func (p *peer) onConnected(conn net.Conn, last uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	if next := p.next(); last >= next {
		p.log.Warn("peer acknowledged messages never sent", "last_seq", last, "next_seq", next)
		last = next - 1
	}
	for p.head < len(p.q) && p.first <= last {
		p.popFront()
	}
	p.written = max(last, p.first-1)
	p.pending = 0
	for s := p.written + 1; s < p.next(); s++ {
		p.pending += msgCost(p.at(s))
	}
	p.connected = true
	p.evicting = false
	p.conn = conn
	return true
}

func (p *peer) onDisconnected() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.connected = false
	p.conn = nil
	p.signalSpace()
	if !p.closed && p.lingering {
		p.evict()
	}
}

// undrained is how many messages Drain still waits for: every one queued
// or unacknowledged, unless the peer is lingering or closed.
func (p *peer) undrained() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.lingering {
		return 0
	}
	return len(p.q) - p.head
}

// close stops the stream and drops the queue, returning how many messages
// it held. Blocked and later Sends get err.
func (p *peer) close(err error) int {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return 0
	}
	p.closed = true
	p.closeErr = err
	dropped := len(p.q) - p.head
	p.q, p.head, p.bytes, p.pending = nil, 0, 0, 0
	p.written = p.first - 1
	p.signalSpace()
	conn := p.conn
	p.mu.Unlock()
	p.c.dropped.Add(uint64(dropped))
	p.cancel()
	if conn != nil {
		_ = conn.Close()
	}
	return dropped
}

// run keeps a connection to the peer until the peer is closed, with
// exponential back-off between failed attempts.
func (p *peer) run() {
	delay := minBackoff
	everConnected, failing := false, false
	for p.ctx.Err() == nil {
		sess, err := p.connect()
		if err != nil {
			if p.ctx.Err() != nil {
				return
			}
			if !failing {
				p.log.Warn("peer unreachable, retrying", "addr", p.getAddr(), "error", err)
				failing = true
			} else {
				p.log.Debug("peer still unreachable", "error", err, "retry_in", delay)
			}
			if !sleep(p.ctx, jitter(delay), p.redial) {
				return
			}
			delay = min(2*delay, maxBackoff)
			continue
		}
		if everConnected {
			p.c.reconnects.Add(1)
		}
		everConnected, failing, delay = true, false, minBackoff
		p.log.Info("peer connected", "addr", sess.conn.RemoteAddr().String())
		err = p.serve(sess)
		p.onDisconnected()
		if p.ctx.Err() != nil {
			return
		}
		p.log.Info("peer disconnected", "error", err)
		if !sleep(p.ctx, jitter(minBackoff), p.redial) {
			return
		}
	}
}

func (p *peer) getAddr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr
}

func (p *peer) connect() (*session, error) {
	cfg := &p.s.cfg
	ctx, cancel := context.WithTimeout(p.ctx, cfg.PeerTimeout)
	conn, err := cfg.Dial(ctx, p.getAddr(), p.id)
	cancel()
	if err != nil {
		return nil, err
	}
	if conn == nil {
		return nil, errors.New("stream: Dial returned no connection")
	}
	stop := context.AfterFunc(p.ctx, func() { _ = conn.Close() })
	var res handshakeResult
	if proven := cfg.PeerID(conn); proven != "" && proven != p.id {
		err = fmt.Errorf("%w: dialled %q, connection proven to be %q", errIdentity, p.id, proven)
	} else {
		res, err = clientHandshake(conn, cfg, p.id, p.epoch, p.prepare)
	}
	if !stop() {
		err = errors.Join(err, p.ctx.Err())
	}
	if err != nil {
		_ = conn.Close()
		if p.ctx.Err() == nil {
			p.s.handshakeFailures.Add(1)
			if errors.Is(err, errIdentity) {
				p.s.authFailures.Add(1)
			}
		}
		return nil, err
	}
	if !p.onConnected(conn, res.last) {
		_ = conn.Close()
		return nil, p.closeErr
	}
	return res.sess, nil
}

// serve runs the connection's writer here and its ack reader on another
// goroutine until either fails.
func (p *peer) serve(sess *session) error {
	done := make(chan struct{})
	var readErr error
	go func() {
		defer close(done)
		readErr = p.readAcks(sess.r)
		_ = sess.conn.Close()
	}()
	err := p.writeLoop(sess.w, done)
	_ = sess.conn.Close()
	<-done
	if err == nil {
		err = readErr
	}
	return err
}

func (p *peer) writeLoop(w *recordWriter, stop <-chan struct{}) error {
	heartbeat := p.s.cfg.PeerTimeout / 4
	ticker := time.NewTicker(heartbeat)
	defer ticker.Stop()
	lastWrite := time.Now()
	var batch [][]byte
	for {
		var seq uint64
		var more bool
		batch, seq, more = p.take(batch[:0])
		if len(batch) > 0 {
			w.begin()
			for i, m := range batch {
				w.appendData(seq+uint64(i), m)
			}
			clear(batch)
			if err := w.finish(); err != nil {
				return err
			}
			if more {
				continue
			}
			// The queue is drained (or the window is full): push the batch out.
			if err := w.flush(); err != nil {
				return err
			}
			lastWrite = time.Now()
			continue
		}
		select {
		case <-p.wake:
		case <-stop:
			return nil
		case <-p.ctx.Done():
			return nil
		case <-ticker.C:
			if time.Since(lastWrite) >= heartbeat {
				w.begin()
				w.appendPing()
				if err := w.finish(); err != nil {
					return err
				}
				if err := w.flush(); err != nil {
					return err
				}
				lastWrite = time.Now()
			}
		}
	}
}

func (p *peer) readAcks(r *recordReader) error {
	for {
		body, err := r.next()
		if err != nil {
			return err
		}
		var last uint64
		err = parseFrames(body, func(typ byte, seq uint64, _ []byte) error {
			if typ != frameAck {
				return errMalformed
			}
			last = max(last, seq)
			return nil
		})
		if err != nil {
			return err
		}
		p.ack(last)
	}
}

// counters are a peer's monotonic totals.
type counters struct {
	enqueued, sent, retransmitted, dropped, backpressure, reconnects atomic.Uint64
}

func (c *counters) add(o Counters) {
	c.enqueued.Add(o.Enqueued)
	c.sent.Add(o.Sent)
	c.retransmitted.Add(o.Retransmitted)
	c.dropped.Add(o.Dropped)
	c.backpressure.Add(o.Backpressure)
	c.reconnects.Add(o.Reconnects)
}

func (p *peer) counters() Counters { return p.c.snapshot() }

func (c *counters) snapshot() Counters {
	return Counters{
		Enqueued:      c.enqueued.Load(),
		Sent:          c.sent.Load(),
		Retransmitted: c.retransmitted.Load(),
		Dropped:       c.dropped.Load(),
		Backpressure:  c.backpressure.Load(),
		Reconnects:    c.reconnects.Load(),
	}
}

func (p *peer) stats() PeerStats {
	p.mu.Lock()
	st := PeerStats{
		Addr:         p.addr,
		Connected:    p.connected,
		Lingering:    p.lingering,
		Queued:       int(p.next() - 1 - p.written),
		QueuedBytes:  p.pending,
		Unacked:      int(p.written + 1 - p.first),
		UnackedBytes: p.bytes - p.pending,
	}
	p.mu.Unlock()
	st.Counters = p.counters()
	return st
}

func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// sleep waits d, or less if wake (which may be nil) fires; false means ctx ended.
func sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-wake:
		return true
	case <-ctx.Done():
		return false
	}
}
