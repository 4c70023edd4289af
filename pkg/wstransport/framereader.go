package wstransport

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// frameReader reads client WebSocket frames straight from the socket. gobwas
// parses and checks each header (RFC 6455 §5.2, §5.4, §5.5); this type adds
// the message limit, UTF-8 and close-frame rules, and the buffering.
//
// While a connection is idle it holds no buffer, and it waits for data in a
// shallow call so the parked goroutine's stack stays small: this is what
// keeps an idle connection to a few kilobytes.
type frameReader struct {
	nc    net.Conn
	raw   syscall.RawConn // nil (TLS): plain blocking reads
	limit int             // largest message accepted, the sum of its fragments

	buf  []byte  // *bufp while held; nil while idle
	bufp *[]byte // from readBufPool, put back as is: no allocation per release
	r, w int
	hdr  [ws.MaxHeaderSize - 2]byte // gobwas's header scratch: no allocation per frame

	msg   *[]byte   // pooled; a message assembled from fragments or too big for buf
	op    ws.OpCode // opcode of the message being assembled
	state ws.State  // StateServerSide, plus StateFragmented inside a message
}

func newFrameReader(nc net.Conn, raw syscall.RawConn, limit int) *frameReader {
	return &frameReader{nc: nc, raw: raw, limit: limit, state: ws.StateServerSide}
}

// closeError ends a connection with a close code sent to the client.
type closeError struct {
	code   int
	text   string
	reason string // the Metrics.Rejected reason
}

func (e *closeError) Error() string { return e.text }

var (
	errProtocol = &closeError{1002, "protocol error", "bad_frame"}
	errBadUTF8  = &closeError{1007, "invalid UTF-8", "bad_utf8"}
	errTooLarge = &closeError{1009, "message too big", "frame_too_large"}
)

// clientClose reports a valid close frame from the client; code is 1005
// when it carried none.
type clientClose struct{ code int }

func (c *clientClose) Error() string { return "client closed" }

const (
	readBufSize = 4096
	// maxPooledMsg keeps a rare huge message's buffer out of the pool.
	maxPooledMsg = 64 << 10
)

var (
	readBufPool = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}
	msgPool     = sync.Pool{New: func() any { return new([]byte) }}
)

// controlHandler is called for ping and pong frames; payload aliases the read buffer.
type controlHandler func(op ws.OpCode, payload []byte)

// next returns the next complete data message and its opcode. The message
// is valid until the next call: it may alias the read buffer.
func (fr *frameReader) next(control controlHandler) (ws.OpCode, []byte, error) {
	fr.releaseMsg()
	for {
		h, err := ws.ReadHeaderBuffer(fr, fr.hdr[:])
		if err != nil {
			if errors.Is(err, ws.ErrHeaderLengthMSB) {
				return 0, nil, errProtocol
			}
			return 0, nil, err
		}
		// Reserved bits and opcodes, masking, control frame size and
		// fragmentation, continuation order: all protocol errors.
		if ws.CheckHeader(h, fr.state) != nil {
			return 0, nil, errProtocol
		}
		if h.OpCode.IsControl() {
			p, err := fr.payload(int(h.Length)) // at most 125, checked above
			if err != nil {
				return 0, nil, err
			}
			ws.Cipher(p, h.Mask, 0)
			if h.OpCode == ws.OpClose {
				return 0, nil, closeFrame(p)
			}
			control(h.OpCode, p)
			continue
		}

		// h.Length is at most 2^63-1 (gobwas rejects the MSB) and have is at
		// most limit, so neither side of the comparison can overflow.
		have := 0
		if fr.msg != nil {
			have = len(*fr.msg)
		}
		if h.Length > int64(fr.limit-have) {
			return 0, nil, errTooLarge
		}
		n := int(h.Length)
		if h.OpCode != ws.OpContinuation {
			fr.op = h.OpCode
		}
		if h.Fin && !fr.state.Fragmented() && n <= readBufSize {
			// The common case: a whole message in one frame, read in place.
			p, err := fr.payload(n)
			if err != nil {
				return 0, nil, err
			}
			ws.Cipher(p, h.Mask, 0)
			return fr.finish(p)
		}
		if err := fr.appendPayload(n, h.Mask); err != nil {
			return 0, nil, err
		}
		if !h.Fin {
			fr.state = fr.state.Set(ws.StateFragmented)
			continue
		}
		fr.state = fr.state.Clear(ws.StateFragmented)
		return fr.finish(*fr.msg)
	}
}

func (fr *frameReader) finish(msg []byte) (ws.OpCode, []byte, error) {
	if err := checkMessage(fr.op, msg); err != nil {
		return 0, nil, err
	}
	return fr.op, msg, nil
}

// checkMessage applies the rule for a whole data message: text is UTF-8.
// frameReader and frameParser share it.
func checkMessage(op ws.OpCode, msg []byte) error {
	if op == ws.OpText && !utf8.Valid(msg) {
		return errBadUTF8
	}
	return nil
}

// closeFrame checks a close frame's payload (RFC 6455 §5.5.1, §7.4).
func closeFrame(p []byte) error {
	switch {
	case len(p) == 0:
		return &clientClose{code: 1005}
	case len(p) == 1:
		return errProtocol
	}
	code := int(binary.BigEndian.Uint16(p))
	if !validCloseCode(code) {
		return errProtocol
	}
	if !utf8.Valid(p[2:]) {
		return errBadUTF8
	}
	return &clientClose{code: code}
}

// validCloseCode reports whether a peer may send code (RFC 6455 §7.4.1 and
// the IANA registry). Not gobwas's CheckCloseFrameData: it predates the
// registration of 1012-1014 and would refuse them.
func validCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	default:
		return code >= 3000 && code <= 4999
	}
}

// Read serves gobwas's header reads from the buffer.
func (fr *frameReader) Read(p []byte) (int, error) {
	if err := fr.fill(1); err != nil {
		return 0, err
	}
	n := copy(p, fr.buf[fr.r:fr.w])
	fr.r += n
	return n, nil
}

// payload returns the next n bytes in place (n <= readBufSize).
func (fr *frameReader) payload(n int) ([]byte, error) {
	if err := fr.fill(n); err != nil {
		return nil, unexpected(err)
	}
	p := fr.buf[fr.r : fr.r+n]
	fr.r += n
	return p, nil
}

// appendPayload appends n unmasked bytes to the message being assembled. The
// message grows as bytes arrive, never on the length the peer declared.
func (fr *frameReader) appendPayload(n int, mask [4]byte) error {
	if fr.msg == nil {
		fr.msg = msgPool.Get().(*[]byte)
	}
	m := *fr.msg
	start := len(m)
	for n > 0 {
		if err := fr.fill(1); err != nil {
			*fr.msg = m
			return unexpected(err)
		}
		k := min(n, fr.w-fr.r)
		m = append(m, fr.buf[fr.r:fr.r+k]...)
		fr.r += k
		n -= k
	}
	ws.Cipher(m[start:], mask, 0)
	*fr.msg = m
	return nil
}

// unexpected turns an EOF inside a frame into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// fill makes at least n bytes available in buf[r:w] (n <= readBufSize).
func (fr *frameReader) fill(n int) error {
	if fr.w-fr.r >= n {
		return nil
	}
	if fr.r == fr.w {
		fr.releaseBuf()
	}
	if fr.buf == nil {
		if err := fr.waitReadable(); err != nil {
			return err
		}
		fr.bufp = readBufPool.Get().(*[]byte)
		fr.buf = *fr.bufp
		fr.r, fr.w = 0, 0
	}
	if fr.r > 0 && len(fr.buf)-fr.r < n {
		fr.w = copy(fr.buf, fr.buf[fr.r:fr.w])
		fr.r = 0
	}
	for fr.w-fr.r < n {
		m, err := fr.nc.Read(fr.buf[fr.w:])
		fr.w += m
		if err != nil {
			if fr.w-fr.r >= n {
				return nil
			}
			return err
		}
	}
	return nil
}

// release returns both buffers when the connection ends.
func (fr *frameReader) release() {
	fr.releaseBuf()
	fr.releaseMsg()
}

// releaseBuf returns the read buffer once it is empty, so that a connection
// waiting for its next frame holds none.
func (fr *frameReader) releaseBuf() {
	if fr.bufp != nil {
		readBufPool.Put(fr.bufp)
		fr.buf, fr.bufp = nil, nil
		fr.r, fr.w = 0, 0
	}
}

// releaseMsg returns the assembled message's buffer; next calls it first,
// when the caller is done with the previous message.
func (fr *frameReader) releaseMsg() { recycle(&msgPool, &fr.msg) }

// recycle puts *b back in pool, emptied, unless it grew past maxPooledMsg
// (a rare huge message keeps its buffer out of the pool), and clears *b.
func recycle(pool *sync.Pool, b **[]byte) {
	if *b == nil {
		return
	}
	if cap(**b) <= maxPooledMsg {
		**b = (**b)[:0]
		pool.Put(*b)
	}
	*b = nil
}

// waitReadable parks until the socket has data, EOF or an error, without
// holding a buffer. MSG_PEEK checks for data already queued, so an edge that
// arrived earlier is not missed.
func (fr *frameReader) waitReadable() error {
	if fr.raw == nil {
		return nil
	}
	return fr.raw.Read(peekReady)
}

// peekReady captures nothing, so passing it to RawConn.Read does not allocate.
func peekReady(fd uintptr) bool {
	var one [1]byte
	_, _, e := syscall.Recvfrom(int(fd), one[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return e != syscall.EAGAIN && e != syscall.EINTR
}
