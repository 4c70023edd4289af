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
	// alive is the address of an alive member, "" if the membership does
	// not have it alive.
	alive func(id string) string
	once  sync.Once
	stopO sync.Once
	done  chan struct{} // closed by stop: held dials give up

	mu     sync.Mutex
	parked map[string]bool                   // servers that may not be dialled now
	dialed map[string]map[*raftConn]struct{} // open outgoing connections, by server id
}

var _ raft.StreamLayer = (*raftLayer)(nil)

var errParked = errors.New("consensus: raft connections to this server are parked for a configuration change")

// A dial to a server that the membership does not have alive is held until
// it is alive again (then at the address it has now), for at most
// holdMax. Raft backs off after each failed append, up to 10 s with no cap
// on its log replication, so failing fast on a dead server would leave it
// without entries for seconds once it is back; and a dead voter, which
// stays in the configuration, would log a failed heartbeat twice a second.
const (
	holdPoll = 50 * time.Millisecond
	holdMax  = time.Minute
)

func newRaftLayer(port *clusternet.Port, selfID string, alive func(string) string) *raftLayer {
	return &raftLayer{
		port: port, ln: port.Listener(clusternet.KindRaft), selfID: selfID, alive: alive,
		done: make(chan struct{}), parked: map[string]bool{}, dialed: map[string]map[*raftConn]struct{}{},
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
	l.stop()
	l.once.Do(func() { l.ln.Close() })
	return nil
}

// stop makes held dials give up: raft's Shutdown waits for the goroutines
// that dial, and closes the layer only after them.
func (l *raftLayer) stop() { l.stopO.Do(func() { close(l.done) }) }

// await waits until the membership has id alive and returns its address.
func (l *raftLayer) await(id string) (string, error) {
	if a := l.alive(id); a != "" {
		return a, nil
	}
	poll := time.NewTicker(holdPoll)
	defer poll.Stop()
	giveUp := time.NewTimer(holdMax)
	defer giveUp.Stop()
	for {
		select {
		case <-l.done:
			return "", errMuxClosed
		case <-giveUp.C:
			return "", fmt.Errorf("consensus: server %q not alive for %s", id, holdMax)
		case <-poll.C:
			if a := l.alive(id); a != "" {
				return a, nil
			}
		}
	}
}

func (l *raftLayer) Addr() net.Addr { return l.ln.Addr() }

// Dial connects to a server at an address from addrProvider ("id@addr"),
// requiring that node's certificate there. A plain address is accepted
// only for this node itself (the provider leaves its own address plain).
// A server that is not alive is waited for (see holdMax).
func (l *raftLayer) Dial(target raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	id, addr, ok := untagAddr(string(target))
	if !ok {
		if addr != l.port.Addr() {
			return nil, fmt.Errorf("consensus: raft address %q names no server", addr)
		}
		id = l.selfID
	}
	if id != l.selfID {
		if addr == "" {
			return nil, fmt.Errorf("consensus: no address known for server %q", id)
		}
		a, err := l.await(id)
		if err != nil {
			return nil, err
		}
		addr = a
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
