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

// The gorilla transport: gorilla upgrades and reads; writes bypass its writer
// and go straight to the socket as pre-built frames, so a message is framed
// once per publish and a connection's queued frames leave in one writev.

var upgrader = websocket.Upgrader{
	ReadBufferSize:  1024,
	WriteBufferPool: &sync.Pool{}, // gorilla's own writer is never used; hold no buffer
	CheckOrigin:     func(*http.Request) bool { return true },
}

type wsTransport struct {
	ws        *websocket.Conn
	nc        net.Conn
	raw       syscall.RawConn // nil for TLS: such writes always go through the flusher
	closeOnce sync.Once
}

func newWSTransport(ws *websocket.Conn) *wsTransport {
	t := &wsTransport{ws: ws, nc: ws.NetConn()}
	if sc, ok := t.nc.(syscall.Conn); ok {
		t.raw, _ = sc.SyscallConn()
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

// ServeWS upgrades r to a WebSocket and runs the connection until it ends.
func (s *Server) ServeWS(w http.ResponseWriter, r *http.Request, appKey string) {
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.opts.Metrics.Rejected("bad_upgrade")
		return
	}
	t := newWSTransport(ws)
	defer t.Close()

	c := s.Open(r.Context(), appKey, t)
	if c == nil {
		drain(ws)
		return
	}
	defer func() {
		s.Closed(c)
		c.out.waitFlushed(time.Second)
	}()

	ws.SetReadLimit(readLimit(c.App))
	ws.SetPingHandler(func(data string) error {
		c.touch()
		c.Send(buildFrame(opPong, []byte(data)))
		return nil
	})
	ws.SetPongHandler(func(string) error { c.touch(); return nil })
	ws.SetCloseHandler(func(code int, _ string) error {
		if code == websocket.CloseNoStatusReceived {
			code = websocket.CloseNormalClosure
		}
		c.out.pushClose(nil, CloseFrame(code, ""), false)
		return nil
	})
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			if !isExpectedClose(err) {
				s.log.Debug("connection read ended", "app_id", c.App.ID, "socket_id", c.ID, "err", err)
			}
			if errors.Is(err, websocket.ErrReadLimit) {
				s.opts.Metrics.Rejected("frame_too_large")
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
