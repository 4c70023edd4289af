package pusher

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
)

// bytesConn is a net.Conn that reads from a buffer in small chunks, to
// exercise partial reads.
type bytesConn struct {
	net.Conn
	r     *bytes.Reader
	chunk int
}

func (b *bytesConn) Read(p []byte) (int, error) {
	if len(p) > b.chunk {
		p = p[:b.chunk]
	}
	return b.r.Read(p)
}

// clientFrame builds a masked client frame.
func clientFrame(fin bool, op byte, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	n := len(payload)
	switch {
	case n < 126:
		out = append(out, 0x80|byte(n))
	case n <= 0xFFFF:
		out = append(out, 0x80|126, byte(n>>8), byte(n))
	default:
		var l [8]byte
		binary.BigEndian.PutUint64(l[:], uint64(n))
		out = append(append(out, 0x80|127), l[:]...)
	}
	mask := [4]byte{1, 2, 3, 4}
	out = append(out, mask[:]...)
	for i, c := range payload {
		out = append(out, c^mask[i&3])
	}
	return out
}

func readAll(t *testing.T, stream []byte, chunk, limit int) (msgs []string, controls []byte, err error) {
	t.Helper()
	fr := &frameReader{nc: &bytesConn{r: bytes.NewReader(stream), chunk: chunk}, limit: limit}
	for {
		m, e := fr.next(func(op byte, _ []byte) { controls = append(controls, op) })
		if e != nil {
			return msgs, controls, e
		}
		msgs = append(msgs, string(m))
	}
}

func TestFrameReader(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 70_000)
	cases := []struct {
		name     string
		stream   []byte
		msgs     []string
		controls []byte
		err      error // nil means io.EOF
	}{
		{"one text", clientFrame(true, 1, []byte(`{"a":1}`)), []string{`{"a":1}`}, nil, nil},
		{"two in a row", append(clientFrame(true, 1, []byte("a")), clientFrame(true, 2, []byte("b"))...), []string{"a", "b"}, nil, nil},
		{"16-bit length", clientFrame(true, 1, bytes.Repeat([]byte("y"), 300)), []string{string(bytes.Repeat([]byte("y"), 300))}, nil, nil},
		{"64-bit length", clientFrame(true, 1, big), []string{string(big)}, nil, nil},
		{"fragments with a ping between", concat(clientFrame(false, 1, []byte("he")), clientFrame(true, 9, []byte("p")),
			clientFrame(true, 0, []byte("llo"))), []string{"hello"}, []byte{opPing}, nil},
		{"close", clientFrame(true, 8, []byte{0x03, 0xE8}), nil, nil, &clientClose{}},
		{"unmasked", []byte{0x81, 0x01, 'a'}, nil, nil, errProtocol},
		{"reserved bits", func() []byte { f := clientFrame(true, 1, []byte("a")); f[0] |= 0x40; return f }(), nil, nil, errProtocol},
		{"long control", clientFrame(true, 9, bytes.Repeat([]byte("p"), 126)), nil, nil, errProtocol},
		{"fragmented control", clientFrame(false, 9, []byte("p")), nil, nil, errProtocol},
		{"continuation first", clientFrame(true, 0, []byte("a")), nil, nil, errProtocol},
		{"unknown opcode", clientFrame(true, 3, []byte("a")), nil, nil, errProtocol},
		{"too big", clientFrame(true, 1, bytes.Repeat([]byte("z"), 2000)), nil, nil, errFrameTooLarge},
		{"too big in fragments", concat(clientFrame(false, 1, bytes.Repeat([]byte("z"), 600)),
			clientFrame(true, 0, bytes.Repeat([]byte("z"), 600))), nil, nil, errFrameTooLarge},
		{"bad utf-8", clientFrame(true, 1, []byte{0xff, 0xfe}), nil, nil, errBadUTF8},
		{"truncated", clientFrame(true, 1, []byte("abcdef"))[:8], nil, nil, io.ErrUnexpectedEOF},
	}
	for _, tc := range cases {
		for _, chunk := range []int{1, 7, 4096} {
			limit := 1024
			if tc.name == "64-bit length" {
				limit = 100_000
			}
			msgs, controls, err := readAll(t, tc.stream, chunk, limit)
			if tc.err == nil && !errors.Is(err, io.EOF) {
				t.Errorf("%s/%d: err %v, want EOF", tc.name, chunk, err)
			}
			if tc.err != nil {
				var cc *clientClose
				switch {
				case errors.As(tc.err, &cc):
					if !errors.As(err, &cc) || cc.code != 1000 {
						t.Errorf("%s/%d: err %v, want client close 1000", tc.name, chunk, err)
					}
				case tc.err == io.ErrUnexpectedEOF:
					if err != io.EOF && err != io.ErrUnexpectedEOF {
						t.Errorf("%s/%d: err %v, want EOF", tc.name, chunk, err)
					}
				case err != tc.err:
					t.Errorf("%s/%d: err %v, want %v", tc.name, chunk, err, tc.err)
				}
			}
			if len(msgs) != len(tc.msgs) || (len(msgs) > 0 && msgs[0] != tc.msgs[0]) || string(controls) != string(tc.controls) {
				t.Errorf("%s/%d: msgs %d %q controls %v", tc.name, chunk, len(msgs), trunc(msgs), controls)
			}
		}
	}
}

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func trunc(m []string) []string {
	out := make([]string, len(m))
	for i, s := range m {
		out[i] = truncate(s, 20)
	}
	return out
}

// The reader gives its buffer back between messages, so an idle connection holds none.
func TestFrameReader_ReleasesBufferWhenIdle(t *testing.T) {
	fr := &frameReader{nc: &bytesConn{r: bytes.NewReader(clientFrame(true, 1, []byte("a"))), chunk: 4096}, limit: 1024}
	if _, err := fr.next(func(byte, []byte) {}); err != nil {
		t.Fatal(err)
	}
	if fr.buf != nil {
		t.Fatal("buffer held after the last buffered message")
	}
}

func FuzzFrameReader(f *testing.F) {
	f.Add(clientFrame(true, 1, []byte(`{"event":"pusher:ping"}`)))
	f.Add(concat(clientFrame(false, 1, []byte("a")), clientFrame(true, 10, nil), clientFrame(true, 0, []byte("b"))))
	f.Add(clientFrame(true, 8, []byte{0x0f, 0xa0, 'x'}))
	f.Add([]byte{0x81, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, stream []byte) {
		fr := &frameReader{nc: &bytesConn{r: bytes.NewReader(stream), chunk: 5}, limit: 4096}
		for i := 0; i < 1000; i++ {
			m, err := fr.next(func(op byte, p []byte) {
				if len(p) > 125 {
					t.Fatalf("control payload of %d bytes", len(p))
				}
			})
			if err != nil {
				return
			}
			if len(m) > 4096 {
				t.Fatalf("message of %d bytes over the limit", len(m))
			}
		}
	})
}
