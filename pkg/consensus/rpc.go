package consensus

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/soketi-go/soketi/pkg/clusternet"
)

// Internal RPC, on the cluster port (clusternet.KindRPC). Sequential
// request/response frames on a connection:
//
//	request:  len u32 | op u8 | payload      (len counts op + payload)
//	response: len u32 | code u8 | payload    (code 0: ok; else payload is a message)
//
// opApply payload: timeout_ms u32 | command (log data); ok payload: Result JSON.
// opStatus payload: empty; ok payload: peerStatus JSON.
// opReset payload: resetRequest JSON; ok payload: empty.
const (
	opApply  byte = 1
	opStatus byte = 2
	opReset  byte = 3

	codeOK        byte = 0
	codeNotLeader byte = 1 // not applied: ask the current leader
	codeUnknown   byte = 2 // may or may not have been applied
	codeFailed    byte = 3 // not applied
	codeRefused   byte = 4 // not applied: the caller is not a member (yet)

	maxRequest  = MaxCommandSize + 64
	maxResponse = 64 << 20 // a join result carries the member list

	// rpcIdleTimeout: the server closes idle connections after it; the
	// client drops pooled connections well before, so it never reuses one
	// the server is about to close.
	rpcIdleTimeout   = 60 * time.Second
	clientIdleReuse  = 20 * time.Second
	maxIdlePerPeer   = 4
	maxActivePerPeer = 32
	rpcDialTimeout   = 2 * time.Second
)

var (
	errDial = errors.New("dial failed")
)

// remoteError is a non-OK response.
type remoteError struct {
	code byte
	msg  string
}

func (e *remoteError) Error() string { return fmt.Sprintf("remote error %d: %s", e.code, e.msg) }

// peerStatus is what a node tells peers deciding bootstrap and merge.
type peerStatus struct {
	ID         string   `json:"id"`
	HasState   bool     `json:"has_state"`
	LeaderID   string   `json:"leader_id"`
	LeaderAddr string   `json:"leader_addr"`
	Servers    []string `json:"servers"` // ids in its raft configuration, sorted
	LastIndex  uint64   `json:"last_index"`
	// Alive is who it sees alive, itself included, sorted: a node without
	// raft state bootstraps a group only of peers that see it (discovery).
	Alive []string `json:"alive,omitempty"`
}

// resetRequest asks a node of a losing group to wipe its raft state.
type resetRequest struct {
	From    string   `json:"from"`
	Servers []string `json:"servers"` // the winning group's configuration, sorted
}

// validate rejects a request that could not come from a real group: the
// merge rule compares sorted server ids, so an empty or unsorted list, or
// one without its sender, would let a forged request win.
func (r resetRequest) validate() error {
	if err := checkName("reset sender", r.From); err != nil {
		return err
	}
	if len(r.Servers) == 0 || len(r.Servers) > maxResetServers {
		return fmt.Errorf("consensus: reset names %d servers", len(r.Servers))
	}
	for i, s := range r.Servers {
		if err := checkName("reset server", s); err != nil {
			return err
		}
		if i > 0 && r.Servers[i-1] >= s {
			return errors.New("consensus: reset servers are not sorted and unique")
		}
	}
	if !slices.Contains(r.Servers, r.From) {
		return fmt.Errorf("consensus: reset sender %q is not in its own group", r.From)
	}
	return nil
}

// maxResetServers bounds a reset request's configuration.
const maxResetServers = 64

func writeFrame(w *bufio.Writer, kind byte, payload []byte) error {
	var hdr [5]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(1+len(payload)))
	hdr[4] = kind
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	if _, err := w.Write(payload); err != nil {
		return err
	}
	return w.Flush()
}

func readFrame(r *bufio.Reader, limit int) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[:4]))
	if n < 1 || n > limit {
		return 0, nil, fmt.Errorf("frame of %d bytes, limit %d", n, limit)
	}
	payload := make([]byte, n-1)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	return hdr[4], payload, nil
}

// rpcHandler is implemented by Node. from is the caller: the node id its
// certificate proves, "" on a port without credentials.
type rpcHandler interface {
	serveApply(from string, data []byte, timeout time.Duration) (byte, []byte)
	serveStatus() peerStatus
	serveReset(from string, req resetRequest) error
}

func serveRPCConn(c net.Conn, h rpcHandler) {
	from := clusternet.PeerID(c)
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	for {
		_ = c.SetReadDeadline(time.Now().Add(rpcIdleTimeout))
		op, payload, err := readFrame(r, maxRequest)
		if err != nil {
			return
		}
		_ = c.SetReadDeadline(time.Time{})
		code, resp := codeFailed, []byte("unknown op")
		switch op {
		case opApply:
			if len(payload) < 4 {
				resp = []byte("short apply request")
				break
			}
			timeout := time.Duration(binary.BigEndian.Uint32(payload[:4])) * time.Millisecond
			code, resp = h.serveApply(from, payload[4:], timeout)
		case opStatus:
			if b, err := json.Marshal(h.serveStatus()); err != nil {
				resp = []byte(err.Error())
			} else {
				code, resp = codeOK, b
			}
		case opReset:
			var req resetRequest
			if err := json.Unmarshal(payload, &req); err != nil {
				resp = []byte(err.Error())
			} else if err := h.serveReset(from, req); err != nil {
				resp = []byte(err.Error())
			} else {
				code, resp = codeOK, nil
			}
		}
		_ = c.SetWriteDeadline(time.Now().Add(rpcDialTimeout))
		if err := writeFrame(w, code, resp); err != nil {
			return
		}
	}
}

type pooledConn struct {
	c    net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
	idle time.Time
}

type peerPool struct {
	idle   []*pooledConn
	active chan struct{}
}

// rpcClient keeps a few idle connections per peer and bounds the active
// ones; a caller waiting for a slot gives up at its context deadline.
type rpcClient struct {
	port   *clusternet.Port
	mu     sync.Mutex
	peers  map[string]*peerPool
	closed bool
}

func newRPCClient(port *clusternet.Port) *rpcClient {
	return &rpcClient{port: port, peers: make(map[string]*peerPool)}
}

func (rc *rpcClient) pool(addr string) (*peerPool, error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.closed {
		return nil, errMuxClosed
	}
	p := rc.peers[addr]
	if p == nil {
		// Bounded: peers are raft servers and forwarding targets, but drop
		// unused pools once the map grows.
		if len(rc.peers) >= 64 {
			for a, q := range rc.peers {
				if len(q.active) == 0 {
					for _, pc := range q.idle {
						pc.c.Close()
					}
					delete(rc.peers, a)
				}
			}
		}
		p = &peerPool{active: make(chan struct{}, maxActivePerPeer)}
		rc.peers[addr] = p
	}
	return p, nil
}

func (rc *rpcClient) get(p *peerPool) *pooledConn {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for len(p.idle) > 0 {
		pc := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if time.Since(pc.idle) < clientIdleReuse {
			return pc
		}
		pc.c.Close()
	}
	return nil
}

func (rc *rpcClient) put(p *peerPool, pc *pooledConn) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.closed || len(p.idle) >= maxIdlePerPeer {
		pc.c.Close()
		return
	}
	pc.idle = time.Now()
	p.idle = append(p.idle, pc)
}

// call sends one request to node peerID at addr (peerID "" skips the
// identity check, leaving the CA check). An error wrapping errDial means
// the request was never sent; any other error leaves the outcome unknown.
func (rc *rpcClient) call(ctx context.Context, addr, peerID string, op byte, payload []byte) ([]byte, error) {
	p, err := rc.pool(addr + "|" + peerID)
	if err != nil {
		return nil, err
	}
	select {
	case p.active <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: waiting for a connection slot: %w", errDial, ctx.Err())
	}
	defer func() { <-p.active }()

	pc := rc.get(p)
	reused := pc != nil
	if pc == nil {
		dctx, cancel := context.WithTimeout(ctx, rpcDialTimeout)
		c, err := rc.port.Dial(dctx, addr, clusternet.KindRPC, peerID)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errDial, err)
		}
		pc = &pooledConn{c: c, r: bufio.NewReader(c), w: bufio.NewWriter(c)}
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = pc.c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = pc.c.SetDeadline(time.Unix(1, 0)) })
	code, resp, err := func() (byte, []byte, error) {
		if err := writeFrame(pc.w, op, payload); err != nil {
			return 0, nil, err
		}
		return readFrame(pc.r, maxResponse)
	}()
	stopped := stop()
	if err != nil {
		abort(pc.c)
		if reused { // the peer restarted, most likely: its other idle connections are dead too
			rc.dropIdle(p)
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return nil, err
	}
	if stopped {
		_ = pc.c.SetDeadline(time.Time{})
		rc.put(p, pc)
	} else {
		abort(pc.c)
	}
	if code != codeOK {
		return nil, &remoteError{code: code, msg: string(resp)}
	}
	return resp, nil
}

func (rc *rpcClient) dropIdle(p *peerPool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, pc := range p.idle {
		pc.c.Close()
	}
	p.idle = nil
}

// abort drops a connection whose request may not have reached the peer
// yet, discarding what the kernel still holds for it (SO_LINGER 0, so a
// reset instead of a graceful close). Across a partition a plain close
// leaves the request in the send queue, and TCP delivers it once the
// network heals: a forwarded write applied long after its caller gave up
// (seen by the chaos test: a join refused with 4302, committed 10 s later).
func abort(c net.Conn) {
	raw := c
	if tc, ok := c.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	// The socket itself: a TLS close would first try to write close_notify
	// behind the stuck request, for up to 5 s.
	_ = raw.Close()
}

func (rc *rpcClient) close() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.closed = true
	for _, p := range rc.peers {
		for _, pc := range p.idle {
			pc.c.Close()
		}
		p.idle = nil
	}
}
