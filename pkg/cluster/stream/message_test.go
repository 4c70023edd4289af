package stream

import (
	"bytes"
	"errors"
	"testing"
)

func messagesEqual(a, b Message) bool {
	return a.Kind == b.Kind && a.App == b.App && a.Channel == b.Channel && a.Except == b.Except &&
		bytes.Equal(a.Payload, b.Payload)
}

func TestMessage_RoundTrip(t *testing.T) {
	for _, m := range []Message{
		{Kind: KindPublish, App: "app-id", Channel: "private-chat", Except: "123.456", Payload: []byte(`{"event":"x"}`)},
		{Kind: KindToUser, App: "a", Channel: "user-1", Payload: make([]byte, 300)},
		{Kind: KindTerminateUser, App: "a", Channel: "user-1"},
		{Kind: KindControl, Payload: []byte(`{"app-id":12}`)},
		{Kind: 255},
	} {
		enc, err := encodeMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		if len(enc) != encodedSize(m) {
			t.Errorf("encodedSize = %d, encoding has %d bytes", encodedSize(m), len(enc))
		}
		got, err := decodeMessage(enc)
		if err != nil || !messagesEqual(got, m) {
			t.Errorf("decode(encode(%+v)) = %+v, %v", m, got, err)
		}
		if len(m.Payload) > 0 && &got.Payload[0] == &enc[len(enc)-len(m.Payload)] {
			t.Error("decoded payload aliases the input")
		}
	}
}

func TestMessage_Rejects(t *testing.T) {
	if _, err := encodeMessage(Message{}); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("zero kind: %v", err)
	}
	if _, err := encodeMessage(Message{Kind: 1, Payload: make([]byte, MaxMessageSize)}); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("oversized: %v", err)
	}
	good, _ := encodeMessage(Message{Kind: 1, App: "app", Payload: []byte("p")})
	for name, b := range map[string][]byte{
		"empty":     nil,
		"zero kind": {0, 0, 0, 0, 0},
		"truncated": good[:len(good)-1],
		"trailing":  append(good[:len(good):len(good)], 0),
		"huge len":  {1, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"bad var":   {1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
	} {
		if _, err := decodeMessage(b); !errors.Is(err, errMalformed) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func TestParseFrames(t *testing.T) {
	w := &recordWriter{}
	w.begin()
	w.appendData(7, []byte("msg"))
	w.appendPing()
	w.appendSeq(frameAck, 9)
	type frame struct {
		typ byte
		seq uint64
		msg string
	}
	var got []frame
	err := parseFrames(w.buf[recordHeaderLen:], func(typ byte, seq uint64, msg []byte) error {
		got = append(got, frame{typ, seq, string(msg)})
		return nil
	})
	want := []frame{{frameData, 7, "msg"}, {framePing, 0, ""}, {frameAck, 9, ""}}
	if err != nil || len(got) != len(want) {
		t.Fatalf("got %v, %v", got, err)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("frame %d = %v, want %v", i, got[i], want[i])
		}
	}
	if err := parseFrames([]byte{99}, func(byte, uint64, []byte) error { return nil }); !errors.Is(err, errMalformed) {
		t.Errorf("unknown frame type: %v", err)
	}
}

// FuzzDecode feeds arbitrary bytes to every decoder that reads from the
// network: none may panic, and a message that decodes re-encodes to one
// that decodes to the same value.
func FuzzDecode(f *testing.F) {
	for _, m := range []Message{
		{Kind: KindPublish, App: "app", Channel: "c", Except: "1.1", Payload: []byte("x")},
		{Kind: KindControl, Payload: []byte(`{}`)},
	} {
		enc, _ := encodeMessage(m)
		f.Add(enc)
		w := &recordWriter{}
		w.begin()
		w.appendData(1, enc)
		w.appendSeq(frameAck, 1)
		f.Add(w.buf[recordHeaderLen:])
	}
	f.Add(hello{version: protocolVersion, origin: "a", target: "b"}.encode())
	f.Add(welcome{node: "b"}.encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := decodeMessage(b); err == nil {
			enc, err := encodeMessage(m)
			if err != nil {
				t.Fatalf("decoded message does not encode: %v", err)
			}
			m2, err := decodeMessage(enc)
			if err != nil || !messagesEqual(m, m2) {
				t.Fatalf("re-decode: %+v vs %+v, %v", m, m2, err)
			}
		}
		_ = parseFrames(b, func(typ byte, seq uint64, msg []byte) error {
			if typ == frameData {
				_, _ = decodeMessage(msg)
			}
			return nil
		})
		_, _ = decodeHello(b)
		_, _ = decodeWelcome(b)
		_, _ = parseAccept(b)
	})
}
