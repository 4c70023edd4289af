package wstransport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
)

// Client frames for the tests, built by hand so that a case can break any rule.

var testMask = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// clientFrame builds a masked client frame with the shortest length encoding.
func clientFrame(fin bool, op byte, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	out := header(b0, uint64(len(payload)), true)
	for i, c := range payload {
		out = append(out, c^testMask[i&3])
	}
	return out
}

// header builds a frame header declaring length, with the shortest encoding.
func header(b0 byte, length uint64, masked bool) []byte {
	var m byte
	if masked {
		m = 0x80
	}
	out := []byte{b0}
	switch {
	case length < 126:
		out = append(out, m|byte(length))
	case length <= 0xFFFF:
		out = append(out, m|126, byte(length>>8), byte(length))
	default:
		out = append(out, m|127)
		out = binary.BigEndian.AppendUint64(out, length)
	}
	if masked {
		out = append(out, testMask[:]...)
	}
	return out
}

// unmasked builds a frame a client must not send: no mask.
func unmasked(b0 byte, payload []byte) []byte {
	return append(header(b0, uint64(len(payload)), false), payload...)
}

// withB0 returns f with its first byte changed (reserved bits, opcode).
func withB0(f []byte, b0 byte) []byte {
	f = bytes.Clone(f)
	f[0] = b0
	return f
}

func closePayload(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func text(s string) []byte { return clientFrame(true, 0x1, []byte(s)) }

// bytesConn is a net.Conn that reads a buffer in chunks, to exercise
// partial reads.
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

// outcome names how a read ended, as the edge-case table spells it.
func outcome(err error) string {
	var ce *closeError
	var cc *clientClose
	switch {
	case err == io.EOF:
		return "eof"
	case err == io.ErrUnexpectedEOF:
		return "truncated"
	case errors.As(err, &ce):
		return fmt.Sprintf("fail %d", ce.code)
	case errors.As(err, &cc):
		return fmt.Sprintf("close %d", cc.code)
	default:
		return "error " + err.Error()
	}
}

// The message limits the edge cases run with: testLimit is past 65536, so
// that every length encoding fits under it; fuzzLimit keeps the fuzzer's
// inputs small while still past the read buffer.
const (
	testLimit = 70_000
	fuzzLimit = 5_000
)

type edgeCase struct {
	name   string
	stream []byte
	want   string   // outcome after the messages
	msgs   []string // the messages expected first; nil means none
}

// edgeCases lists every framing edge case, valid and not, for a reader
// limited to limit bytes; they are the unit tests, the fuzz seeds and, sent
// on a real socket, the hostile-client tests.
func edgeCases(limit int) []edgeCase {
	a := func(n int) string { return strings.Repeat("a", n) }
	ok := func(name string, payload string) edgeCase {
		if len(payload) > limit {
			return edgeCase{name, text(payload), "fail 1009", nil}
		}
		return edgeCase{name, text(payload), "eof", []string{payload}}
	}
	cases := []edgeCase{
		// Lengths at and past each bound of the 7-, 16- and 64-bit encodings.
		ok("7-bit 0", ""),
		ok("7-bit 125", a(125)),
		ok("16-bit 126", a(126)),
		ok("16-bit 65535", a(65535)),
		ok("64-bit 65536", a(65536)),
		ok("limit-1", a(limit-1)),
		ok("limit", a(limit)),
		{"limit+1", text(a(limit + 1)), "fail 1009", nil},
		{"64-bit 2^63-1 declared", header(0x81, 1<<63-1, true), "fail 1009", nil},
		{"64-bit 2^63", header(0x81, 1<<63, true), "fail 1002", nil},
		{"64-bit 2^64-1", header(0x81, 1<<64-1, true), "fail 1002", nil},
		{"16-bit encoding of 5 bytes", concat([]byte{0x81, 0x80 | 126, 0, 5}, testMask[:],
			text("hello")[6:]), "eof", []string{"hello"}}, // not the shortest form: accepted, as gorilla and gobwas do

		// Fragments whose sum passes the limit or overflows.
		{"attack: continuation of 2^64-1", concat(clientFrame(false, 0x1, []byte("{")),
			header(0x80, 1<<64-1, true)), "fail 1002", nil},
		{"continuation of 2^63-1 after 5 bytes", concat(clientFrame(false, 0x1, []byte("12345")),
			header(0x80, 1<<63-1, true)), "fail 1009", nil},
		{"continuation of 2^63-1 unmasked", concat(clientFrame(false, 0x1, []byte("1")),
			header(0x80, 1<<63-1, false)), "fail 1002", nil},
		{"fragments summing to the limit", concat(clientFrame(false, 0x1, []byte(a(limit-100))),
			clientFrame(true, 0x0, []byte(a(100)))), "eof", []string{a(limit)}},
		{"fragments summing to limit+1", concat(clientFrame(false, 0x1, []byte(a(limit-100))),
			clientFrame(true, 0x0, []byte(a(101)))), "fail 1009", nil},
		{"fragments of 16-bit lengths past the limit", concat(clientFrame(false, 0x1, []byte(a(limit-10))),
			header(0x80, 65535, true)), "fail 1009", nil},
		{"empty fragments", concat(clientFrame(false, 0x1, nil), clientFrame(false, 0x0, nil),
			clientFrame(true, 0x0, nil)), "eof", []string{""}},
		{"fragmented binary", concat(clientFrame(false, 0x2, []byte{0xff}), clientFrame(true, 0x0, []byte{0xfe})),
			"eof", []string{"\xff\xfe"}},

		// Control frames: at most 125 bytes, never fragmented, allowed between fragments.
		{"ping 125", clientFrame(true, 0x9, []byte(a(125))), "eof", nil},
		{"ping 126", clientFrame(true, 0x9, []byte(a(126))), "fail 1002", nil},
		{"pong 126", clientFrame(true, 0xA, []byte(a(126))), "fail 1002", nil},
		{"close 126", clientFrame(true, 0x8, closePayload(1000, a(124))), "fail 1002", nil},
		{"ping declaring 2^63-1", header(0x89, 1<<63-1, true), "fail 1002", nil},
		{"ping declaring 2^64-1", header(0x89, 1<<64-1, true), "fail 1002", nil},
		{"fragmented ping", concat(clientFrame(false, 0x9, []byte("p")), clientFrame(true, 0x0, []byte("q"))),
			"fail 1002", nil},
		{"fragmented close", clientFrame(false, 0x8, closePayload(1000, "")), "fail 1002", nil},
		{"ping between fragments", concat(clientFrame(false, 0x1, []byte("he")), clientFrame(true, 0x9, []byte("p")),
			clientFrame(true, 0xA, nil), clientFrame(true, 0x0, []byte("llo"))), "eof", []string{"hello"}},
		{"close between fragments", concat(clientFrame(false, 0x1, []byte("he")),
			clientFrame(true, 0x8, closePayload(1000, ""))), "close 1000", nil},

		// Fragmentation order (§5.4).
		{"continuation first", clientFrame(true, 0x0, []byte("a")), "fail 1002", nil},
		{"text inside a fragmented text", concat(clientFrame(false, 0x1, []byte("a")), text("b")), "fail 1002", nil},
		{"binary inside a fragmented text", concat(clientFrame(false, 0x1, []byte("a")),
			clientFrame(true, 0x2, []byte("b"))), "fail 1002", nil},
		{"continuation after a whole message", concat(text("a"), clientFrame(true, 0x0, []byte("b"))),
			"fail 1002", []string{"a"}},

		// Masking (§5.1, §5.3).
		{"unmasked text", unmasked(0x81, []byte("a")), "fail 1002", nil},
		{"unmasked ping", unmasked(0x89, nil), "fail 1002", nil},
		{"unmasked close", unmasked(0x88, closePayload(1000, "")), "fail 1002", nil},
		{"unmasked continuation", concat(clientFrame(false, 0x1, []byte("a")), unmasked(0x80, []byte("b"))),
			"fail 1002", nil},

		// UTF-8 of text messages (§8.1), whole and across fragments.
		{"invalid UTF-8", text("\xff\xfe"), "fail 1007", nil},
		{"overlong UTF-8", text("\xc0\xaf"), "fail 1007", nil},
		{"UTF-8 surrogate", text("\xed\xa0\x80"), "fail 1007", nil},
		{"UTF-8 cut at the end", text("ok\xe2\x82"), "fail 1007", nil},
		{"invalid UTF-8 past the read buffer", text(a(readBufSize) + "\xff"), "fail 1007", nil},
		{"code point split across fragments", concat(clientFrame(false, 0x1, []byte("\xe2\x82")),
			clientFrame(true, 0x0, []byte("\xac"))), "eof", []string{"€"}},
		{"invalid UTF-8 split across fragments", concat(clientFrame(false, 0x1, []byte("\xe2\x82")),
			clientFrame(true, 0x0, []byte("a"))), "fail 1007", nil},
		{"binary is not UTF-8 checked", clientFrame(true, 0x2, []byte{0xff}), "eof", []string{"\xff"}},

		// Close frames (§5.5.1, §7.4).
		{"close without code", clientFrame(true, 0x8, nil), "close 1005", nil},
		{"close of 1 byte", clientFrame(true, 0x8, []byte{0x03}), "fail 1002", nil},
		{"close reason not UTF-8", clientFrame(true, 0x8, closePayload(1000, "\xff")), "fail 1007", nil},
		{"close with a 123-byte reason", clientFrame(true, 0x8, closePayload(1000, a(123))), "close 1000", nil},

		// Truncated input ends the read, nothing else.
		{"empty stream", nil, "eof", nil},
		{"one header byte", []byte{0x81}, "truncated", nil},
		{"cut in the 64-bit length", header(0x81, 70000, true)[:5], "truncated", nil},
		{"cut in the mask", header(0x81, 5, true)[:4], "truncated", nil},
		{"cut in a small payload", text("abcdef")[:8], "truncated", nil},
		{"cut in a large payload", text(a(readBufSize + 500))[:readBufSize], "truncated", nil},
	}
	for _, bit := range []byte{0x40, 0x20, 0x10} {
		cases = append(cases,
			edgeCase{fmt.Sprintf("reserved bit %#x", bit), withB0(text("a"), 0x81|bit), "fail 1002", nil},
			edgeCase{fmt.Sprintf("reserved bit %#x on a ping", bit), withB0(clientFrame(true, 0x9, nil), 0x89|bit), "fail 1002", nil},
			edgeCase{fmt.Sprintf("reserved bit %#x on a continuation", bit),
				concat(clientFrame(false, 0x1, []byte("a")), withB0(clientFrame(true, 0x0, []byte("b")), 0x80|bit)), "fail 1002", nil})
	}
	for _, op := range []byte{0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF} {
		cases = append(cases, edgeCase{fmt.Sprintf("reserved opcode %#x", op), clientFrame(true, op, []byte("a")), "fail 1002", nil})
	}
	for _, code := range []uint16{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} {
		cases = append(cases, edgeCase{fmt.Sprintf("close code %d", code),
			clientFrame(true, 0x8, closePayload(code, "")), "fail 1002", nil})
	}
	for _, code := range []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999} {
		cases = append(cases, edgeCase{fmt.Sprintf("close code %d", code),
			clientFrame(true, 0x8, closePayload(code, "bye")), fmt.Sprintf("close %d", code), nil})
	}
	return cases
}
