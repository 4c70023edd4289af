package stream

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

var (
	// errStale refuses an origin older than the one already seen: a
	// previous process or a removed stream of the same node.
	errStale = errors.New("stream: stale origin incarnation")
	// errBusy refuses a reconnect while the previous connection's deliver
	// is still running.
	errBusy = errors.New("stream: previous connection still delivering")
)

// origin is what a destination remembers about one origin's stream: which
// life of it (incarnation, epoch) and the last seq delivered. It outlives
// connections so a reconnect resumes without loss or duplicates.
type origin struct {
	id string

	mu       sync.Mutex // serialises attach; guards the fields below
	inc      uint64
	epoch    uint64
	known    bool
	active   *inboundConn
	lastSeen time.Time

	// Read by Stats without o.mu, which attach may hold for a while.
	connected   atomic.Bool
	incarnation atomic.Uint64
	last        atomic.Uint64
	delivered   atomic.Uint64
	duplicates  atomic.Uint64
	lost        atomic.Uint64
}

type inboundConn struct {
	conn net.Conn
	done chan struct{} // closed once its reader will deliver nothing more
}

// attach makes in the origin's only connection, closing the previous one
// and waiting (up to wait) for its reader, so two readers never deliver
// the same origin. It returns the seq to resume after.
func (o *origin) attach(s *Streams, in *inboundConn, h hello, base uint64, wait time.Duration) (uint64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if prev := o.active; prev != nil {
		_ = prev.conn.Close()
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-prev.done:
		case <-t.C:
			return 0, errBusy
		}
	}
	switch {
	case o.known && (h.inc < o.inc || (h.inc == o.inc && h.epoch < o.epoch)):
		return 0, fmt.Errorf("%w: %d/%d after %d/%d", errStale, h.inc, h.epoch, o.inc, o.epoch)
	case o.known && h.inc == o.inc && h.epoch == o.epoch:
		// Same stream: resume.
	default:
		if o.known {
			s.log.Info("origin stream reset", "peer", o.id, "incarnation", h.inc,
				"previous_incarnation", o.inc, "previous_last_seq", o.last.Load())
		}
		o.inc, o.epoch, o.known = h.inc, h.epoch, true
		o.last.Store(base)
		o.incarnation.Store(h.inc)
	}
	o.active = in
	o.connected.Store(true)
	o.lastSeen = time.Now()
	return o.last.Load(), nil
}

func (o *origin) detach(in *inboundConn) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.active == in {
		o.active = nil
		o.connected.Store(false)
	}
	o.lastSeen = time.Now()
}

// origin returns the state for id, forgetting the least recently seen
// disconnected origin when there are too many, or nil when every one of
// them is connected.
func (s *Streams) origin(id string) *origin {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o, ok := s.origins[id]; ok {
		return o
	}
	if len(s.origins) >= maxOrigins {
		var victim *origin
		var victimSeen time.Time
		for _, o := range s.origins {
			if o.connected.Load() || !o.mu.TryLock() {
				continue
			}
			seen := o.lastSeen
			o.mu.Unlock()
			if victim == nil || seen.Before(victimSeen) {
				victim, victimSeen = o, seen
			}
		}
		if victim == nil {
			return nil
		}
		delete(s.origins, victim.id)
	}
	o := &origin{id: id}
	s.origins[id] = o
	return o
}

func (s *Streams) acceptLoop() {
	defer s.wg.Done()
	delay, failing := minBackoff, false
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			if errors.Is(err, net.ErrClosed) {
				s.log.Warn("stream listener closed, no more inbound streams")
				return
			}
			// Any other error is retried until Close: logged once, then at
			// Debug until an Accept succeeds.
			if !failing {
				s.log.Warn("accept failed, retrying", "error", err)
				failing = true
			} else {
				s.log.Debug("accept still failing", "error", err, "retry_in", delay)
			}
			if !sleep(s.ctx, delay, nil) {
				return
			}
			delay = min(2*delay, maxBackoff)
			continue
		}
		delay, failing = minBackoff, false
		select {
		case s.handshakes <- struct{}{}:
		default:
			s.handshakeFailures.Add(1)
			s.logRefusal("inbound connection refused: too many handshakes in progress",
				"remote_addr", conn.RemoteAddr().String(), "limit", maxHandshakes)
			_ = conn.Close()
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = conn.Close()
			return
		}
		s.inbound[conn] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serveInbound(conn)
			s.mu.Lock()
			delete(s.inbound, conn)
			s.mu.Unlock()
		}()
	}
}

func (s *Streams) serveInbound(conn net.Conn) {
	defer conn.Close()
	remote := conn.RemoteAddr().String()
	h, base, sess, err := s.inboundHandshake(conn)
	if err != nil {
		if s.ctx.Err() != nil {
			return
		}
		s.handshakeFailures.Add(1)
		if errors.Is(err, errIdentity) {
			s.authFailures.Add(1)
		}
		s.logRefusal("inbound handshake failed", "remote_addr", remote, "peer", h.origin, "error", err)
		return
	}
	o := s.origin(h.origin)
	if o == nil {
		s.handshakeFailures.Add(1)
		s.logRefusal("inbound stream refused: too many connected origins",
			"peer", h.origin, "remote_addr", remote, "limit", maxOrigins)
		return
	}
	in := &inboundConn{conn: conn, done: make(chan struct{})}
	last, err := o.attach(s, in, h, base, s.cfg.PeerTimeout)
	if err != nil {
		s.handshakeFailures.Add(1)
		s.log.Warn("inbound stream refused", "peer", h.origin, "remote_addr", remote, "error", err)
		return
	}
	defer o.detach(in)
	defer close(in.done)

	sess.w.begin()
	sess.w.appendSeq(frameAccept, last)
	if err := sess.w.finish(); err != nil {
		return
	}
	if err := sess.w.flush(); err != nil {
		return
	}
	s.log.Debug("inbound stream attached", "peer", h.origin, "remote_addr", remote, "resume_after", last)

	notify := make(chan struct{}, 1)
	stop := make(chan struct{})
	ackDone := make(chan struct{})
	go func() {
		defer close(ackDone)
		s.ackLoop(sess, o, last, notify, stop)
	}()
	err = s.readData(sess.r, o, notify)
	_ = conn.Close()
	close(stop)
	<-ackDone
	switch {
	case s.ctx.Err() != nil:
	case errors.Is(err, errMalformed):
		s.log.Warn("inbound stream failed", "peer", h.origin, "remote_addr", remote, "error", err)
	default:
		s.log.Debug("inbound stream closed", "peer", h.origin, "error", err)
	}
}

// inboundHandshake runs the destination's handshake while holding one of
// the handshake tokens that acceptLoop took.
func (s *Streams) inboundHandshake(conn net.Conn) (hello, uint64, *session, error) {
	defer func() { <-s.handshakes }()
	return serverHandshake(conn, &s.cfg)
}

// readData delivers the origin's messages in order, dropping duplicates
// and counting gaps, until the connection fails.
func (s *Streams) readData(r *recordReader, o *origin, notify chan<- struct{}) error {
	for {
		body, err := r.next()
		if err != nil {
			return err
		}
		last := o.last.Load()
		var delivered, dups uint64
		err = parseFrames(body, func(typ byte, seq uint64, msg []byte) error {
			switch typ {
			case framePing:
				return nil
			case frameData:
			default:
				return fmt.Errorf("%w: frame type %d from origin", errMalformed, typ)
			}
			if seq <= last {
				dups++
				return nil
			}
			m, err := decodeMessage(msg)
			if err != nil {
				return err
			}
			if gap := seq - last - 1; gap > 0 {
				o.lost.Add(gap)
				s.log.Warn("messages lost from peer", "peer", o.id, "count", gap, "first_missing_seq", last+1)
			}
			s.deliver(o.id, m)
			last = seq
			delivered++
			return nil
		})
		o.last.Store(last)
		o.delivered.Add(delivered)
		o.duplicates.Add(dups)
		if delivered > 0 {
			select {
			case notify <- struct{}{}:
			default:
			}
		}
		if err != nil {
			return err
		}
	}
}

// ackLoop acknowledges deliveries cumulatively, after ackEvery messages or
// ackDelay, and sends a heartbeat ack when idle.
func (s *Streams) ackLoop(sess *session, o *origin, acked uint64, notify <-chan struct{}, stop <-chan struct{}) {
	heartbeat := s.cfg.PeerTimeout / 4
	ticker := time.NewTicker(heartbeat)
	defer ticker.Stop()
	delay := time.NewTimer(ackDelay)
	delay.Stop()
	armed := false
	lastSent := time.Now()
	send := func() bool {
		l := o.last.Load()
		sess.w.begin()
		sess.w.appendSeq(frameAck, l)
		if sess.w.finish() != nil || sess.w.flush() != nil {
			_ = sess.conn.Close()
			return false
		}
		acked, lastSent = l, time.Now()
		return true
	}
	for {
		select {
		case <-stop:
			return
		case <-notify:
			if o.last.Load() >= acked+ackEvery {
				if !send() {
					return
				}
			} else if !armed {
				delay.Reset(ackDelay)
				armed = true
			}
		case <-delay.C:
			armed = false
			if o.last.Load() != acked && !send() {
				return
			}
		case <-ticker.C:
			if time.Since(lastSent) >= heartbeat && !send() {
				return
			}
		}
	}
}
