package gossip

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func testBeacon() beacon {
	return beacon{
		Cluster:     "soketi",
		NodeID:      "node-a-1f2e3d4c",
		Incarnation: 1712345678901234567,
		GossipAddr:  netip.MustParseAddrPort("198.18.4.2:7946"),
		HTTPAddr:    "198.18.4.2:6001",
		RaftAddr:    "198.18.4.2:7000",
	}
}

func TestBeacon_RoundTrip(t *testing.T) {
	long := beacon{
		Cluster:     strings.Repeat("c", maxClusterNameLen),
		NodeID:      strings.Repeat("n", maxNodeIDLen),
		Incarnation: ^uint64(0),
		GossipAddr:  netip.MustParseAddrPort("[2001:db8::1]:65535"),
		HTTPAddr:    strings.Repeat("h", maxAdvertisedLen),
		RaftAddr:    strings.Repeat("r", maxAdvertisedLen),
	}
	for _, b := range []beacon{testBeacon(), long, {Cluster: "x", NodeID: "y", GossipAddr: netip.MustParseAddrPort("0.0.0.0:1")}} {
		p, err := encodeBeacon(b)
		if err != nil {
			t.Fatalf("encode %+v: %v", b, err)
		}
		if len(p) > maxBeaconSize {
			t.Fatalf("encoded %d bytes, cap %d", len(p), maxBeaconSize)
		}
		got, err := decodeBeacon(p)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if got != b {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, b)
		}
	}
}

func TestBeacon_DecodeRejects(t *testing.T) {
	good, err := encodeBeacon(testBeacon())
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(p []byte) []byte) []byte { return f(bytes.Clone(good)) }
	withField := func(f func(b *beacon)) []byte {
		b := testBeacon()
		f(&b)
		p, err := encodeBeacon(b)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		return p
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, errBeaconMalformed},
		{"magic only", []byte("SKTB"), errBeaconMalformed},
		{"wrong magic", mutate(func(p []byte) []byte { p[0] = 'X'; return p }), errBeaconMalformed},
		{"json", []byte(`{"event":"hello","iid":"x"}`), errBeaconMalformed},
		{"future version", mutate(func(p []byte) []byte { p[4] = 2; return p }), errBeaconVersion},
		{"version zero", mutate(func(p []byte) []byte { p[4] = 0; return p }), errBeaconVersion},
		{"oversized", make([]byte, maxBeaconSize+1), errBeaconTooLarge},
		{"truncated", good[:len(good)-1], errBeaconMalformed},
		{"truncated header", good[:10], errBeaconMalformed},
		{"trailing byte", append(bytes.Clone(good), 0), errBeaconMalformed},
		{"bad ip length", mutate(func(p []byte) []byte { p[13] = 5; return p }), errBeaconMalformed},
		{"zero port", mutate(func(p []byte) []byte { p[18], p[19] = 0, 0; return p }), errBeaconMalformed},
		{"string length past end", mutate(func(p []byte) []byte { p[20] = 255; return p }), errBeaconMalformed},
		{"empty cluster", withField(func(b *beacon) { b.Cluster = "" }), errBeaconMalformed},
		{"empty node id", withField(func(b *beacon) { b.NodeID = "" }), errBeaconMalformed},
		{"control char in id", withField(func(b *beacon) { b.NodeID = "a\nb" }), errBeaconMalformed},
		{"invalid utf8", withField(func(b *beacon) { b.HTTPAddr = "\xff\xfe" }), errBeaconMalformed},
		{"cluster too long", withField(func(b *beacon) { b.Cluster = strings.Repeat("c", maxClusterNameLen+1) }), errBeaconMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeBeacon(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("decode: got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestBeacon_EncodeRejects(t *testing.T) {
	b := testBeacon()
	b.GossipAddr = netip.AddrPort{}
	if _, err := encodeBeacon(b); err == nil {
		t.Fatal("encoded a beacon without gossip address")
	}
	b = testBeacon()
	b.HTTPAddr = strings.Repeat("h", 256)
	if _, err := encodeBeacon(b); !errors.Is(err, errBeaconTooLarge) {
		t.Fatalf("got %v, want errBeaconTooLarge", err)
	}
}

func FuzzDecodeBeacon(f *testing.F) {
	good, _ := encodeBeacon(testBeacon())
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte("SKTB\x01"))
	f.Add([]byte("SKTB\x02"))
	f.Add(good[:len(good)/2])
	f.Add([]byte(`{"event":"hello"}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		b, err := decodeBeacon(p)
		if err != nil {
			return
		}
		// Anything accepted must survive a re-encode unchanged.
		q, err := encodeBeacon(b)
		if err != nil {
			t.Fatalf("accepted beacon does not re-encode: %v", err)
		}
		if b2, err := decodeBeacon(q); err != nil || b2 != b {
			t.Fatalf("re-encode round trip: %+v, %v; want %+v", b2, err, b)
		}
	})
}
