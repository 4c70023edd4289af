package stream

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestHandshakeCodec(t *testing.T) {
	h := hello{version: protocolVersion, origin: "a", target: "b", inc: 5, epoch: 6}
	got, err := decodeHello(h.encode())
	if err != nil || got != h {
		t.Fatalf("hello round trip: %+v, %v", got, err)
	}
	w := welcome{status: statusWrongTarget, node: "b", inc: 7}
	gw, err := decodeWelcome(w.encode())
	if err != nil || gw != w {
		t.Fatalf("welcome round trip: %+v, %v", gw, err)
	}
	long := strings.Repeat("x", maxIDLen+1)
	good := h.encode()
	for name, b := range map[string][]byte{
		"empty":        nil,
		"bad magic":    append([]byte("XXXX"), good[4:]...),
		"no origin":    hello{version: protocolVersion, target: "b"}.encode(),
		"long origin":  hello{version: protocolVersion, origin: long, target: "b"}.encode(),
		"long target":  hello{version: protocolVersion, origin: "a", target: long}.encode(),
		"truncated":    good[:len(good)-1],
		"trailing":     append(good[:len(good):len(good)], 0),
		"huge id len":  append(good[:5:5], 0xff, 0xff, 0xff, 0xff, 0x0f),
		"magic only":   good[:4],
		"version only": good[:5],
	} {
		if _, err := decodeHello(b); !errors.Is(err, errMalformed) {
			t.Errorf("hello %s: err = %v", name, err)
		}
	}
	if got, err := decodeHello(append(good[:4:4], 1, 0xff)); err != nil || got.version != 1 {
		t.Errorf("hello of another version: %+v, %v; want its version and no error", got, err)
	}
	wb := w.encode()
	for name, b := range map[string][]byte{
		"empty":     nil,
		"truncated": wb[:len(wb)-1],
		"trailing":  append(wb[:len(wb):len(wb)], 0),
		"long node": welcome{node: long}.encode(),
	} {
		if _, err := decodeWelcome(b); !errors.Is(err, errMalformed) {
			t.Errorf("welcome %s: err = %v", name, err)
		}
	}
}

// testConn is a net.Conn reading scripted bytes and discarding writes.
type testConn struct {
	r io.Reader
	w io.Writer
}

func (c *testConn) Read(b []byte) (int, error)       { return c.r.Read(b) }
func (c *testConn) Write(b []byte) (int, error)      { return c.w.Write(b) }
func (c *testConn) Close() error                     { return nil }
func (c *testConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *testConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *testConn) SetDeadline(time.Time) error      { return nil }
func (c *testConn) SetReadDeadline(time.Time) error  { return nil }
func (c *testConn) SetWriteDeadline(time.Time) error { return nil }

func handshakeBytes(bodies ...[]byte) []byte {
	var buf bytes.Buffer
	for _, b := range bodies {
		if err := writeHandshake(&buf, b); err != nil {
			panic(err)
		}
	}
	return buf.Bytes()
}

func recordBytes(build func(w *recordWriter)) []byte {
	var buf bytes.Buffer
	w := newRecordWriter(&testConn{w: &buf}, time.Second)
	w.begin()
	build(w)
	if w.finish() != nil || w.flush() != nil {
		panic("record")
	}
	return buf.Bytes()
}

func serverConfig(proven string) *Config {
	return &Config{NodeID: "b", Incarnation: 2, PeerTimeout: time.Second,
		PeerID: func(net.Conn) string { return proven }}
}

func TestServerHandshake_Refusals(t *testing.T) {
	base := binary.BigEndian.AppendUint64(nil, 0)
	ok := hello{version: protocolVersion, origin: "a", target: "b", inc: 1, epoch: 1}
	cases := []struct {
		name   string
		in     []byte
		proven string
		status int // welcome status written, -1 for none
		err    error
	}{
		{"accepted", handshakeBytes(ok.encode(), base), "", int(statusOK), nil},
		{"proven origin", handshakeBytes(ok.encode(), base), "a", int(statusOK), nil},
		{"other proven identity", handshakeBytes(ok.encode(), base), "c", int(statusIdentity), errIdentity},
		{"wrong target", handshakeBytes(hello{version: protocolVersion, origin: "a", target: "c"}.encode()), "", int(statusWrongTarget), errRefused},
		{"other version", handshakeBytes(append(magic[:], 9, 1, 2, 3)), "", int(statusVersion), errRefused},
		{"malformed hello", handshakeBytes([]byte("SKST")), "", -1, errMalformed},
		{"oversized hello", []byte{0xff, 0xff, 'S', 'K'}, "", -1, errMalformed},
		{"truncated hello", handshakeBytes(ok.encode())[:10], "", -1, io.ErrUnexpectedEOF},
		{"no hello", nil, "", -1, io.EOF},
		{"short base", handshakeBytes(ok.encode(), base[:7]), "", int(statusOK), errMalformed},
		{"oversized base", append(handshakeBytes(ok.encode()), 0xff, 0xff), "", int(statusOK), errMalformed},
		{"no base", handshakeBytes(ok.encode()), "", int(statusOK), io.EOF},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			_, _, _, err := serverHandshake(&testConn{r: bytes.NewReader(tc.in), w: &out}, serverConfig(tc.proven))
			if (tc.err == nil) != (err == nil) || (tc.err != nil && !errors.Is(err, tc.err)) {
				t.Errorf("err = %v, want %v", err, tc.err)
			}
			if tc.status < 0 {
				if out.Len() != 0 {
					t.Errorf("wrote %d bytes, want none", out.Len())
				}
				return
			}
			wb, err := readHandshake(&out)
			if err != nil {
				t.Fatalf("no welcome: %v", err)
			}
			w, err := decodeWelcome(wb)
			if err != nil || int(w.status) != tc.status || w.node != "b" || w.inc != 2 {
				t.Errorf("welcome %+v, %v; want status %d from b/2", w, err, tc.status)
			}
		})
	}
}

func TestHandshake_RoundTrip(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	type result struct {
		h    hello
		base uint64
		sess *session
		err  error
	}
	done := make(chan result, 1)
	go func() {
		h, base, sess, err := serverHandshake(server, serverConfig("a"))
		if err == nil {
			sess.w.begin()
			sess.w.appendSeq(frameAccept, 3)
			err = errors.Join(sess.w.finish(), sess.w.flush())
		}
		done <- result{h, base, sess, err}
	}()
	cfg := &Config{NodeID: "a", Incarnation: 1, PeerTimeout: 5 * time.Second}
	var sawInc uint64
	res, err := clientHandshake(client, cfg, "b", 9, func(inc uint64) uint64 { sawInc = inc; return 4 })
	if err != nil {
		t.Fatal(err)
	}
	sr := <-done
	if sr.err != nil {
		t.Fatal(sr.err)
	}
	if sr.h.origin != "a" || sr.h.target != "b" || sr.h.inc != 1 || sr.h.epoch != 9 || sr.base != 4 {
		t.Errorf("server saw %+v base %d", sr.h, sr.base)
	}
	if sawInc != 2 || res.remoteInc != 2 || res.last != 3 {
		t.Errorf("client saw incarnation %d/%d, last %d", sawInc, res.remoteInc, res.last)
	}
}

func TestRecordReader_Bounds(t *testing.T) {
	header := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }
	read := func(b []byte) ([]byte, error) {
		r := &recordReader{conn: &testConn{r: bytes.NewReader(b)}, br: bufio.NewReader(bytes.NewReader(b)), timeout: time.Second}
		return r.next()
	}
	if _, err := read(header(maxRecordSize + 1)); !errors.Is(err, errMalformed) {
		t.Errorf("oversized record: %v", err)
	}
	if _, err := read(header(0xffffffff)); !errors.Is(err, errMalformed) {
		t.Errorf("record of 4 GiB: %v", err)
	}
	if body, err := read(header(0)); err != nil || len(body) != 0 {
		t.Errorf("empty record: %v, %v", body, err)
	}
	if _, err := read(append(header(10), 1, 2, 3)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated record: %v", err)
	}
	if _, err := read(header(10)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("record without a body: %v", err)
	}
	big := make([]byte, 3*ioBuffer+5)
	big[len(big)-1] = 7
	if body, err := read(append(header(uint32(len(big))), big...)); err != nil || !bytes.Equal(body, big) {
		t.Errorf("record of %d bytes: %v", len(big), err)
	}

	// A header announcing the largest record costs memory only for the
	// bytes that follow it.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range 16 {
		_, _ = read(append(header(maxRecordSize), make([]byte, 100)...))
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 4<<20 {
		t.Errorf("16 announced records of %d bytes allocated %d bytes", maxRecordSize, grew)
	}
}

// FuzzHandshake plays arbitrary bytes as the origin to a destination and
// as the destination to an origin, through the handshake and the records
// after it: nothing may panic, and no read may allocate far beyond the
// bytes received.
func FuzzHandshake(f *testing.F) {
	base := binary.BigEndian.AppendUint64(nil, 0)
	enc, _ := encodeMessage(numbered(1, 16))
	data := recordBytes(func(w *recordWriter) {
		w.appendData(1, enc)
		w.appendPing()
		w.appendData(3, enc)
	})
	fromOrigin := append(handshakeBytes(hello{version: protocolVersion, origin: "a", target: "b", inc: 1, epoch: 1}.encode(), base), data...)
	accept := recordBytes(func(w *recordWriter) { w.appendSeq(frameAccept, 0) })
	ack := recordBytes(func(w *recordWriter) { w.appendSeq(frameAck, 1) })
	dest := append(append(handshakeBytes(welcome{node: "b", inc: 2}.encode()), accept...), ack...)
	for _, seed := range [][]byte{fromOrigin, dest} {
		f.Add(seed)
		for _, n := range []int{1, 2, 3, 7, len(seed) / 2, len(seed) - 1} {
			f.Add(seed[:n])
		}
	}
	long := strings.Repeat("x", maxIDLen+1)
	f.Add(handshakeBytes(hello{version: protocolVersion, origin: long, target: "b"}.encode()))
	f.Add(handshakeBytes(welcome{node: long}.encode()))
	f.Add([]byte{0xff, 0xff})
	f.Add(append(handshakeBytes(hello{version: protocolVersion, origin: "a", target: "b"}.encode()), 0xff, 0xff, 0, 0))
	for _, n := range []uint32{maxRecordSize, maxRecordSize + 1, 0xffffffff, 0} {
		h := binary.BigEndian.AppendUint32(nil, n)
		f.Add(append(handshakeBytes(hello{version: protocolVersion, origin: "a", target: "b"}.encode(), base), h...))
		f.Add(append(handshakeBytes(welcome{node: "b"}.encode()), h...))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s := &Streams{log: testLogger(t), deliver: func(string, Message) {}}
		h, last, sess, err := serverHandshake(&testConn{r: bytes.NewReader(b), w: io.Discard}, serverConfig(""))
		if err == nil {
			o := &origin{id: h.origin}
			o.last.Store(last)
			_ = s.readData(sess.r, o, make(chan struct{}, 1))
		}
		cfg := &Config{NodeID: "a", Incarnation: 1, PeerTimeout: time.Second}
		res, err := clientHandshake(&testConn{r: bytes.NewReader(b), w: io.Discard}, cfg, "b", 1, func(uint64) uint64 { return 0 })
		if err == nil {
			for {
				body, err := res.sess.r.next()
				if err != nil {
					break
				}
				if parseFrames(body, func(byte, uint64, []byte) error { return nil }) != nil {
					break
				}
			}
		}
	})
}
