package wstransport

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/logging"

	"github.com/soketi-go/soketi/pkg/pusher"
)

// EventLoop serves WebSocket connections from a few epoll loops
// (lesismal/nbio) instead of a goroutine per connection: an idle connection
// has no goroutine and no buffer, only its state. It is a
// pusher.WebSocketHandler, like Handler.
//
//   - The handshake is net/http's and gorilla's, as for Handler; the
//     upgraded socket then moves to a poller.
//   - A poller reads and parses frames (frameParser) and answers pings.
//     Messages go to the protocol on a goroutine that lives only while the
//     connection has messages waiting, because handling one may wait for
//     the cluster (a presence join is a Raft commit) and must not hold up
//     the poller's other connections.
//   - Writes never block: what the kernel does not take, nbio holds and
//     sends when the socket is writable; it counts against the outbox's
//     bound. Frames queued to many connections by one fan-out are flushed
//     by one flusher goroutine per poller, woken once for all of them.
//   - TLS connections (SOKETI_SSL_*) are served by Handler.
type EventLoop struct {
	engine   *nbio.Engine
	flushers []*flusher
	fallback *Handler // TLS
	stop     chan struct{}
	stopOnce sync.Once
	log      *slog.Logger
	// handle processes one client message; tests swap it to inject a panic.
	handle func(s *pusher.Server, c *pusher.Conn, msg []byte)
}

// NewEventLoop starts the pollers and flushers: one of each per CPU. With
// useRing each flusher submits its sends through an io_uring where the
// kernel permits one; without, it writes each socket with its own system
// call (SOKETI_WS_IO_URING=false).
func NewEventLoop(log *slog.Logger, useRing bool) (*EventLoop, error) {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "ws")
	logging.SetLogger(nbioLogger{log})
	n := runtime.GOMAXPROCS(0)
	e := &EventLoop{
		engine: nbio.NewEngine(nbio.Config{
			Name:    "soketi-ws",
			NPoller: n,
			// One read buffer per poller, shared by its connections.
			ReadBufferSize: 32 << 10,
		}),
		fallback: New(),
		stop:     make(chan struct{}),
		log:      log,
		handle:   (*pusher.Server).HandleFrame,
	}
	e.engine.OnData(func(nc *nbio.Conn, data []byte) {
		switch s := nc.Session().(type) {
		case *elConn:
			takeOver(s)
			s.onData(data)
		case chan<- int:
			s <- nc.Hash() % n
		default:
			_ = nc.Close()
		}
	})
	e.engine.OnWrittenSize(func(nc *nbio.Conn, _ []byte, n int) {
		if s, ok := nc.Session().(*elConn); ok {
			takeOver(s)
			s.onWritten(n)
		}
	})
	e.engine.OnClose(func(nc *nbio.Conn, _ error) {
		if s, ok := nc.Session().(*elConn); ok {
			takeOver(s)
			s.onClose()
		}
	})
	if err := e.engine.Start(); err != nil {
		return nil, fmt.Errorf("wstransport: start the event loop: %w", err)
	}
	if err := e.waitPollers(n); err != nil {
		e.engine.Stop()
		return nil, err
	}
	for range n {
		f := newFlusher(log, useRing)
		e.flushers = append(e.flushers, f)
		go f.run(e.stop)
	}
	return e, nil
}

// waitPollers returns once every poller's loop runs. nbio's poller clears
// its stop flag as its loop starts, so a Stop before that is lost and the
// poller spins on its wake-up descriptor forever (seen: a node that could
// not bind its port never exited). A byte sent through a socket pair that
// lands on each poller proves its loop runs.
func (e *EventLoop) waitPollers(n int) error {
	seen := make(chan int, 16)
	var ends []*os.File
	defer func() {
		for _, f := range ends {
			_ = f.Close()
		}
	}()
	running := map[int]bool{}
	for try := 0; len(running) < n; try++ {
		if try == 4*n {
			return fmt.Errorf("wstransport: %d of %d pollers started", len(running), n)
		}
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("wstransport: probe the pollers: %w", err)
		}
		writer, reader := os.NewFile(uintptr(fds[0]), "probe"), os.NewFile(uintptr(fds[1]), "probe")
		ends = append(ends, writer)
		rc, err := net.FileConn(reader) // a dup: reader is closed below
		_ = reader.Close()
		if err != nil {
			return fmt.Errorf("wstransport: probe the pollers: %w", err)
		}
		nc, err := nbio.NBConn(rc)
		if err != nil {
			return fmt.Errorf("wstransport: probe the pollers: %w", err)
		}
		nc.SetSession((chan<- int)(seen))
		if _, err := e.engine.AddConn(nc); err != nil {
			return fmt.Errorf("wstransport: probe the pollers: %w", err)
		}
		defer nc.Close()
		if _, err := writer.Write([]byte{0}); err != nil {
			return fmt.Errorf("wstransport: probe the pollers: %w", err)
		}
		select {
		case i := <-seen:
			if running[i] {
				// Descriptor numbers repeat their pattern; one more open
				// file shifts the next probe to another poller.
				if f, err := os.Open(os.DevNull); err == nil {
					ends = append(ends, f)
				}
			}
			running[i] = true
		case <-time.After(5 * time.Second):
			return fmt.Errorf("wstransport: poller %d does not run", nc.Hash()%n)
		}
	}
	return nil
}

// Stop closes every connection it holds and stops the pollers.
func (e *EventLoop) Stop() {
	e.stopOnce.Do(func() {
		e.engine.Stop()
		close(e.stop)
	})
}

// ServeWS upgrades r and moves the connection to a poller.
func (e *EventLoop) ServeWS(s *pusher.Server, w http.ResponseWriter, r *http.Request, appKey string) {
	if r.TLS != nil {
		e.fallback.ServeWS(s, w, r, appKey)
		return
	}
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.Metrics().Rejected("bad_upgrade")
		return
	}
	netConn := conn.NetConn()
	if _, isTLS := netConn.(*tls.Conn); isTLS { // not reached: r.TLS is set for these
		_ = netConn.Close()
		return
	}
	nc, err := nbio.NBConn(netConn) // a dup of the descriptor; netConn is closed
	if err != nil {
		e.log.Warn("moving a connection to the event loop", "err", err)
		_ = netConn.Close()
		return
	}
	ec := &elConn{loop: e, nc: nc, srv: s, parser: newFrameParser(4096)}
	ec.fl = e.flushers[int(nc.Hash())%len(e.flushers)]
	handOff(ec)
	nc.SetSession(ec)
	if _, err := e.engine.AddConn(nc); err != nil {
		e.log.Warn("adding a connection to the event loop", "err", err)
		_ = nc.Close()
		return
	}
	ec.open(r, appKey)
}

// elConn is one connection on the event loop: its pusher.Transport (and
// FlushScheduler), its frame parser and its inbox of messages waiting for
// the protocol.
type elConn struct {
	loop *EventLoop
	nc   *nbio.Conn
	srv  *pusher.Server
	fl   *flusher

	// Bytes handed to nbio and bytes it wrote to the socket: the difference
	// is what nbio holds for a client that is not reading.
	accepted, written atomic.Int64
	closing           atomic.Bool // our close frame is queued
	replied           atomic.Bool // the client's close frame came, or it broke the rules
	closeTimer        *time.Timer

	// Read side: the poller, and open before it. Under pmu.
	pmu       sync.Mutex
	opened    bool
	early     []byte // input that came before Open returned
	parser    frameParser
	c         *pusher.Conn // nil for a refused connection; also under mu
	dead      bool         // the connection is closing: input is only searched for the client's close frame
	broken    bool         // the client broke the framing rules: input is dropped unread
	discarded int

	// Inbox and lifecycle. Under mu.
	mu         sync.Mutex
	inbox      [][]byte
	inboxBytes int
	working    bool // a goroutine is handling the inbox
	closed     bool // nbio reported the socket closed
	readDone   bool // the client closed or broke the rules: no more messages
	ended      bool // Server.Closed was called
}

// maxEarly bounds the input accepted before Open started: a client that
// has not seen connection_established has little to say.
const maxEarly = 64 << 10

// maxInbox bounds the messages waiting for the protocol on one connection,
// as the kernel's receive buffer does for Handler's blocking reads. A
// client that sends more while its messages wait (for the cluster) is
// closed with 4100.
const maxInbox = 1 << 20

// open runs the protocol's Open and then what arrived before it. The poller
// waits on pmu meanwhile (Open looks up the app and registers the socket:
// in memory), so a client's first message, sent as soon as it reads
// connection_established, is parsed with its app's limit and never needs
// the early buffer.
func (ec *elConn) open(r *http.Request, appKey string) {
	defer ec.recovered()
	ec.pmu.Lock()
	defer ec.pmu.Unlock()
	c := ec.srv.Open(r.Context(), appKey, ec)
	ec.opened = true
	if c == nil {
		ec.dead = true // refused: only the close reply is awaited
	} else {
		ec.parser.limit = readLimit(c.App)
	}
	ec.mu.Lock()
	ec.c = c
	gone := ec.closed && c != nil && !ec.ended
	if gone {
		ec.ended = true
	}
	ec.mu.Unlock()
	if gone {
		ec.srv.Closed(c)
		return
	}
	if early := ec.early; early != nil {
		ec.early = nil
		ec.parse(early)
	}
}

// onData is called by the poller with what the socket had.
func (ec *elConn) onData(data []byte) {
	defer ec.recovered()
	ec.pmu.Lock()
	defer ec.pmu.Unlock()
	if !ec.opened {
		if len(ec.early)+len(data) > maxEarly {
			_ = ec.nc.Close()
			return
		}
		ec.early = append(ec.early, data...)
		return
	}
	ec.parse(data)
}

// parse feeds the parser; called under pmu.
func (ec *elConn) parse(data []byte) {
	if ec.dead || ec.closing.Load() {
		ec.discard(data)
		return
	}
	err := ec.parser.feed(data, ec)
	if err == nil {
		return
	}
	// Only an opened connection parses (a refused one is dead from the
	// start), so ec.c is set. Handler's rules for how a read ends.
	ec.dead = true
	ec.parser.release()
	var cc *clientClose
	ec.replied.Store(errors.As(err, &cc))
	ec.broken = readEnded(ec.srv, ec.c, err)
	ec.endRead()
}

// discard drops the input of a closing connection. The client's close
// frame after ours, or too much input, ends it. After a framing error the
// input is not parsed, only read until the client closes or closeReplyWait
// passes, so that closing does not reset the socket: a reset can destroy
// the close frame before the client reads it.
func (ec *elConn) discard(data []byte) {
	ec.discarded += len(data)
	if ec.discarded > maxDiscard {
		_ = ec.nc.Close()
		return
	}
	if !ec.broken && !ec.replied.Load() && ec.parser.feed(data, discardSink{}) != nil {
		ec.replied.Store(true)
		ec.closeWhenDrained()
	}
}

type discardSink struct{}

func (discardSink) control(ws.OpCode, []byte) {}
func (discardSink) message(ws.OpCode, []byte) {}

// control answers pings in the poller; called under pmu.
func (ec *elConn) control(op ws.OpCode, payload []byte) {
	if ec.c == nil {
		return
	}
	ec.c.Touch()
	if op == ws.OpPing {
		ec.c.Send(pusher.PongFrame(payload))
	}
}

// message queues a client message for the protocol; called under pmu.
func (ec *elConn) message(_ ws.OpCode, msg []byte) {
	if ec.c == nil {
		return
	}
	m := make([]byte, len(msg)) // msg is the poller's buffer
	copy(m, msg)
	ec.mu.Lock()
	if ec.inboxBytes+len(m) > maxInbox {
		ec.mu.Unlock()
		ec.srv.Metrics().Rejected("inbox_full")
		ec.dead = true
		ec.c.CloseWith(pusher.ErrOverCapacity)
		ec.endRead()
		return
	}
	ec.inbox = append(ec.inbox, m)
	ec.inboxBytes += len(m)
	start := !ec.working
	ec.working = true
	ec.mu.Unlock()
	if start {
		go ec.work()
	}
}

// endRead: the client will send no more messages (it closed, or broke the
// rules). The server forgets the connection once those already queued are
// handled, as Handler's read loop ends, even while the socket lingers for
// the client's close reply.
func (ec *elConn) endRead() {
	ec.mu.Lock()
	ec.readDone = true
	end := ec.c != nil && !ec.working && !ec.ended
	if end {
		ec.ended = true
	}
	ec.mu.Unlock()
	if end {
		go ec.closedSafe() // not on the poller: a presence leave waits for the cluster
	}
}

// work hands the inbox to the protocol in order, then ends; if the
// connection ended meanwhile it also tells the server. Messages still
// queued when the socket closes are dropped: nobody is there to answer.
func (ec *elConn) work() {
	for {
		ec.mu.Lock()
		if len(ec.inbox) == 0 || ec.closed {
			ec.inbox, ec.inboxBytes = nil, 0 // an idle connection holds no inbox
			ec.working = false
			end := (ec.closed || ec.readDone) && !ec.ended
			if end {
				ec.ended = true
			}
			ec.mu.Unlock()
			if end {
				ec.closedSafe()
			}
			return
		}
		m := ec.inbox[0]
		ec.inbox[0] = nil
		ec.inbox = ec.inbox[1:]
		ec.inboxBytes -= len(m)
		ec.mu.Unlock()
		ec.handleSafe(m)
	}
}

func (ec *elConn) handleSafe(m []byte) {
	defer ec.recovered()
	ec.loop.handle(ec.srv, ec.c, m)
}

func (ec *elConn) closedSafe() {
	defer ec.recovered()
	ec.srv.Closed(ec.c)
}

// onClose is nbio's report that the socket is closed, by either side.
func (ec *elConn) onClose() {
	ec.pmu.Lock()
	ec.parser.release()
	ec.early = nil
	ec.pmu.Unlock()
	ec.mu.Lock()
	ec.closed = true
	if ec.closeTimer != nil {
		ec.closeTimer.Stop()
	}
	// Before open set c, open sees closed and calls Closed itself.
	end := ec.c != nil && !ec.working && !ec.ended
	if end {
		ec.ended = true
	}
	ec.mu.Unlock()
	if end {
		// nbio runs every connection's close callback on one goroutine,
		// and a presence leave waits for the cluster.
		go ec.closedSafe()
	}
}

// recovered, deferred, turns a panic while serving the connection into a
// 1011 close and one log line with the stack, as Handler.recovered does.
func (ec *elConn) recovered() {
	p := recover()
	if p == nil {
		return
	}
	ec.srv.Metrics().Rejected("panic")
	args := []any{"component", "ws", "panic", fmt.Sprint(p), "remote_addr", ec.RemoteAddr()}
	c := ec.c
	if c != nil {
		args = append(args, "app_id", c.App.ID, "socket_id", c.ID)
	}
	ec.srv.Logger().Error("panic serving a connection", append(args, "stack", string(debug.Stack()))...)
	if c == nil {
		_ = ec.nc.Close()
		return
	}
	c.Abort(1011, "internal error")
}

// pusher.Transport and pusher.FlushScheduler.

// TryWrite hands b to nbio, which writes what the socket takes now and
// keeps the rest for when it is writable: it takes all of b.
func (ec *elConn) TryWrite(b []byte) (int, error) {
	ec.accepted.Add(int64(len(b))) // before Write, which reports what it wrote
	if _, err := ec.nc.Write(b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// WriteBuffers writes the frames as one buffer: one system call, and nbio's
// count of written bytes stays exact (its writev does not report them).
func (ec *elConn) WriteBuffers(b *net.Buffers) error {
	switch len(*b) {
	case 0:
		return nil
	case 1:
		_, err := ec.TryWrite((*b)[0])
		*b = (*b)[:0]
		return err
	}
	size := 0
	for _, f := range *b {
		size += len(f)
	}
	bp := joinPool.Get().(*[]byte)
	buf := (*bp)[:0]
	for _, f := range *b {
		buf = append(buf, f...)
	}
	*b = (*b)[:0]
	_, err := ec.TryWrite(buf) // nbio copies what it keeps
	if cap(buf) <= maxPooledMsg {
		*bp = buf[:0]
		joinPool.Put(bp)
	}
	return err
}

var joinPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// Buffered is what nbio holds that the socket has not taken yet.
func (ec *elConn) Buffered() int { return int(ec.accepted.Load() - ec.written.Load()) }

// Schedule has f flushed by this connection's flusher.
func (ec *elConn) Schedule(f pusher.Flusher) { ec.fl.schedule(ec, f) }

// onWritten is called by nbio with the connection's lock held, so the
// close it may lead to runs after: Close takes that lock.
func (ec *elConn) onWritten(n int) {
	ec.written.Add(int64(n))
	if ec.closing.Load() && ec.replied.Load() && ec.Buffered() == 0 {
		go ec.nc.Close()
	}
}

// CloseAfterFlush: the close frame is queued. The socket closes once it is
// written and the client has answered (or broke the rules), or after
// closeReplyWait.
func (ec *elConn) CloseAfterFlush() {
	ec.closing.Store(true) // what follows our close frame is only searched for the reply
	ec.closeWhenDrained()
	ec.mu.Lock()
	if ec.closeTimer == nil && !ec.closed {
		ec.closeTimer = time.AfterFunc(closeReplyWait, func() { _ = ec.nc.Close() })
	}
	ec.mu.Unlock()
}

// closeWhenDrained closes now if nothing is left to write and the client
// has answered; otherwise onWritten or the timer will.
func (ec *elConn) closeWhenDrained() {
	if ec.closing.Load() && ec.replied.Load() && ec.Buffered() == 0 {
		_ = ec.nc.Close()
	}
}

func (ec *elConn) Close() error { return ec.nc.Close() }

// RemoteAddr is formatted when asked (rarely), not held per connection.
func (ec *elConn) RemoteAddr() string { return ec.nc.RemoteAddr().String() }

// nbioLogger sends nbio's own messages to slog, at debug level but for
// errors: its info lines (start, stop) say nothing an operator needs.
type nbioLogger struct{ log *slog.Logger }

func (l nbioLogger) Debug(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l nbioLogger) Info(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l nbioLogger) Warn(format string, v ...any)  { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l nbioLogger) Error(format string, v ...any) { l.log.Error(fmt.Sprintf(format, v...)) }
