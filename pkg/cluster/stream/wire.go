package stream

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"slices"
	"time"
)

// After the handshake a connection carries records: a 4-byte big-endian
// body length, then the body. A body holds one or more frames, so a batch
// of messages costs one write.
const (
	recordHeaderLen = 4
	// batchBytes cuts a record; a single larger message gets its own record.
	batchBytes       = 256 << 10
	maxFrameOverhead = 1 + 2*binary.MaxVarintLen64
	maxRecordSize    = MaxMessageSize + maxFrameOverhead
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

// recordWriter builds records in buf and writes them through a bufio.Writer;
// flush pushes them to the connection.
type recordWriter struct {
	conn    net.Conn
	bw      *bufio.Writer
	buf     []byte
	timeout time.Duration
}

func newRecordWriter(conn net.Conn, timeout time.Duration) *recordWriter {
	return &recordWriter{conn: conn, bw: bufio.NewWriterSize(conn, ioBuffer), timeout: timeout}
}

func (w *recordWriter) begin() { w.buf = append(w.buf[:0], 0, 0, 0, 0) }

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

// finish frames the record and hands it to the bufio.Writer.
func (w *recordWriter) finish() error {
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

// recordReader returns record bodies. A body is valid until the next call.
type recordReader struct {
	conn    net.Conn
	br      *bufio.Reader
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
	if n > maxRecordSize {
		return nil, fmt.Errorf("%w: record of %d bytes", errMalformed, n)
	}
	buf := r.buf[:0]
	if cap(buf) > bufferKeep && n <= batchBytes {
		buf = nil
	}
	// The buffer grows as the body arrives, at most doubling, so a header
	// that announces a huge record costs memory only for bytes really sent.
	for len(buf) < n {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(n-len(buf), max(len(buf), ioBuffer)))
		}
		k, err := io.ReadFull(r.br, buf[len(buf):min(n, cap(buf))])
		buf = buf[:len(buf)+k]
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	r.buf = buf
	return buf, nil
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
