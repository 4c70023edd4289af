package pusher

import "encoding/binary"

// WebSocket opcodes used by the server.
const (
	opText  = 0x1
	opClose = 0x8
	opPong  = 0xA
)

// Frame is a complete server-to-client WebSocket frame. Server frames are never
// masked, so one Frame is written unchanged to every recipient of a message.
type Frame []byte

// Payload is the frame without its WebSocket header: the message text.
func (f Frame) Payload() []byte {
	switch n := f[1] & 0x7F; {
	case n < 126:
		return f[2:]
	case n == 126:
		return f[4:]
	default:
		return f[10:]
	}
}

// TextFrame frames payload as a single final text frame.
func TextFrame(payload []byte) Frame { return buildFrame(opText, payload) }

// PongFrame answers a client's ping with its payload (at most 125 bytes).
func PongFrame(payload []byte) Frame { return buildFrame(opPong, payload) }

// CloseFrame builds a close frame with a status code and reason (truncated to fit 125 bytes).
func CloseFrame(code int, reason string) Frame {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	p := make([]byte, 2+len(reason))
	binary.BigEndian.PutUint16(p, uint16(code))
	copy(p[2:], reason)
	return buildFrame(opClose, p)
}

func buildFrame(op byte, payload []byte) Frame {
	n := len(payload)
	var hdr [10]byte
	hdr[0] = 0x80 | op
	h := 2
	switch {
	case n < 126:
		hdr[1] = byte(n)
	case n <= 0xFFFF:
		hdr[1] = 126
		binary.BigEndian.PutUint16(hdr[2:], uint16(n))
		h = 4
	default:
		hdr[1] = 127
		binary.BigEndian.PutUint64(hdr[2:], uint64(n))
		h = 10
	}
	f := make([]byte, h+n)
	copy(f, hdr[:h])
	copy(f[h:], payload)
	return f
}
