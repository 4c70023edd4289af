package stream

import (
	"bufio"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"time"
)

// A connection carries records: a 4-byte big-endian body length, then the
// body, sealed with AES-GCM when a SecretKey is set. A body holds one or
// more frames, so a batch of messages costs one seal and one write.
const (
	recordHeaderLen = 4
	// batchBytes cuts a record; a single larger message gets its own record.
	batchBytes = 256 << 10
	// gcmOverhead is the AES-GCM tag length.
	gcmOverhead      = 16
	maxFrameOverhead = 1 + 2*binary.MaxVarintLen64
	maxRecordSize    = MaxMessageSize + maxFrameOverhead + gcmOverhead
	// bufferKeep is the largest record buffer kept between records; a rare
	// huge message does not pin its buffer for the connection's lifetime.
	bufferKeep = 1 << 20
	ioBuffer   = 64 << 10
)

// Frame types inside a record body.
const (
	frameData   byte = 1 // origin → destination: uvarint seq, uvarint len, message
	frameAck    byte = 2 // destination → origin: uvarint cumulative seq; also the heartbeat
	framePing   byte = 3 // origin → destination heartbeat while idle
	frameAccept byte = 4 // destination → origin, first record: uvarint last delivered seq
)

// errAuth reports a record or handshake that failed authentication.
var errAuth = errors.New("stream: authentication failed")

// recordWriter builds records in buf and writes them through a bufio.Writer;
// flush pushes them to the connection.
type recordWriter struct {
	conn    net.Conn
	bw      *bufio.Writer
	aead    cipher.AEAD
	seq     uint64
	buf     []byte
	timeout time.Duration
}

func newRecordWriter(conn net.Conn, aead cipher.AEAD, timeout time.Duration) *recordWriter {
	return &recordWriter{conn: conn, bw: bufio.NewWriterSize(conn, ioBuffer), aead: aead, timeout: timeout}
}

func (w *recordWriter) begin() { w.buf = append(w.buf[:0], 0, 0, 0, 0) }

// size is the body length so far.
func (w *recordWriter) size() int { return len(w.buf) - recordHeaderLen }

func (w *recordWriter) appendData(seq uint64, msg []byte) {
	w.buf = append(w.buf, frameData)
	w.buf = binary.AppendUvarint(w.buf, seq)
	w.buf = binary.AppendUvarint(w.buf, uint64(len(msg)))
	w.buf = append(w.buf, msg...)
}

func (w *recordWriter) appendSeq(typ byte, seq uint64) {
	w.buf = append(w.buf, typ)
	w.buf = binary.AppendUvarint(w.buf, seq)
}

func (w *recordWriter) appendPing() { w.buf = append(w.buf, framePing) }

// finish seals the record and hands it to the bufio.Writer.
func (w *recordWriter) finish() error {
	if w.aead != nil {
		w.buf = slices.Grow(w.buf, gcmOverhead)
		body := w.buf[recordHeaderLen:]
		sealed := w.aead.Seal(body[:0], nonce(w.seq), body, nil)
		w.seq++
		w.buf = w.buf[:recordHeaderLen+len(sealed)]
	}
	binary.BigEndian.PutUint32(w.buf, uint32(len(w.buf)-recordHeaderLen))
	if err := w.conn.SetWriteDeadline(time.Now().Add(w.timeout)); err != nil {
		return err
	}
	_, err := w.bw.Write(w.buf)
	if cap(w.buf) > bufferKeep {
		w.buf = nil
	}
	return err
}

func (w *recordWriter) flush() error {
	if w.bw.Buffered() == 0 {
		return nil
	}
	if err := w.conn.SetWriteDeadline(time.Now().Add(w.timeout)); err != nil {
		return err
	}
	return w.bw.Flush()
}

// recordReader returns record bodies, opened when sealed. A body is valid
// until the next call.
type recordReader struct {
	conn    net.Conn
	br      *bufio.Reader
	aead    cipher.AEAD
	seq     uint64
	buf     []byte
	timeout time.Duration
}

func (r *recordReader) next() ([]byte, error) {
	if err := r.conn.SetReadDeadline(time.Now().Add(r.timeout)); err != nil {
		return nil, err
	}
	var hdr [recordHeaderLen]byte
	if _, err := io.ReadFull(r.br, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[:]))
	if n > maxRecordSize || (r.aead != nil && n < gcmOverhead) {
		return nil, fmt.Errorf("%w: record of %d bytes", errMalformed, n)
	}
	if cap(r.buf) < n || (cap(r.buf) > bufferKeep && n <= batchBytes) {
		r.buf = make([]byte, n, max(n, ioBuffer))
	}
	body := r.buf[:n]
	if _, err := io.ReadFull(r.br, body); err != nil {
		return nil, err
	}
	if r.aead == nil {
		return body, nil
	}
	plain, err := r.aead.Open(body[:0], nonce(r.seq), body, nil)
	r.seq++
	if err != nil {
		return nil, fmt.Errorf("%w: record %d", errAuth, r.seq-1)
	}
	return plain, nil
}

// parseFrames calls fn for each frame of a record body. msg aliases b.
func parseFrames(b []byte, fn func(typ byte, seq uint64, msg []byte) error) error {
	for len(b) > 0 {
		typ := b[0]
		d := decoder{b: b[1:]}
		var seq uint64
		var msg []byte
		switch typ {
		case frameData:
			seq = d.uvarint()
			msg = d.field()
		case frameAck, frameAccept:
			seq = d.uvarint()
		case framePing:
		default:
			return fmt.Errorf("%w: frame type %d", errMalformed, typ)
		}
		if d.err != nil {
			return d.err
		}
		b = d.b
		if err := fn(typ, seq, msg); err != nil {
			return err
		}
	}
	return nil
}

func nonce(seq uint64) []byte {
	var n [12]byte
	binary.BigEndian.PutUint64(n[4:], seq)
	return n[:]
}

// Handshake messages travel before the record layer, each as a 2-byte
// length and a body of at most maxHandshake bytes.
const (
	protocolVersion = 1
	maxHandshake    = 1024
	nonceLen        = 16
	macLen          = sha256.Size
	flagAuth        = 1 // the sender has a SecretKey
	maxIDLen        = 255
)

var magic = [4]byte{'S', 'K', 'S', 'T'}

// Challenge status codes.
const (
	statusOK          byte = 0
	statusWrongTarget byte = 1 // the dialled node has another id
	statusAuthMode    byte = 2 // one side has a SecretKey, the other not
	statusVersion     byte = 3
)

type hello struct {
	version uint8
	flags   uint8
	origin  string
	target  string
	inc     uint64
	epoch   uint64
	nonce   [nonceLen]byte
}

func (h hello) encode() []byte {
	b := make([]byte, 0, 64+len(h.origin)+len(h.target))
	b = append(b, magic[:]...)
	b = append(b, h.version, h.flags)
	b = appendString(b, h.origin)
	b = appendString(b, h.target)
	b = binary.BigEndian.AppendUint64(b, h.inc)
	b = binary.BigEndian.AppendUint64(b, h.epoch)
	return append(b, h.nonce[:]...)
}

func decodeHello(b []byte) (hello, error) {
	var h hello
	if len(b) < len(magic)+2 || [4]byte(b[:4]) != magic {
		return h, fmt.Errorf("%w: bad magic", errMalformed)
	}
	h.version, h.flags = b[4], b[5]
	if h.version != protocolVersion {
		// Later versions may lay out the rest differently.
		return h, nil
	}
	d := decoder{b: b[6:]}
	h.origin = string(d.field())
	h.target = string(d.field())
	if d.err != nil {
		return h, d.err
	}
	if len(d.b) != 16+nonceLen || h.origin == "" || len(h.origin) > maxIDLen {
		return h, fmt.Errorf("%w: bad hello", errMalformed)
	}
	h.inc = binary.BigEndian.Uint64(d.b)
	h.epoch = binary.BigEndian.Uint64(d.b[8:])
	copy(h.nonce[:], d.b[16:])
	return h, nil
}

type challenge struct {
	status byte
	node   string
	inc    uint64
	nonce  [nonceLen]byte
	mac    []byte // over hello and the challenge without mac
}

// encode returns the body without the mac, then the mac appended.
func (c challenge) encode() (unsigned, full []byte) {
	b := []byte{c.status}
	b = appendString(b, c.node)
	b = binary.BigEndian.AppendUint64(b, c.inc)
	b = append(b, c.nonce[:]...)
	return b, append(b[:len(b):len(b)], c.mac...)
}

func decodeChallenge(b []byte) (c challenge, unsigned []byte, err error) {
	if len(b) < 1 {
		return c, nil, fmt.Errorf("%w: empty challenge", errMalformed)
	}
	c.status = b[0]
	d := decoder{b: b[1:]}
	c.node = string(d.field())
	if d.err != nil {
		return c, nil, d.err
	}
	rest := d.b
	if len(rest) < 8+nonceLen || (len(rest) != 8+nonceLen && len(rest) != 8+nonceLen+macLen) {
		return c, nil, fmt.Errorf("%w: bad challenge", errMalformed)
	}
	c.inc = binary.BigEndian.Uint64(rest)
	copy(c.nonce[:], rest[8:])
	c.mac = rest[8+nonceLen:]
	return c, b[:len(b)-len(c.mac)], nil
}

// transcriptMAC authenticates handshake bytes under the cluster key; label
// separates the roles so one side's MAC is never valid for the other.
func transcriptMAC(key []byte, label string, parts ...[]byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte("soketi-stream/v1 " + label))
	for _, p := range parts {
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(len(p)))
		h.Write(l[:])
		h.Write(p)
	}
	return h.Sum(nil)
}

// sessionAEAD derives the per-connection, per-direction AES-256-GCM key
// from the cluster key and the whole handshake (both fresh nonces in it).
func sessionAEAD(key []byte, dir string, transcript ...[]byte) (cipher.AEAD, error) {
	k := transcriptMAC(key, "key "+dir, transcript...)
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, fmt.Errorf("session key: %w", err)
	}
	return cipher.NewGCM(block)
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
