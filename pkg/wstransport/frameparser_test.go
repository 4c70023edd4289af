package wstransport

import (
	"io"
	"slices"
	"testing"

	"github.com/gobwas/ws"
)

// collectSink records what a frameParser passes on.
type collectSink struct {
	msgs     []string
	controls int
}

func (s *collectSink) control(ws.OpCode, []byte)     { s.controls++ }
func (s *collectSink) message(_ ws.OpCode, m []byte) { s.msgs = append(s.msgs, string(m)) }

// parseStream feeds stream to a frameParser chunk bytes at a time, as a
// poller would, and ends as readStream does: io.EOF between frames,
// io.ErrUnexpectedEOF inside one.
func parseStream(stream []byte, chunk, limit int) (msgs []string, controls int, err error) {
	p := newFrameParser(limit)
	defer p.release()
	sink := &collectSink{}
	data := slices.Clone(stream) // the parser unmasks in place, as in nbio's buffer
	for len(data) > 0 {
		n := min(chunk, len(data))
		if err := p.feed(data[:n], sink); err != nil {
			return sink.msgs, sink.controls, err
		}
		data = data[n:]
	}
	if p.pending != nil || p.msg != nil {
		return sink.msgs, sink.controls, io.ErrUnexpectedEOF
	}
	return sink.msgs, sink.controls, io.EOF
}

// Every edge case ends as frameReader's does, with the same messages,
// however the input is split.
func TestFrameParser_EdgeCases(t *testing.T) {
	for _, limit := range []int{testLimit, fuzzLimit} {
		for _, tc := range edgeCases(limit) {
			for _, chunk := range []int{1, 7, 4096, 1 << 20} {
				if chunk == 1 && len(tc.stream) > 10_000 {
					continue
				}
				msgs, _, err := parseStream(tc.stream, chunk, limit)
				if got := outcome(err); got != tc.want {
					t.Errorf("%s (limit %d, chunk %d): %s, want %s", tc.name, limit, chunk, got, tc.want)
				}
				if !slices.Equal(msgs, tc.msgs) {
					t.Errorf("%s (limit %d, chunk %d): %d messages, want %d", tc.name, limit, chunk, len(msgs), len(tc.msgs))
				}
			}
		}
	}
}

// Between frames the parser holds no buffer, and what it keeps of an
// incomplete frame never exceeds a header plus the limit.
func TestFrameParser_HoldsNoBufferBetweenFrames(t *testing.T) {
	p := newFrameParser(fuzzLimit)
	defer p.release()
	sink := &collectSink{}
	frame := text(`{"event":"pusher:ping"}`)
	if err := p.feed(slices.Clone(frame[:5]), sink); err != nil || p.pending == nil {
		t.Fatalf("half a frame: err %v, pending %v", err, p.pending != nil)
	}
	if err := p.feed(slices.Clone(frame[5:]), sink); err != nil || p.pending != nil || len(sink.msgs) != 1 {
		t.Fatalf("the rest: err %v, pending %v, %d messages", err, p.pending != nil, len(sink.msgs))
	}
	big := header(0x81, fuzzLimit, true)
	big = append(big, testMask[:]...)
	if err := p.feed(big, sink); err != nil {
		t.Fatal(err)
	}
	for range fuzzLimit / 100 {
		if err := p.feed(make([]byte, 99), sink); err != nil {
			t.Fatal(err)
		}
		if len(*p.pending) > ws.MaxHeaderSize+fuzzLimit {
			t.Fatalf("kept %d bytes", len(*p.pending))
		}
	}
}

// FuzzFrameParser: for any input and any split, the parser finds what
// frameReader finds.
func FuzzFrameParser(f *testing.F) {
	for _, tc := range edgeCases(fuzzLimit) {
		seed := tc.stream
		if len(seed) > 3*fuzzLimit {
			seed = seed[:64]
		}
		f.Add(seed, uint8(5))
	}
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		wantMsgs, wantControls, wantErr := readStream(stream, 4096, fuzzLimit)
		msgs, controls, err := parseStream(stream, int(chunk)+1, fuzzLimit)
		// Input that ends inside a header is "eof" to frameReader (its
		// second io.ReadFull reads nothing) and "truncated" here: to the
		// server both are a client gone mid-stream.
		ended := func(err error) string {
			if o := outcome(err); o != "truncated" {
				return o
			}
			return "eof"
		}
		if ended(err) != ended(wantErr) || !slices.Equal(msgs, wantMsgs) || controls != wantControls {
			t.Fatalf("parser: %s, %d messages, %d controls; reader: %s, %d messages, %d controls",
				outcome(err), len(msgs), controls, outcome(wantErr), len(wantMsgs), wantControls)
		}
	})
}
