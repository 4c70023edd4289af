package pusher

import (
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// gorillaWS is the WebSocket handler of this package's tests. The real one,
// pkg/wstransport, imports pusher, so these tests cannot use it; this one
// lets gorilla read and writes the outbox's frames to the socket as they are.
// Framing itself is tested in pkg/wstransport.
type gorillaWS struct{}

var testUpgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func (gorillaWS) ServeWS(s *Server, w http.ResponseWriter, r *http.Request, appKey string) {
	ws, err := testUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	t := &gorillaTransport{nc: ws.NetConn()}
	c := s.Open(r.Context(), appKey, t)
	go func() {
		defer func() {
			if c != nil {
				s.Closed(c)
				c.WaitFlushed(time.Second)
			}
			_ = t.Close()
		}()
		for {
			_, msg, err := ws.ReadMessage() // gorilla answers pings and close frames itself
			if err != nil {
				return
			}
			if c != nil {
				s.HandleFrame(c, msg)
			}
		}
	}()
}

type gorillaTransport struct {
	nc   net.Conn
	once sync.Once
}

func (t *gorillaTransport) WriteBuffers(b *net.Buffers) error {
	_ = t.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := b.WriteTo(t.nc)
	return err
}

func (t *gorillaTransport) TryWrite([]byte) (int, error) { return 0, nil }

func (t *gorillaTransport) CloseAfterFlush() {
	_ = t.nc.SetReadDeadline(time.Now().Add(2 * time.Second))
}

func (t *gorillaTransport) Close() error {
	t.once.Do(func() { _ = t.nc.Close() })
	return nil
}

func (t *gorillaTransport) RemoteAddr() string { return t.nc.RemoteAddr().String() }

// stalledTransport takes no byte without blocking, and its writer blocks
// until released: a client that stopped reading.
type stalledTransport struct {
	writing chan struct{} // a WriteBuffers call started
	release chan struct{}
}

func (t *stalledTransport) WriteBuffers(*net.Buffers) error {
	t.writing <- struct{}{}
	<-t.release
	return net.ErrClosed
}
func (t *stalledTransport) TryWrite([]byte) (int, error) { return 0, nil }
func (t *stalledTransport) CloseAfterFlush()             {}
func (t *stalledTransport) Close() error                 { return nil }
func (t *stalledTransport) RemoteAddr() string           { return "stalled" }
