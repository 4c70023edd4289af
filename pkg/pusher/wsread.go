package pusher

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"syscall"
	"unicode/utf8"
)

// frameReader reads client WebSocket frames straight from the socket. While a
// connection is idle it holds no read buffer, and it waits for data in a
// shallow call so the parked goroutine's stack stays small: this is what
// keeps an idle connection to a few kilobytes.
type frameReader struct {
	nc    net.Conn
	raw   syscall.RawConn // nil (TLS): plain blocking reads
	limit int             // largest message accepted

	buf  []byte // pooled; nil while idle
	r, w int

	msg    []byte // message being assembled from fragments
	msgOp  byte
	inFrag bool
}

// Errors that end a connection, with the close code the client is sent.
var (
	errFrameTooLarge = &closeError{1009, "message too big"}
	errProtocol      = &closeError{1002, "protocol error"}
	errBadUTF8       = &closeError{1007, "invalid UTF-8"}
)

type closeError struct {
	code int
	text string
}

func (e *closeError) Error() string { return e.text }

// clientClose reports a close frame received from the client.
type clientClose struct{ code int }

func (c *clientClose) Error() string { return "client closed" }

const readBufSize = 4096

var readBufPool = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// control is called for ping and pong frames.
type controlHandler func(op byte, payload []byte)

// next returns the next complete data message (text or binary).
func (fr *frameReader) next(control controlHandler) ([]byte, error) {
	for {
		hdr, err := fr.peekHeader()
		if err != nil {
			return nil, err
		}
		fin := hdr.b0&0x80 != 0
		op := hdr.b0 & 0x0F
		if hdr.b0&0x70 != 0 || !hdr.masked {
			return nil, errProtocol
		}
		isControl := op >= 0x8
		if isControl && (!fin || hdr.length > 125) {
			return nil, errProtocol
		}
		if !isControl && uint64(len(fr.msg))+hdr.length > uint64(fr.limit) {
			return nil, errFrameTooLarge
		}
		payload, err := fr.readPayload(hdr)
		if err != nil {
			return nil, err
		}
		switch op {
		case opPing, opPong:
			control(op, payload)
			continue
		case opClose:
			code := 1005
			if len(payload) >= 2 {
				code = int(binary.BigEndian.Uint16(payload))
			}
			return nil, &clientClose{code: code}
		case 0x1, 0x2:
			if fr.inFrag {
				return nil, errProtocol
			}
			if fin {
				out := make([]byte, len(payload))
				copy(out, payload)
				return fr.finish(op, out)
			}
			fr.inFrag, fr.msgOp = true, op
			fr.msg = append(fr.msg[:0], payload...)
		case 0x0:
			if !fr.inFrag {
				return nil, errProtocol
			}
			fr.msg = append(fr.msg, payload...)
			if fin {
				out := fr.msg
				fr.msg, fr.inFrag = nil, false
				return fr.finish(fr.msgOp, out)
			}
		default:
			return nil, errProtocol
		}
	}
}

func (fr *frameReader) finish(op byte, msg []byte) ([]byte, error) {
	if fr.r == fr.w {
		fr.release()
	}
	if op == 0x1 && !utf8.Valid(msg) {
		return nil, errBadUTF8
	}
	return msg, nil
}

type frameHeader struct {
	b0     byte
	masked bool
	length uint64
	mask   [4]byte
}

func (fr *frameReader) peekHeader() (frameHeader, error) {
	var h frameHeader
	if err := fr.fill(2); err != nil {
		return h, err
	}
	b := fr.buf[fr.r:fr.w]
	h.b0 = b[0]
	h.masked = b[1]&0x80 != 0
	n := 2
	switch l := b[1] & 0x7F; l {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if h.masked {
		n += 4
	}
	if err := fr.fill(n); err != nil {
		return h, err
	}
	b = fr.buf[fr.r:fr.w]
	switch l := b[1] & 0x7F; l {
	case 126:
		h.length = uint64(binary.BigEndian.Uint16(b[2:]))
	case 127:
		h.length = binary.BigEndian.Uint64(b[2:])
	default:
		h.length = uint64(l)
	}
	if h.masked {
		copy(h.mask[:], b[n-4:n])
	}
	fr.r += n
	return h, nil
}

// readPayload returns the unmasked payload; it aliases the read buffer for
// frames that fit in it, so callers copy what they keep.
func (fr *frameReader) readPayload(h frameHeader) ([]byte, error) {
	n := int(h.length)
	var p []byte
	if n <= readBufSize {
		if err := fr.fill(n); err != nil {
			return nil, err
		}
		p = fr.buf[fr.r : fr.r+n]
		fr.r += n
	} else {
		p = make([]byte, n)
		copied := copy(p, fr.buf[fr.r:fr.w])
		fr.r += copied
		if _, err := io.ReadFull(fr.nc, p[copied:]); err != nil {
			return nil, err
		}
	}
	for i := range p {
		p[i] ^= h.mask[i&3]
	}
	return p, nil
}

// fill makes at least n bytes available in buf[r:w] (n <= readBufSize).
func (fr *frameReader) fill(n int) error {
	if fr.w-fr.r >= n {
		return nil
	}
	if fr.r == fr.w {
		fr.release()
	}
	if fr.buf == nil {
		if err := fr.waitReadable(); err != nil {
			return err
		}
		fr.buf = *readBufPool.Get().(*[]byte)
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

// release returns the read buffer while the connection is idle.
func (fr *frameReader) release() {
	if fr.buf != nil {
		b := fr.buf
		fr.buf = nil
		fr.r, fr.w = 0, 0
		readBufPool.Put(&b)
	}
}

// waitReadable parks until the socket has data, EOF or an error, without
// holding a buffer. MSG_PEEK checks for data already queued, so an edge that
// arrived earlier is not missed.
func (fr *frameReader) waitReadable() error {
	if fr.raw == nil {
		return nil
	}
	var one [1]byte
	return fr.raw.Read(func(fd uintptr) bool {
		_, _, e := syscall.Recvfrom(int(fd), one[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return e != syscall.EAGAIN && e != syscall.EINTR
	})
}
