package pusher

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// WebSocketHandler upgrades a request for the WebSocket endpoint and serves
// it on s through Open, HandleFrame and Closed. It lives in pkg/wstransport,
// which imports this package; main puts it in Options.WebSocket.
type WebSocketHandler interface {
	ServeWS(s *Server, w http.ResponseWriter, r *http.Request, appKey string)
}

// ServeWS hands a request for /app/{key} to Options.WebSocket.
func (s *Server) ServeWS(w http.ResponseWriter, r *http.Request, appKey string) {
	if s.opts.WebSocket == nil {
		http.Error(w, "no WebSocket transport configured", http.StatusNotImplemented)
		return
	}
	s.opts.WebSocket.ServeWS(s, w, r, appKey)
}

// Transport is the byte pipe under a connection. The protocol code hands it
// complete frames and never sees the WebSocket framing of client input, so
// another transport can replace pkg/wstransport without touching the protocol.
type Transport interface {
	// WriteBuffers writes the frames in order, in as few system calls as the
	// transport allows. It is called by one goroutine at a time.
	WriteBuffers(bufs *net.Buffers) error
	// CloseAfterFlush is called once the close frame has been written: the
	// transport waits briefly for the peer's close reply, then closes.
	CloseAfterFlush()
	// TryWrite writes b without blocking and returns how much was written;
	// a transport that cannot write without blocking returns 0, nil. The
	// outbox makes at most one TryWrite or WriteBuffers call at a time.
	TryWrite(b []byte) (int, error)
	// Close drops the connection at once.
	Close() error
	RemoteAddr() string
}

// FlushScheduler is implemented by a transport that never blocks a writer
// (an event loop): TryWrite takes every frame, holding what the kernel
// does not take yet, and queued frames are flushed by a few goroutines
// shared by many connections instead of one goroutine per connection, so
// that one fan-out wakes each of them once.
type FlushScheduler interface {
	// Schedule arranges for f's queue to be taken and written soon.
	Schedule(f Flusher)
	// Buffered is how many bytes the transport has taken that are not on
	// the wire yet: they count against the connection's queue bound.
	Buffered() int
}

// Flusher is what a FlushScheduler calls back: a connection's outbox. The
// scheduler takes the queued frames, writes them (or hands them to the
// transport) and reports back; until then the outbox counts them against
// its bound and queues new frames behind them.
type Flusher interface {
	// Take returns the queued frames, or nil when none are queued, which
	// ends the flush (and closes the transport after a close frame). The
	// frames stay the outbox's; the scheduler does not keep them.
	Take() net.Buffers
	// Written reports how the frames from Take went: nil once the transport
	// has them all. An error drops what is queued and closes the transport.
	// It returns true when more frames are queued: Take them next.
	Written(err error) (more bool)
}

// Outbox bounds: a client that falls further behind is disconnected (4100).
const (
	DefaultMaxQueuedBytes  = 1 << 20 // soketi's uWS backpressure limit
	DefaultMaxQueuedFrames = 4096
)

// outbox queues frames for one connection. A frame for an idle connection is
// written at once without blocking, which is the common case; what the kernel
// does not take is queued and written by a short-lived goroutine, so an idle
// connection holds no writer goroutine and a burst leaves in one writev.
type outbox struct {
	mu        sync.Mutex
	queue     [][]byte
	spare     [][]byte
	bytes     int
	flushing  bool
	closing   bool // a close frame is queued; later frames are dropped
	maxBytes  int
	maxFrames int
	transport Transport
	sched     FlushScheduler // nil: a goroutine per flush
	taken     [][]byte       // the frames from Take, until Written
	bufs      net.Buffers    // what flush's WriteBuffers consumes of taken
	inflight  int            // taken's bytes: they count against maxBytes until written
}

// push queues f. It returns false when the bound is hit; the caller must then
// disconnect the client. Frames after a close frame are dropped silently.
// direct allows writing f at once when nothing is in flight; senders under
// load pass false so that frames coalesce into one writev per connection.
func (o *outbox) push(f []byte, direct bool) bool {
	o.mu.Lock()
	if o.closing {
		o.mu.Unlock()
		return true
	}
	queued := o.bytes + o.inflight
	if o.sched != nil {
		queued += o.sched.Buffered()
	}
	if queued+len(f) > o.maxBytes || len(o.queue) >= o.maxFrames {
		o.mu.Unlock()
		return false
	}
	if direct && !o.flushing && len(o.queue) == 0 {
		// Nothing in flight: try the socket directly. flushing keeps other
		// senders queueing behind this frame meanwhile.
		o.flushing = true
		o.mu.Unlock()
		n, err := o.transport.TryWrite(f)
		o.mu.Lock()
		if err == nil && n == len(f) && len(o.queue) == 0 {
			o.flushing = false
			o.mu.Unlock()
			return true
		}
		if err != nil {
			o.failLocked(err)
			return true
		}
		if n < len(f) {
			// The unwritten tail goes ahead of anything queued meanwhile.
			o.queue = append(o.queue, nil)
			copy(o.queue[1:], o.queue)
			o.queue[0] = f[n:]
			o.bytes += len(f) - n
		}
		o.mu.Unlock()
		o.startFlush()
		return true
	}
	o.queue = append(o.queue, f)
	o.bytes += len(f)
	start := !o.flushing
	o.flushing = true
	o.mu.Unlock()
	if start {
		o.startFlush()
	}
	return true
}

// pushClose queues the final frames: f (may be nil) and a close frame. The
// bound is waived so that the client always learns why it was closed.
func (o *outbox) pushClose(f []byte, closeFrame []byte, dropQueued bool) {
	o.mu.Lock()
	if o.closing {
		o.mu.Unlock()
		return
	}
	o.closing = true
	if dropQueued {
		clear(o.queue)
		o.queue = o.queue[:0]
		o.bytes = 0
	}
	if f != nil {
		o.queue = append(o.queue, f)
	}
	o.queue = append(o.queue, closeFrame)
	start := !o.flushing
	o.flushing = true
	o.mu.Unlock()
	if start {
		o.startFlush()
	}
}

// startFlush has the queue written by the transport's scheduler, or by a
// goroutine of its own that lives until the queue is empty.
func (o *outbox) startFlush() {
	if o.sched != nil {
		o.sched.Schedule(o)
		return
	}
	go o.flush()
}

// flush writes the queue on a goroutine of its own.
func (o *outbox) flush() {
	for batch := o.Take(); batch != nil; batch = o.Take() {
		o.bufs = batch // a field: a local would escape through the interface
		err := o.transport.WriteBuffers(&o.bufs)
		o.bufs = nil
		if !o.Written(err) {
			return // written and nothing queued, or failed
		}
	}
}

// Take hands the queue to the writer: it is in flight until Written.
func (o *outbox) Take() net.Buffers {
	o.mu.Lock()
	if len(o.queue) == 0 {
		o.endFlushLocked()
		return nil
	}
	o.taken = o.queue
	o.queue = o.spare[:0]
	o.inflight, o.bytes = o.bytes, 0
	o.mu.Unlock()
	return net.Buffers(o.taken)
}

// Written ends the write of what Take returned. With nothing queued
// meanwhile it also ends the flush, sparing the scheduler one more Take.
func (o *outbox) Written(err error) bool {
	o.mu.Lock()
	clear(o.taken)
	o.spare, o.taken = o.taken[:0], nil
	o.inflight = 0
	if err != nil {
		o.failLocked(err)
		return false
	}
	if len(o.queue) > 0 {
		o.mu.Unlock()
		return true
	}
	o.endFlushLocked()
	return false
}

// endFlushLocked: the queue is empty and written. Called with o.mu held;
// releases it, then closes the transport after a close frame.
func (o *outbox) endFlushLocked() {
	o.flushing = false
	closing := o.closing
	o.mu.Unlock()
	if closing {
		o.transport.CloseAfterFlush()
	}
}

// waitFlushed waits up to d for queued frames (such as a close reply) to leave.
func (o *outbox) waitFlushed(d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		o.mu.Lock()
		busy := o.flushing
		o.mu.Unlock()
		if !busy {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// failLocked drops what is queued after a write error and closes the
// transport; it is called with o.mu held and releases it.
func (o *outbox) failLocked(error) {
	clear(o.queue)
	o.queue = o.queue[:0]
	o.closing = true
	o.flushing = false
	o.mu.Unlock()
	_ = o.transport.Close()
}

// What a transport needs of a Conn beyond Send: closing on the transport's
// own grounds (the client's close frame, broken framing, a panic).

// Close queues a close frame with code after the frames already queued: the
// reply to the client's own close frame.
func (c *Conn) Close(code int) {
	c.out.pushClose(nil, CloseFrame(code, ""), false)
}

// Abort drops the queued frames and closes with code and reason: for a client
// that broke the framing rules, or a failure while serving it.
func (c *Conn) Abort(code int, reason string) {
	c.out.pushClose(nil, CloseFrame(code, reason), true)
}

// WaitFlushed waits up to d for the queued frames, such as a close, to leave.
func (c *Conn) WaitFlushed(d time.Duration) { c.out.waitFlushed(d) }
