package wstransport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// readStream reads stream to its end through a frameReader that gets at
// most chunk bytes per read.
func readStream(stream []byte, chunk, limit int) (msgs []string, controls int, err error) {
	fr := newFrameReader(&bytesConn{r: bytes.NewReader(stream), chunk: chunk}, nil, limit)
	defer fr.release()
	for {
		_, m, e := fr.next(func(ws.OpCode, []byte) { controls++ })
		if e != nil {
			return msgs, controls, e
		}
		msgs = append(msgs, string(m))
	}
}

func TestFrameReader_EdgeCases(t *testing.T) {
	for _, limit := range []int{testLimit, fuzzLimit} {
		for _, tc := range edgeCases(limit) {
			testEdgeCase(t, tc, limit)
		}
	}
}

func testEdgeCase(t *testing.T, tc edgeCase, limit int) {
	t.Helper()
	for _, chunk := range []int{1, 7, 4096, 1 << 20} {
		if chunk == 1 && len(tc.stream) > 10_000 {
			continue // slow, and 7 covers the same splits
		}
		msgs, _, err := readStream(tc.stream, chunk, limit)
		if got := outcome(err); got != tc.want {
			t.Errorf("%s (limit %d, chunk %d): %s, want %s", tc.name, limit, chunk, got, tc.want)
		}
		if len(msgs) != len(tc.msgs) {
			t.Errorf("%s (limit %d, chunk %d): %d messages, want %d", tc.name, limit, chunk, len(msgs), len(tc.msgs))
			continue
		}
		for i := range msgs {
			if msgs[i] != tc.msgs[i] {
				t.Errorf("%s (limit %d, chunk %d): message %d = %.20q (%d bytes), want %.20q",
					tc.name, limit, chunk, i, msgs[i], len(msgs[i]), tc.msgs[i])
			}
		}
	}
}

func TestFrameReader_ControlFramesReachTheHandler(t *testing.T) {
	stream := concat(clientFrame(false, 0x1, []byte("a")), clientFrame(true, 0x9, []byte("ping")),
		clientFrame(true, 0xA, []byte("pong")), clientFrame(true, 0x0, []byte("b")))
	fr := newFrameReader(&bytesConn{r: bytes.NewReader(stream), chunk: 3}, nil, 100)
	var got []string
	op, msg, err := fr.next(func(op ws.OpCode, p []byte) { got = append(got, fmt.Sprintf("%d:%s", op, p)) })
	if err != nil || op != ws.OpText || string(msg) != "ab" {
		t.Fatalf("next = %v %q %v", op, msg, err)
	}
	if strings.Join(got, ",") != "9:ping,10:pong" {
		t.Fatalf("controls %q", got)
	}
}

// fakeRawConn stands in for the socket's RawConn: Read is the idle park.
type fakeRawConn struct{ onPark func() }

func (f fakeRawConn) Control(func(uintptr)) error   { return nil }
func (f fakeRawConn) Read(func(uintptr) bool) error { f.onPark(); return nil }
func (f fakeRawConn) Write(func(uintptr) bool) error {
	return errors.New("not a socket")
}

// The reader parks only without a buffer: an idle connection holds none,
// neither the read buffer nor the last message's.
func TestFrameReader_HoldsNoBufferWhileParked(t *testing.T) {
	stream := concat(text("a"), clientFrame(false, 0x1, []byte("b")), clientFrame(true, 0x0, []byte("c")))
	var fr *frameReader
	parks := 0
	raw := fakeRawConn{onPark: func() {
		parks++
		// Only a message still arriving in fragments keeps its buffer.
		if fr.buf != nil || (fr.msg != nil && !fr.state.Fragmented()) {
			t.Errorf("park %d with a buffer held", parks)
		}
	}}
	// One frame per read, so that the reader runs dry after each.
	fr = newFrameReader(&bytesConn{r: bytes.NewReader(stream), chunk: 7}, raw, 100)
	for _, want := range []string{"a", "bc"} {
		if _, m, err := fr.next(func(ws.OpCode, []byte) {}); err != nil || string(m) != want {
			t.Fatalf("next = %q, %v; want %q", m, err, want)
		}
	}
	if _, _, err := fr.next(func(ws.OpCode, []byte) {}); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
	if parks != 4 {
		t.Fatalf("%d parks, want one per frame and one at the end", parks)
	}
	fr.release()
	if fr.buf != nil || fr.msg != nil {
		t.Fatal("buffers held after release")
	}
}

// expectedFirst is an independent reading of the first frame's header: the
// outcome RFC 6455 requires for it, or "" when it is valid or cut short.
func expectedFirst(stream []byte, limit int) string {
	if len(stream) < 2 {
		return ""
	}
	b0, b1 := stream[0], stream[1]
	n := 2 + map[byte]int{126: 2, 127: 8}[b1&0x7f]
	if b1&0x80 != 0 {
		n += 4
	}
	if len(stream) < n {
		return ""
	}
	length := uint64(b1 & 0x7f)
	switch b1 & 0x7f {
	case 126:
		length = uint64(binary.BigEndian.Uint16(stream[2:]))
	case 127:
		length = binary.BigEndian.Uint64(stream[2:])
	}
	op := b0 & 0x0f
	control := op >= 0x8
	switch {
	case length >= 1<<63, b0&0x70 != 0, b1&0x80 == 0, op >= 0x3 && op <= 0x7, op >= 0xB,
		op == 0x0, control && (b0&0x80 == 0 || length > 125):
		return "fail 1002"
	case !control && length > uint64(limit):
		return "fail 1009"
	}
	return ""
}

// FuzzFrameReader reads arbitrary input: it never panics, never returns a
// message past the limit or a text message that is not UTF-8, ends only in
// the close codes RFC 6455 names for each fault, and gives the outcome an
// independent reading of the first header expects.
func FuzzFrameReader(f *testing.F) {
	for _, tc := range edgeCases(fuzzLimit) {
		seed := tc.stream
		if len(seed) > 3*fuzzLimit {
			seed = seed[:64] // 64 KiB lengths: these fail at the header anyway
		}
		f.Add(seed, uint8(5))
	}
	f.Add(concat(text(`{"event":"pusher:ping"}`), clientFrame(true, 0x9, nil)), uint8(1))
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		fr := newFrameReader(&bytesConn{r: bytes.NewReader(stream), chunk: int(chunk) + 1}, nil, fuzzLimit)
		defer fr.release()
		var err error
		for i := 0; ; i++ {
			var op ws.OpCode
			var m []byte
			op, m, err = fr.next(func(op ws.OpCode, p []byte) {
				if (op != ws.OpPing && op != ws.OpPong) || len(p) > 125 {
					t.Fatalf("control %v of %d bytes", op, len(p))
				}
			})
			if err != nil {
				break
			}
			if len(m) > fuzzLimit {
				t.Fatalf("message of %d bytes over the limit", len(m))
			}
			if op == ws.OpText && !utf8.Valid(m) {
				t.Fatal("text message not UTF-8")
			}
			if op != ws.OpText && op != ws.OpBinary {
				t.Fatalf("data message with opcode %v", op)
			}
			if i == 0 && expectedFirst(stream, fuzzLimit) != "" {
				t.Fatalf("first frame accepted, want %s", expectedFirst(stream, fuzzLimit))
			}
		}
		got := outcome(err)
		switch got {
		case "eof", "truncated", "fail 1002", "fail 1007", "fail 1009", "close 1005":
		default:
			var cc *clientClose
			if !errors.As(err, &cc) || !validCloseCode(cc.code) {
				t.Fatalf("read ended with %s", got)
			}
		}
		if want := expectedFirst(stream, fuzzLimit); want != "" && got != want {
			t.Fatalf("first frame: %s, want %s", got, want)
		}
	})
}

// loopConn replays one stream of frames forever.
type loopConn struct {
	net.Conn
	stream []byte
	off    int
}

func (l *loopConn) Read(p []byte) (int, error) {
	n := copy(p, l.stream[l.off:])
	l.off = (l.off + n) % len(l.stream)
	return n, nil
}

// BenchmarkFrameReader reports the allocations per message read:
// go test -run '^$' -bench FrameReader -benchmem ./pkg/wstransport/
func BenchmarkFrameReader(b *testing.B) {
	small := text(`{"event":"pusher:ping","data":{}}`)
	fragmented := concat(clientFrame(false, 0x1, []byte(`{"event":"client-x",`)),
		clientFrame(true, 0x9, nil), clientFrame(false, 0x0, []byte(`"channel":"private-a",`)),
		clientFrame(true, 0x0, []byte(`"data":{"n":1}}`)))
	large := text(`{"event":"client-x","data":"` + strings.Repeat("x", 20_000) + `"}`)
	for _, bc := range []struct {
		name   string
		stream []byte
	}{{"small_text", small}, {"fragmented", fragmented}, {"large_20KB", large}} {
		b.Run(bc.name, func(b *testing.B) {
			fr := newFrameReader(&loopConn{stream: bc.stream}, nil, testLimit)
			defer fr.release()
			control := func(ws.OpCode, []byte) {}
			b.SetBytes(int64(len(bc.stream)))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := fr.next(control); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
