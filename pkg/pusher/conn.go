package pusher

import (
	"crypto/rand"
	"encoding/binary"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Conn is one client connection speaking the Pusher protocol.
type Conn struct {
	ID  string
	App *App

	srv       *Server
	transport Transport
	out       outbox

	lastSeen atomic.Int64 // unix nanos of the last client frame
	pinged   atomic.Bool  // a server ping is outstanding

	mu        sync.Mutex
	channels  channelSet // subscribed channels; presence ones carry the member
	userID    string
	authTimer *time.Timer
	closed    bool
	clientWin window
	signinWin window
}

// NewSocketID returns an id in Pusher's "digits.digits" form.
func NewSocketID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	a := binary.LittleEndian.Uint64(b[:8]) % 10_000_000_000
	c := binary.LittleEndian.Uint64(b[8:]) % 10_000_000_000
	return strconv.FormatUint(a, 10) + "." + strconv.FormatUint(c, 10)
}

func newConn(srv *Server, app *App, t Transport) *Conn {
	c := &Conn{ID: NewSocketID(), App: app, srv: srv, transport: t}
	c.out = outbox{
		maxBytes: srv.opts.MaxQueuedBytes, maxFrames: DefaultMaxQueuedFrames,
		transport: t,
	}
	if fs, ok := t.(FlushScheduler); ok {
		c.out.sched = fs
	}
	c.Touch()
	return c
}

// Send queues a frame; a connection too far behind is closed with 4100.
func (c *Conn) Send(f Frame) { c.send(f, true) }

func (c *Conn) send(f Frame, direct bool) {
	if !c.out.push(f, direct) {
		c.srv.opts.Metrics.Rejected("slow_consumer")
		c.srv.log.Debug("closing slow connection", "app_id", c.App.ID, "socket_id", c.ID)
		c.out.pushClose(TextFrame(errorJSON(ErrOverCapacity, "")), CloseFrame(ErrOverCapacity.Code, ErrOverCapacity.Message), true)
	}
}

// deliver queues one fan-out's frame. direct lets a lone fan-out write
// from the publishing goroutine on the goroutine transport; on an event
// loop the flushers write it, one per core, which measured the same CPU
// and a lower p99 (15-19 ms against 20-24 at 40,000 deliveries/s).
func (c *Conn) deliver(f Frame, direct bool) { c.send(f, direct && c.out.sched == nil) }

// sendJSON frames and sends a message meant for this connection alone.
func (c *Conn) sendJSON(payload []byte) {
	f := TextFrame(payload)
	c.Send(f)
	c.srv.opts.Metrics.FramesSent(c.App.ID, 1, len(f))
}

// CloseWith sends pusher:error with e, then closes the connection with e.Code.
// Frames queued before it are still delivered.
func (c *Conn) CloseWith(e *Error) {
	c.out.pushClose(TextFrame(errorJSON(e, "")), CloseFrame(e.Code, e.Message), false)
}

// closeSilently closes with a code but no pusher:error frame first.
func (c *Conn) closeSilently(e *Error) {
	c.out.pushClose(nil, CloseFrame(e.Code, e.Message), false)
}

// Touch records that the client is alive; the transport calls it for ping
// and pong frames, which never reach HandleFrame.
func (c *Conn) Touch() {
	c.lastSeen.Store(time.Now().UnixNano())
	c.pinged.Store(false)
}

// UserID returns the signed-in user, or "".
func (c *Conn) UserID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.userID
}

// isClosed reports whether the server has cleaned up after c (Closed).
func (c *Conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (c *Conn) swapUserID(id string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	prev := c.userID
	c.userID = id
	return prev
}

// Channels returns the names of the channels c is subscribed to.
func (c *Conn) Channels() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.channels.names()
}

func (c *Conn) isSubscribed(channel string) (bool, *Member) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.channels.get(channel)
	return ok, m
}

func (c *Conn) stopAuthTimer() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.authTimer != nil {
		c.authTimer.Stop()
		c.authTimer = nil
	}
}

// channelSet holds a connection's subscriptions: a short slice while there
// are few, which is the usual case and a small part of a map's memory (a
// map of one entry takes about 200 bytes; this is per connection, and idle
// connections are most of a node's memory), and
// a map once there are more than maxFewChannels, so that a client with
// thousands of channels costs no linear scans.
type channelSet struct {
	few  []subscription
	many map[string]*Member
}

type subscription struct {
	name   string
	member *Member
}

const maxFewChannels = 8

func (s *channelSet) get(name string) (*Member, bool) {
	if s.many != nil {
		m, ok := s.many[name]
		return m, ok
	}
	for _, sub := range s.few {
		if sub.name == name {
			return sub.member, true
		}
	}
	return nil, false
}

func (s *channelSet) set(name string, m *Member) {
	if s.many != nil {
		s.many[name] = m
		return
	}
	for i := range s.few {
		if s.few[i].name == name {
			s.few[i].member = m
			return
		}
	}
	if len(s.few) < maxFewChannels {
		s.few = append(s.few, subscription{name, m})
		return
	}
	s.many = make(map[string]*Member, 2*maxFewChannels)
	for _, sub := range s.few {
		s.many[sub.name] = sub.member
	}
	s.many[name] = m
	s.few = nil
}

func (s *channelSet) del(name string) {
	if s.many != nil {
		delete(s.many, name)
		return
	}
	for i := range s.few {
		if s.few[i].name == name {
			last := len(s.few) - 1
			copy(s.few[i:], s.few[i+1:])
			s.few[last] = subscription{} // hold no stale member
			s.few = s.few[:last]
			if len(s.few) == 0 {
				s.few = nil
			}
			return
		}
	}
}

func (s *channelSet) names() []string {
	if s.many != nil {
		out := make([]string, 0, len(s.many))
		for name := range s.many {
			out = append(out, name)
		}
		return out
	}
	out := make([]string, 0, len(s.few))
	for _, sub := range s.few {
		out = append(out, sub.name)
	}
	return out
}
