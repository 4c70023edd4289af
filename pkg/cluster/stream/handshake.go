package stream

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// The handshake, origin (dialer) → destination (listener), on a connection
// the cluster port has already secured (mutual TLS with CLUSTER_KEY):
//
//	hello    origin id, target id, origin incarnation, stream epoch
//	welcome  status, destination id, destination incarnation
//	base     the seq before the origin's oldest retained message
//	accept   first record: the destination's last delivered seq of this stream
//
// The welcome tells the origin whether the destination restarted (its
// incarnation) before it names its base; the base tells a destination that
// does not know the stream where it starts; the accept tells the origin
// where to resume. Who is at the other end is the transport's business:
// when it proves an identity (Config.PeerID), a hello whose origin is not
// that identity is refused.

var (
	// errRefused reports a destination that declined the handshake.
	errRefused = errors.New("stream: handshake refused")
	// errIdentity reports a hello (or a dialled connection) whose node id is
	// not the one the transport proved.
	errIdentity = errors.New("stream: peer identity mismatch")
)

// Handshake messages travel before the record layer, each as a 2-byte
// length and a body of at most maxHandshake bytes.
const (
	protocolVersion = 2
	maxHandshake    = 1024
	maxIDLen        = 255
	baseLen         = 8
)

var magic = [4]byte{'S', 'K', 'S', 'T'}

// Welcome status codes.
const (
	statusOK          byte = 0
	statusWrongTarget byte = 1 // the dialled node has another id
	statusIdentity    byte = 2 // the hello's origin is not the proven identity
	statusVersion     byte = 3
)

// session is an established connection with its record layer.
type session struct {
	conn net.Conn
	w    *recordWriter
	r    *recordReader
}

type handshakeResult struct {
	sess      *session
	remoteInc uint64
	last      uint64
}

// clientHandshake runs the origin side. prepare is called once the
// destination's incarnation is known and returns the base sequence.
func clientHandshake(conn net.Conn, cfg *Config, target string, epoch uint64, prepare func(remoteInc uint64) uint64) (handshakeResult, error) {
	if err := conn.SetDeadline(time.Now().Add(cfg.PeerTimeout)); err != nil {
		return handshakeResult{}, err
	}
	br := bufio.NewReaderSize(conn, ioBuffer)
	h := hello{version: protocolVersion, origin: cfg.NodeID, target: target, inc: cfg.Incarnation, epoch: epoch}
	if err := writeHandshake(conn, h.encode()); err != nil {
		return handshakeResult{}, fmt.Errorf("send hello: %w", err)
	}
	wb, err := readHandshake(br)
	if err != nil {
		return handshakeResult{}, fmt.Errorf("read welcome: %w", err)
	}
	wel, err := decodeWelcome(wb)
	if err != nil {
		return handshakeResult{}, fmt.Errorf("read welcome: %w", err)
	}
	switch wel.status {
	case statusOK:
	case statusWrongTarget:
		return handshakeResult{}, fmt.Errorf("%w: address belongs to node %q", errRefused, wel.node)
	case statusIdentity:
		return handshakeResult{}, fmt.Errorf("%w: destination proved another identity than %q", errIdentity, cfg.NodeID)
	case statusVersion:
		return handshakeResult{}, fmt.Errorf("%w: protocol version", errRefused)
	default:
		return handshakeResult{}, fmt.Errorf("%w: status %d", errRefused, wel.status)
	}
	if wel.node != target {
		return handshakeResult{}, fmt.Errorf("%w: address belongs to node %q", errRefused, wel.node)
	}
	base := binary.BigEndian.AppendUint64(make([]byte, 0, baseLen), prepare(wel.inc))
	if err := writeHandshake(conn, base); err != nil {
		return handshakeResult{}, fmt.Errorf("send base: %w", err)
	}
	r := &recordReader{conn: conn, br: br, timeout: cfg.PeerTimeout}
	body, err := r.next()
	if err != nil {
		return handshakeResult{}, fmt.Errorf("read accept: %w", err)
	}
	last, err := parseAccept(body)
	if err != nil {
		return handshakeResult{}, fmt.Errorf("read accept: %w", err)
	}
	sess := &session{conn: conn, w: newRecordWriter(conn, cfg.PeerTimeout), r: r}
	return handshakeResult{sess: sess, remoteInc: wel.inc, last: last}, nil
}

// parseAccept reads the destination's first record: exactly one accept.
func parseAccept(body []byte) (uint64, error) {
	var last uint64
	accepted := false
	err := parseFrames(body, func(typ byte, seq uint64, _ []byte) error {
		if typ != frameAccept || accepted {
			return fmt.Errorf("%w: unexpected frame %d in accept", errMalformed, typ)
		}
		last, accepted = seq, true
		return nil
	})
	if err == nil && !accepted {
		err = fmt.Errorf("%w: empty accept", errMalformed)
	}
	return last, err
}

// serverHandshake runs the destination side up to, not including, the
// accept, which needs the stream state that the hello names. It asks
// cfg.PeerID only after the hello has arrived, so a transport that finishes
// its own handshake on the first read has done so by then.
func serverHandshake(conn net.Conn, cfg *Config) (hello, uint64, *session, error) {
	if err := conn.SetDeadline(time.Now().Add(cfg.PeerTimeout)); err != nil {
		return hello{}, 0, nil, err
	}
	br := bufio.NewReaderSize(conn, ioBuffer)
	hb, err := readHandshake(br)
	if err != nil {
		return hello{}, 0, nil, fmt.Errorf("read hello: %w", err)
	}
	h, err := decodeHello(hb)
	if err != nil {
		return hello{}, 0, nil, fmt.Errorf("read hello: %w", err)
	}
	wel := welcome{node: cfg.NodeID, inc: cfg.Incarnation}
	proven := cfg.PeerID(conn)
	var refusal error
	switch {
	case h.version != protocolVersion:
		wel.status, refusal = statusVersion, fmt.Errorf("%w: protocol version %d", errRefused, h.version)
	case proven != "" && proven != h.origin:
		wel.status, refusal = statusIdentity, fmt.Errorf("%w: hello from %q on a connection proven to be %q", errIdentity, h.origin, proven)
	case h.target != cfg.NodeID:
		wel.status, refusal = statusWrongTarget, fmt.Errorf("%w: origin dialled node %q", errRefused, h.target)
	}
	if err := writeHandshake(conn, wel.encode()); err != nil {
		return h, 0, nil, fmt.Errorf("send welcome: %w", err)
	}
	if refusal != nil {
		return h, 0, nil, refusal
	}
	bb, err := readHandshake(br)
	if err != nil {
		return h, 0, nil, fmt.Errorf("read base: %w", err)
	}
	if len(bb) != baseLen {
		return h, 0, nil, fmt.Errorf("%w: base of %d bytes", errMalformed, len(bb))
	}
	sess := &session{
		conn: conn,
		w:    newRecordWriter(conn, cfg.PeerTimeout),
		r:    &recordReader{conn: conn, br: br, timeout: cfg.PeerTimeout},
	}
	return h, binary.BigEndian.Uint64(bb), sess, nil
}

type hello struct {
	version uint8
	origin  string
	target  string
	inc     uint64
	epoch   uint64
}

func (h hello) encode() []byte {
	b := make([]byte, 0, 32+len(h.origin)+len(h.target))
	b = append(b, magic[:]...)
	b = append(b, h.version)
	b = appendString(b, h.origin)
	b = appendString(b, h.target)
	b = binary.BigEndian.AppendUint64(b, h.inc)
	return binary.BigEndian.AppendUint64(b, h.epoch)
}

func decodeHello(b []byte) (hello, error) {
	var h hello
	if len(b) < len(magic)+1 || [4]byte(b[:4]) != magic {
		return h, fmt.Errorf("%w: bad magic", errMalformed)
	}
	h.version = b[4]
	if h.version != protocolVersion {
		// Other versions may lay out the rest differently.
		return h, nil
	}
	d := decoder{b: b[5:]}
	origin, target := d.field(), d.field()
	if d.err != nil {
		return h, d.err
	}
	if len(d.b) != 16 || len(origin) == 0 || len(origin) > maxIDLen || len(target) > maxIDLen {
		return h, fmt.Errorf("%w: bad hello", errMalformed)
	}
	h.origin, h.target = string(origin), string(target)
	h.inc = binary.BigEndian.Uint64(d.b)
	h.epoch = binary.BigEndian.Uint64(d.b[8:])
	return h, nil
}

type welcome struct {
	status byte
	node   string
	inc    uint64
}

func (w welcome) encode() []byte {
	b := append(make([]byte, 0, 16+len(w.node)), w.status)
	b = appendString(b, w.node)
	return binary.BigEndian.AppendUint64(b, w.inc)
}

func decodeWelcome(b []byte) (welcome, error) {
	var w welcome
	if len(b) < 1 {
		return w, fmt.Errorf("%w: empty welcome", errMalformed)
	}
	w.status = b[0]
	d := decoder{b: b[1:]}
	node := d.field()
	if d.err != nil {
		return w, d.err
	}
	if len(d.b) != 8 || len(node) > maxIDLen {
		return w, fmt.Errorf("%w: bad welcome", errMalformed)
	}
	w.node = string(node)
	w.inc = binary.BigEndian.Uint64(d.b)
	return w, nil
}

func writeHandshake(w io.Writer, body []byte) error {
	if len(body) > maxHandshake {
		return fmt.Errorf("%w: handshake of %d bytes", errMalformed, len(body))
	}
	b := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(body)), uint16(len(body)))
	_, err := w.Write(append(b, body...))
	return err
}

func readHandshake(r io.Reader) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(l[:]))
	if n > maxHandshake {
		return nil, fmt.Errorf("%w: handshake of %d bytes", errMalformed, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}
