package stream

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Kind says what a Message asks the receiving node to do.
type Kind = uint8

const (
	// KindPublish fans Payload out to the local subscribers of Channel,
	// skipping the socket whose id is Except.
	KindPublish Kind = 1
	// KindToUser sends Payload to every local connection of the user whose
	// id is in Channel.
	KindToUser Kind = 2
	// KindTerminateUser disconnects every local connection of the user whose
	// id is in Channel.
	KindTerminateUser Kind = 3
	// KindControl carries small JSON between adapters (for example per-node
	// socket counts per app); Channel may name the control message type.
	KindControl Kind = 4
)

// MaxMessageSize caps an encoded Message. Send refuses larger messages and a
// receiver closes a connection that announces one.
const MaxMessageSize = 16 << 20

var (
	// ErrInvalidMessage is returned by Send for a zero Kind or a message
	// whose encoding exceeds MaxMessageSize.
	ErrInvalidMessage = errors.New("stream: invalid message")
	// errMalformed reports bytes that do not decode; the connection carrying
	// them is closed.
	errMalformed = errors.New("stream: malformed data")
)

// Message is one unit of the data plane. Kinds other than the ones defined
// here are carried unchanged, so a newer node can add kinds; deliver
// callbacks should ignore kinds they do not know.
type Message struct {
	Kind    Kind
	App     string
	Channel string
	Except  string
	Payload []byte
}

// encodedSize is the exact length of appendMessage's output.
func encodedSize(m Message) int {
	return 1 + uvarintLen(uint64(len(m.App))) + len(m.App) +
		uvarintLen(uint64(len(m.Channel))) + len(m.Channel) +
		uvarintLen(uint64(len(m.Except))) + len(m.Except) +
		uvarintLen(uint64(len(m.Payload))) + len(m.Payload)
}

// encodeMessage validates m and returns its encoding:
// kind byte, then App, Channel, Except and Payload, each uvarint-length-prefixed.
func encodeMessage(m Message) ([]byte, error) {
	if m.Kind == 0 {
		return nil, fmt.Errorf("%w: zero kind", ErrInvalidMessage)
	}
	n := encodedSize(m)
	if n > MaxMessageSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrInvalidMessage, n, MaxMessageSize)
	}
	return appendMessage(make([]byte, 0, n), m), nil
}

func appendMessage(dst []byte, m Message) []byte {
	dst = append(dst, m.Kind)
	dst = appendString(dst, m.App)
	dst = appendString(dst, m.Channel)
	dst = appendString(dst, m.Except)
	dst = binary.AppendUvarint(dst, uint64(len(m.Payload)))
	return append(dst, m.Payload...)
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// decodeMessage parses exactly one encoded message. The result shares no
// memory with b, so the deliver callback may keep it.
func decodeMessage(b []byte) (Message, error) {
	if len(b) > MaxMessageSize {
		return Message{}, fmt.Errorf("%w: message of %d bytes", errMalformed, len(b))
	}
	if len(b) == 0 || b[0] == 0 {
		return Message{}, fmt.Errorf("%w: missing kind", errMalformed)
	}
	d := decoder{b: b[1:]}
	m := Message{Kind: b[0]}
	m.App = string(d.field())
	m.Channel = string(d.field())
	m.Except = string(d.field())
	if p := d.field(); len(p) > 0 {
		m.Payload = append([]byte(nil), p...)
	}
	if d.err != nil {
		return Message{}, d.err
	}
	if len(d.b) != 0 {
		return Message{}, fmt.Errorf("%w: %d trailing bytes", errMalformed, len(d.b))
	}
	return m, nil
}

// decoder reads uvarint-prefixed fields, remembering the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: bad varint", errMalformed)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) field() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = fmt.Errorf("%w: field of %d bytes, %d left", errMalformed, n, len(d.b))
		return nil
	}
	f := d.b[:n]
	d.b = d.b[n:]
	return f
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}
