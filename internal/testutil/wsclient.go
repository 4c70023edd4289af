package testutil

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// expectTimeout bounds every wait for a frame.
const expectTimeout = 10 * time.Second

// Client is a raw Pusher WebSocket client for tests: it decodes every frame
// into a map and remembers the close code.
type Client struct {
	T        testing.TB
	WS       *websocket.Conn
	SocketID string // set by Established

	frames chan map[string]any
	closed chan int
}

// Dial opens url; the connection is closed when the test ends.
func Dial(t testing.TB, url string) *Client {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	c := &Client{T: t, WS: ws, frames: make(chan map[string]any, 4096), closed: make(chan int, 1)}
	go func() {
		defer close(c.frames)
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				code := websocket.CloseAbnormalClosure
				if ce, ok := err.(*websocket.CloseError); ok {
					code = ce.Code
				}
				c.closed <- code
				return
			}
			var m map[string]any
			if json.Unmarshal(msg, &m) == nil {
				c.frames <- m
			}
		}
	}()
	t.Cleanup(func() { ws.Close() })
	return c
}

// Established waits for pusher:connection_established and records the socket id.
func (c *Client) Established() {
	c.T.Helper()
	m := c.Expect("pusher:connection_established")
	var d struct {
		SocketID string `json:"socket_id"`
	}
	if err := json.Unmarshal([]byte(m["data"].(string)), &d); err != nil {
		c.T.Fatalf("connection_established data: %v", err)
	}
	c.SocketID = d.SocketID
}

// Send writes v as a JSON text frame.
func (c *Client) Send(v any) {
	c.T.Helper()
	b, _ := json.Marshal(v)
	if err := c.WS.WriteMessage(websocket.TextMessage, b); err != nil {
		c.T.Fatalf("send: %v", err)
	}
}

// Close drops the connection without a close handshake, as a crash would.
func (c *Client) Close() { c.WS.NetConn().Close() }

// Expect returns the next frame with the given event.
func (c *Client) Expect(event string) map[string]any {
	c.T.Helper()
	return c.ExpectEither(event, event)
}

// ExpectEither returns the next frame whose event is a or b.
func (c *Client) ExpectEither(a, b string) map[string]any {
	c.T.Helper()
	timeout := time.After(expectTimeout)
	for {
		select {
		case m, ok := <-c.frames:
			if !ok {
				c.T.Fatalf("connection closed while waiting for %s", a)
			}
			if m["event"] == a || m["event"] == b {
				return m
			}
		case <-timeout:
			c.T.Fatalf("timed out waiting for %s", a)
		}
	}
}

// Next returns the next frame in order, or false when none arrives within d
// or the connection closed.
func (c *Client) Next(d time.Duration) (map[string]any, bool) {
	select {
	case m, ok := <-c.frames:
		return m, ok
	case <-time.After(d):
		return nil, false
	}
}

// ExpectNone fails if a frame with event arrives within d.
func (c *Client) ExpectNone(event string, d time.Duration) {
	c.T.Helper()
	timeout := time.After(d)
	for {
		select {
		case m, ok := <-c.frames:
			if !ok {
				return
			}
			if m["event"] == event {
				c.T.Fatalf("unexpected %s: %v", event, m)
			}
		case <-timeout:
			return
		}
	}
}

// ExpectClose waits for the connection to end with the given close code.
func (c *Client) ExpectClose(code int) {
	c.T.Helper()
	timeout := time.After(expectTimeout)
	for {
		select {
		case _, ok := <-c.frames:
			if !ok {
				if got := <-c.closed; got != code {
					c.T.Fatalf("close code %d, want %d", got, code)
				}
				return
			}
		case <-timeout:
			c.T.Fatalf("timed out waiting for close %d", code)
		}
	}
}
