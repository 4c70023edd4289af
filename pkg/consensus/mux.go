package consensus

import (
	"errors"
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
	port *clusternet.Port
	ln   net.Listener
	// peerID maps a raft address to the server id expected there, so a
	// dial checks the certificate of the node raft means to reach.
	peerID func(addr string) string
	once   sync.Once
}

var _ raft.StreamLayer = (*raftLayer)(nil)

func newRaftLayer(port *clusternet.Port, peerID func(string) string) *raftLayer {
	return &raftLayer{port: port, ln: port.Listener(clusternet.KindRaft), peerID: peerID}
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

func (l *raftLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return l.port.DialTimeout(string(addr), clusternet.KindRaft, l.peerID(string(addr)), timeout)
}
