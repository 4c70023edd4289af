package pusher

import (
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// The WebSocket transport: gorilla performs the upgrade handshake; then
// frameReader reads client frames and the outbox writes pre-built frames
// straight to the socket, so a message is framed once per publish and a
// connection's queued frames leave in one writev.

var upgrader = websocket.Upgrader{
	ReadBufferSize:  256,          // only used by the handshake and refusals
	WriteBufferPool: &sync.Pool{}, // gorilla's own writer is never used; hold no buffer
	CheckOrigin:     func(*http.Request) bool { return true },
}

type wsTransport struct {
	nc        net.Conn
	raw       syscall.RawConn // nil for TLS: writes go through the flusher
	rawRead   syscall.RawConn // nil for TLS: reads block holding a buffer
	closeOnce sync.Once
}

// newWSTransport takes over the socket of an upgraded connection. gorilla's
// Conn is dropped: it did the handshake, frameReader and the outbox do the rest.
func newWSTransport(ws *websocket.Conn) *wsTransport {
	t := &wsTransport{nc: ws.NetConn()}
	if sc, ok := t.nc.(syscall.Conn); ok {
		t.raw, _ = sc.SyscallConn()
		t.rawRead = t.raw
	}
	return t
}

// TryWrite makes one non-blocking write(2): the callback reports done even
// when the socket is full, so the runtime never parks this goroutine.
func (t *wsTransport) TryWrite(b []byte) (int, error) {
	if t.raw == nil {
		return 0, nil
	}
	var n int
	var werr error
	err := t.raw.Write(func(fd uintptr) bool {
		n, werr = syscall.Write(int(fd), b)
		return true
	})
	if err != nil {
		return 0, err
	}
	if werr == syscall.EAGAIN || werr == syscall.EINTR {
		return 0, nil
	}
	if n < 0 {
		n = 0
	}
	return n, werr
}

func (t *wsTransport) WriteBuffers(b *net.Buffers) error {
	_ = t.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := b.WriteTo(t.nc)
	return err
}

// closeReplyWait is how long a closed connection waits for the client's close frame.
const closeReplyWait = 2 * time.Second

func (t *wsTransport) CloseAfterFlush() {
	// The read loop sees the client's close reply or this deadline, then closes.
	_ = t.nc.SetReadDeadline(time.Now().Add(closeReplyWait))
	time.AfterFunc(closeReplyWait+time.Second, func() { _ = t.Close() })
}

func (t *wsTransport) Close() error {
	var err error
	t.closeOnce.Do(func() { err = t.nc.Close() })
	return err
}

func (t *wsTransport) RemoteAddr() string { return t.nc.RemoteAddr().String() }

// ServeWS upgrades r to a WebSocket and hands it to its own read loop. The
// handler returns at once so that net/http releases the request and its
// buffers, which would otherwise be held for the life of the connection.
func (s *Server) ServeWS(w http.ResponseWriter, r *http.Request, appKey string) {
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.opts.Metrics.Rejected("bad_upgrade")
		return
	}
	t := newWSTransport(ws)
	c := s.Open(r.Context(), appKey, t)
	if c == nil {
		go func() {
			drain(ws)
			_ = t.Close()
		}()
		return
	}
	go s.readLoop(c, t)
}

func (s *Server) readLoop(c *Conn, t *wsTransport) {
	defer func() {
		s.Closed(c)
		c.out.waitFlushed(time.Second)
		_ = t.Close()
	}()
	fr := &frameReader{nc: t.nc, raw: t.rawRead, limit: int(readLimit(c.App))}
	defer fr.release()
	control := func(op byte, payload []byte) {
		c.touch()
		if op == opPing {
			c.Send(buildFrame(opPong, append([]byte(nil), payload...)))
		}
	}
	for {
		msg, err := fr.next(control)
		if err != nil {
			var cc *clientClose
			var ce *closeError
			switch {
			case errors.As(err, &cc):
				code := cc.code
				if code == 1005 {
					code = 1000
				}
				c.out.pushClose(nil, CloseFrame(code, ""), false)
			case errors.As(err, &ce):
				if ce == errFrameTooLarge {
					s.opts.Metrics.Rejected("frame_too_large")
				} else {
					s.opts.Metrics.Rejected("bad_frame")
				}
				c.out.pushClose(nil, CloseFrame(ce.code, ce.text), true)
				c.out.waitFlushed(time.Second)
			default:
				if !isExpectedClose(err) {
					s.log.Debug("connection read ended", "app_id", c.App.ID, "socket_id", c.ID, "err", err)
				}
			}
			return
		}
		s.HandleFrame(c, msg)
	}
}

// readLimit bounds one client frame: room for the largest allowed client
// event (escaped, so doubled) plus the envelope.
func readLimit(app *App) int64 {
	return int64(app.MaxEventPayloadInKB*1024)*2 + 64*1024
}

// drain waits for the client's close reply after a refusal.
func drain(ws *websocket.Conn) {
	ws.SetReadLimit(4096)
	for {
		if _, _, err := ws.NextReader(); err != nil {
			return
		}
	}
}

func isExpectedClose(err error) bool {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return true
	}
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || (errors.As(err, &ne) && ne.Timeout())
}
