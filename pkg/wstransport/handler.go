// Package wstransport is the WebSocket transport under pkg/pusher, in two
// forms with one set of framing rules: EventLoop (the default) serves
// connections from epoll pollers, and Handler from a goroutine per
// connection. gorilla performs the upgrade handshake for both; the client's
// frame headers are parsed and checked by gobwas/ws (frameParser for the
// event loop, frameReader for Handler), and the protocol's pre-built frames
// are written to the socket as they are.
package wstransport

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"

	"github.com/soketi-go/soketi/pkg/pusher"
)

// Handler serves the WebSocket endpoint; it is a pusher.WebSocketHandler.
type Handler struct {
	// handle processes one client message; tests swap it to inject a panic.
	handle func(s *pusher.Server, c *pusher.Conn, msg []byte)
}

// New returns the handler main puts in pusher.Options.WebSocket.
func New() *Handler {
	return &Handler{handle: (*pusher.Server).HandleFrame}
}

var upgrader = websocket.Upgrader{
	ReadBufferSize:  256,          // only used by the handshake
	WriteBufferPool: &sync.Pool{}, // gorilla's own writer is never used; hold no buffer
	CheckOrigin:     func(*http.Request) bool { return true },
}

// ServeWS upgrades r and hands the connection to its own read loop. It
// returns at once so that net/http releases the request and its buffers,
// which would otherwise be held for the life of the connection.
func (h *Handler) ServeWS(s *pusher.Server, w http.ResponseWriter, r *http.Request, appKey string) {
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.Metrics().Rejected("bad_upgrade")
		return
	}
	t := newSocket(conn.NetConn()) // gorilla's Conn is done: it did the handshake
	// net/http recovers a handler's panic but leaves a hijacked socket open.
	defer h.recovered(s, nil, t)
	c := s.Open(r.Context(), appKey, t)
	if c == nil {
		go h.drain(s, t)
		return
	}
	go h.serve(s, c, t)
}

// serve runs a connection's read loop, then cleans up however it ended.
func (h *Handler) serve(s *pusher.Server, c *pusher.Conn, t *socket) {
	linger := h.readLoopSafe(s, c, t)
	h.closedSafe(s, c, t)
	c.WaitFlushed(time.Second)
	if linger {
		discardInput(t)
	}
	_ = t.Close()
}

func (h *Handler) readLoopSafe(s *pusher.Server, c *pusher.Conn, t *socket) (linger bool) {
	defer h.recovered(s, c, t)
	return h.readLoop(s, c, t)
}

func (h *Handler) closedSafe(s *pusher.Server, c *pusher.Conn, t *socket) {
	defer h.recovered(s, c, t)
	s.Closed(c)
}

// recovered, deferred, turns a panic while serving one connection into a
// 1011 close and one log line with the stack: it never ends the process.
func (h *Handler) recovered(s *pusher.Server, c *pusher.Conn, t *socket) {
	p := recover()
	if p == nil {
		return
	}
	s.Metrics().Rejected("panic")
	args := []any{"component", "ws", "panic", fmt.Sprint(p), "remote_addr", t.RemoteAddr()}
	if c != nil {
		args = append(args, "app_id", c.App.ID, "socket_id", c.ID)
	}
	s.Logger().Error("panic serving a connection", append(args, "stack", string(debug.Stack()))...)
	if c == nil {
		_ = t.Close()
		return
	}
	c.Abort(1011, "internal error")
}

// readLoop feeds the client's messages to the protocol until the connection
// ends. It reports whether the client broke the framing rules, in which case
// its remaining input is discarded before the socket closes.
func (h *Handler) readLoop(s *pusher.Server, c *pusher.Conn, t *socket) (linger bool) {
	fr := newFrameReader(t.nc, t.raw, readLimit(c.App))
	defer fr.release()
	control := func(op ws.OpCode, payload []byte) {
		c.Touch()
		if op == ws.OpPing {
			c.Send(pusher.PongFrame(payload))
		}
	}
	for {
		_, msg, err := fr.next(control)
		if err != nil {
			return readEnded(s, c, err)
		}
		h.handle(s, c, msg)
	}
}

func readEnded(s *pusher.Server, c *pusher.Conn, err error) (linger bool) {
	var cc *clientClose
	var ce *closeError
	switch {
	case errors.As(err, &cc):
		code := cc.code
		if code == 1005 { // the client sent no code; answer with a normal close
			code = 1000
		}
		c.Close(code)
	case errors.As(err, &ce):
		s.Metrics().Rejected(ce.reason)
		s.Logger().Debug("closing on a framing error", "component", "ws",
			"app_id", c.App.ID, "socket_id", c.ID, "code", ce.code, "err", ce.text)
		c.Abort(ce.code, ce.text)
		return true
	default:
		if !isExpectedClose(err) {
			s.Logger().Debug("connection read ended", "component", "ws",
				"app_id", c.App.ID, "socket_id", c.ID, "err", err)
		}
	}
	return false
}

// maxDiscard bounds what a failed connection may still send us.
const maxDiscard = 1 << 20

// discardInput reads what the client still sends, until it closes or
// closeReplyWait passes, so that closing the socket does not reset it: a
// reset can destroy the close frame before the client reads it.
func discardInput(t *socket) {
	_ = t.nc.SetReadDeadline(time.Now().Add(closeReplyWait))
	_, _ = io.CopyN(io.Discard, t.nc, maxDiscard)
}

// drain reads until the client answers a refusal's close frame.
func (h *Handler) drain(s *pusher.Server, t *socket) {
	defer h.recovered(s, nil, t)
	fr := newFrameReader(t.nc, t.raw, 4096)
	defer fr.release()
	for {
		if _, _, err := fr.next(func(ws.OpCode, []byte) {}); err != nil {
			break
		}
	}
	_ = t.Close()
}

// readLimit bounds one client message: room for the largest allowed client
// event (escaped, so doubled) plus the envelope.
func readLimit(app *pusher.App) int {
	kb := min(max(app.MaxEventPayloadInKB, 0), 1<<20) // configured, but keep int(...) in range
	return int(kb*1024)*2 + 64*1024
}

func isExpectedClose(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || (errors.As(err, &ne) && ne.Timeout())
}
