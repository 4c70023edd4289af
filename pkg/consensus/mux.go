package consensus

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/soketi-go/soketi/pkg/clusternet"
)

// Raft and the forwarding RPC share the cluster port (clusternet) with the
// message streams: the port does the TLS handshake and reads the kind byte,
// so everything here arrives from a peer that proved the cluster key.

var errMuxClosed = errors.New("consensus: listener closed")

// rpcServer accepts the RPC connections and closes those being served at
// shutdown, so that Shutdown never waits on a peer's idle connection.
type rpcServer struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	done bool
	conn map[net.Conn]struct{}
}

func (s *rpcServer) run(serve func(net.Conn)) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			if !s.track(c, true) {
				c.Close()
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				serve(c)
				s.track(c, false)
				c.Close()
			}()
		}
	}()
}

func (s *rpcServer) track(c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.conn, c)
		return true
	}
	if s.done {
		return false
	}
	s.conn[c] = struct{}{}
	return true
}

func (s *rpcServer) close() {
	s.mu.Lock()
	s.done = true
	for c := range s.conn {
		c.Close()
	}
	s.mu.Unlock()
	s.ln.Close()
	s.wg.Wait()
}

// raftLayer is raft's StreamLayer over the cluster port. Closing it (raft
// does on shutdown) stops its Accept but keeps the port, so a new raft
// instance can be created on the same address after a wipe.
type raftLayer struct {
	port   *clusternet.Port
	ln     net.Listener
	selfID string
	once   sync.Once

	mu     sync.Mutex
	parked map[string]bool                   // servers that may not be dialled now
	dialed map[string]map[*raftConn]struct{} // open outgoing connections, by server id
}

var _ raft.StreamLayer = (*raftLayer)(nil)

var errParked = errors.New("consensus: raft connections to this server are parked for a configuration change")

func newRaftLayer(port *clusternet.Port, selfID string) *raftLayer {
	return &raftLayer{
		port: port, ln: port.Listener(clusternet.KindRaft), selfID: selfID,
		parked: map[string]bool{}, dialed: map[string]map[*raftConn]struct{}{},
	}
}

func (l *raftLayer) Accept() (net.Conn, error) {
	c, err := l.ln.Accept()
	if err != nil {
		return nil, errMuxClosed
	}
	return c, nil
}

func (l *raftLayer) Close() error {
	l.once.Do(func() { l.ln.Close() })
	return nil
}

func (l *raftLayer) Addr() net.Addr { return l.ln.Addr() }

// Dial connects to a server at an address from addrProvider ("id@addr"),
// requiring that node's certificate there. A plain address is accepted
// only for this node itself (the provider leaves its own address plain).
func (l *raftLayer) Dial(target raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	id, addr, ok := untagAddr(string(target))
	if !ok {
		if addr != l.port.Addr() {
			return nil, fmt.Errorf("consensus: raft address %q names no server", addr)
		}
		id = l.selfID
	}
	l.mu.Lock()
	parked := l.parked[id]
	l.mu.Unlock()
	if parked {
		return nil, errParked
	}
	c, err := l.port.DialTimeout(addr, clusternet.KindRaft, id, timeout)
	if err != nil {
		return nil, err
	}
	rc := &raftConn{Conn: c, l: l, id: id}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.parked[id] { // parked while dialling
		c.Close()
		return nil, errParked
	}
	if l.dialed[id] == nil {
		l.dialed[id] = map[*raftConn]struct{}{}
	}
	l.dialed[id][rc] = struct{}{}
	return rc, nil
}

// park closes raft's connections to server id and refuses new ones until
// unpark (see Node.moveServer).
func (l *raftLayer) park(id string) {
	l.mu.Lock()
	l.parked[id] = true
	conns := l.dialed[id]
	delete(l.dialed, id)
	l.mu.Unlock()
	for c := range conns {
		c.Conn.Close()
	}
}

func (l *raftLayer) unpark(id string) {
	l.mu.Lock()
	delete(l.parked, id)
	l.mu.Unlock()
}

// raftConn is a connection raft dialled, tracked until it is closed.
type raftConn struct {
	net.Conn
	l  *raftLayer
	id string
}

func (c *raftConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.dialed[c.id], c)
	if len(c.l.dialed[c.id]) == 0 {
		delete(c.l.dialed, c.id)
	}
	c.l.mu.Unlock()
	return c.Conn.Close()
}
