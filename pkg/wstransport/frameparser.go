package wstransport

import (
	"bytes"
	"errors"
	"io"
	"sync"

	"github.com/gobwas/ws"
)

// frameParser is frameReader's counterpart for the event loop: the poller
// hands it whatever bytes arrived, and it passes on each complete frame.
// The rules are frameReader's (gobwas parses and checks each header; the
// message limit, closeFrame and checkMessage).
//
// Between frames it holds no buffer. The bytes of an incomplete frame are
// kept, but a frame's declared length is checked against the limit before
// its payload is waited for, so what is kept never exceeds a header plus
// the limit.
type frameParser struct {
	limit   int
	pending *[]byte // an incomplete frame's bytes; nil between frames
	br      bytes.Reader
	hdr     [ws.MaxHeaderSize - 2]byte

	msg   *[]byte   // pooled; a message assembled from fragments
	op    ws.OpCode // opcode of the message being assembled
	state ws.State  // StateServerSide, plus StateFragmented inside a message
}

func newFrameParser(limit int) frameParser {
	return frameParser{limit: limit, state: ws.StateServerSide}
}

// frameSink receives what the parser finds. Payloads alias the input: they
// are valid only during the call.
type frameSink interface {
	control(op ws.OpCode, payload []byte)
	message(op ws.OpCode, msg []byte)
}

var pendingPool = sync.Pool{New: func() any { return new([]byte) }}

// feed parses data after what was kept from earlier calls. It returns the
// error that ends the connection: a *closeError, or a *clientClose for the
// client's valid close frame.
func (p *frameParser) feed(data []byte, sink frameSink) error {
	buf := data
	if p.pending != nil {
		*p.pending = append(*p.pending, data...)
		buf = *p.pending
	}
	for len(buf) > 0 {
		n, err := p.frame(buf, sink)
		if err != nil {
			p.release()
			return err
		}
		if n == 0 {
			break // the rest of a frame is still to come
		}
		buf = buf[n:]
	}
	switch {
	case len(buf) == 0:
		p.releasePending()
	case p.pending == nil:
		p.pending = pendingPool.Get().(*[]byte)
		*p.pending = append((*p.pending)[:0], buf...)
	default: // buf is the tail of *p.pending; copy handles the overlap
		*p.pending = (*p.pending)[:copy(*p.pending, buf)]
	}
	return nil
}

// frame handles the frame at the start of buf and returns its size, or 0
// if buf does not hold all of it yet.
func (p *frameParser) frame(buf []byte, sink frameSink) (int, error) {
	p.br.Reset(buf)
	h, err := ws.ReadHeaderBuffer(&p.br, p.hdr[:])
	switch {
	case err == nil:
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return 0, nil
	default: // a 64-bit length with its MSB set, and the like
		return 0, errProtocol
	}
	// Reserved bits and opcodes, masking, control frame size and
	// fragmentation, continuation order: all protocol errors.
	if ws.CheckHeader(h, p.state) != nil {
		return 0, errProtocol
	}
	hlen := len(buf) - p.br.Len()
	if !h.OpCode.IsControl() {
		// h.Length is at most 2^63-1 (gobwas rejects the MSB) and have is
		// at most limit, so neither side can overflow. Checked before the
		// payload arrives: a declared length alone decides.
		have := 0
		if p.msg != nil {
			have = len(*p.msg)
		}
		if h.Length > int64(p.limit-have) {
			return 0, errTooLarge
		}
	}
	size := hlen + int(h.Length) // control payloads are at most 125
	if len(buf) < size {
		return 0, nil
	}
	payload := buf[hlen:size]
	ws.Cipher(payload, h.Mask, 0)

	if h.OpCode.IsControl() {
		if h.OpCode == ws.OpClose {
			return 0, closeFrame(payload)
		}
		sink.control(h.OpCode, payload)
		return size, nil
	}
	if h.OpCode != ws.OpContinuation {
		p.op = h.OpCode
	}
	if h.Fin && !p.state.Fragmented() {
		// The common case: a whole message in one frame, passed in place.
		if err := checkMessage(p.op, payload); err != nil {
			return 0, err
		}
		sink.message(p.op, payload)
		return size, nil
	}
	if p.msg == nil {
		p.msg = msgPool.Get().(*[]byte)
	}
	*p.msg = append(*p.msg, payload...)
	if !h.Fin {
		p.state = p.state.Set(ws.StateFragmented)
		return size, nil
	}
	p.state = p.state.Clear(ws.StateFragmented)
	if err := checkMessage(p.op, *p.msg); err != nil {
		return 0, err
	}
	sink.message(p.op, *p.msg)
	p.releaseMsg()
	return size, nil
}

// release returns both buffers when the connection ends.
func (p *frameParser) release() {
	p.releasePending()
	p.releaseMsg()
}

func (p *frameParser) releasePending() { recycle(&pendingPool, &p.pending) }

func (p *frameParser) releaseMsg() { recycle(&msgPool, &p.msg) }
