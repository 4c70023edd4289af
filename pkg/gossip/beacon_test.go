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

// testBeaconKey is the beacon key of a cluster whose CLUSTER_KEY is secret.
func testBeaconKey(t testing.TB, secret string) []byte {
	t.Helper()
	k, err := beaconKey([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustEncode(t testing.TB, b beacon, key []byte) []byte {
	t.Helper()
	p, err := encodeBeacon(b, key)
	if err != nil {
		t.Fatalf("encode %+v: %v", b, err)
	}
	return p
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
	keys := map[string][]byte{
		"no key": nil, "16-byte key": testBeaconKey(t, "0123456789abcdef"),
		"32-byte key": testBeaconKey(t, "0123456789abcdef0123456789abcdef"),
	}
	for name, key := range keys {
		for _, b := range []beacon{testBeacon(), long, {Cluster: "x", NodeID: "y", GossipAddr: netip.MustParseAddrPort("0.0.0.0:1")}} {
			p := mustEncode(t, b, key)
			if len(p) > maxBeaconSize {
				t.Fatalf("%s: encoded %d bytes, cap %d", name, len(p), maxBeaconSize)
			}
			if signed := p[5]&beaconFlagMAC != 0; signed != (key != nil) {
				t.Fatalf("%s: MAC flag %v", name, signed)
			}
			got, err := decodeBeacon(p, key)
			if err != nil {
				t.Fatalf("%s: decode: %v", name, err)
			}
			if got != b {
				t.Fatalf("%s: round trip:\n got %+v\nwant %+v", name, got, b)
			}
		}
	}
}

func TestBeacon_DecodeRejects(t *testing.T) {
	good := mustEncode(t, testBeacon(), nil)
	mutate := func(f func(p []byte) []byte) []byte { return f(bytes.Clone(good)) }
	withField := func(f func(b *beacon)) []byte {
		b := testBeacon()
		f(&b)
		return mustEncode(t, b, nil)
	}
	// Offsets: magic 0-3, version 4, flags 5, incarnation 6-13, ip length
	// 14, ip 15-18, port 19-20, cluster length 21.
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, errBeaconMalformed},
		{"magic only", []byte("SKTB"), errBeaconMalformed},
		{"version only", []byte("SKTB\x02"), errBeaconMalformed},
		{"wrong magic", mutate(func(p []byte) []byte { p[0] = 'X'; return p }), errBeaconMalformed},
		{"json", []byte(`{"event":"hello","iid":"x"}`), errBeaconMalformed},
		{"version 1", mutate(func(p []byte) []byte { p[4] = 1; return p }), errBeaconVersion},
		{"future version", mutate(func(p []byte) []byte { p[4] = 3; return p }), errBeaconVersion},
		{"version zero", mutate(func(p []byte) []byte { p[4] = 0; return p }), errBeaconVersion},
		{"reserved flag", mutate(func(p []byte) []byte { p[5] = 2; return p }), errBeaconMalformed},
		{"oversized", make([]byte, maxBeaconSize+1), errBeaconTooLarge},
		{"truncated", good[:len(good)-1], errBeaconMalformed},
		{"truncated header", good[:10], errBeaconMalformed},
		{"trailing byte", append(bytes.Clone(good), 0), errBeaconMalformed},
		{"bad ip length", mutate(func(p []byte) []byte { p[14] = 5; return p }), errBeaconMalformed},
		{"zero port", mutate(func(p []byte) []byte { p[19], p[20] = 0, 0; return p }), errBeaconMalformed},
		{"string length past end", mutate(func(p []byte) []byte { p[21] = 255; return p }), errBeaconMalformed},
		{"empty cluster", withField(func(b *beacon) { b.Cluster = "" }), errBeaconMalformed},
		{"empty node id", withField(func(b *beacon) { b.NodeID = "" }), errBeaconMalformed},
		{"control char in id", withField(func(b *beacon) { b.NodeID = "a\nb" }), errBeaconMalformed},
		{"invalid utf8", withField(func(b *beacon) { b.HTTPAddr = "\xff\xfe" }), errBeaconMalformed},
		{"cluster too long", withField(func(b *beacon) { b.Cluster = strings.Repeat("c", maxClusterNameLen+1) }), errBeaconMalformed},
		// A node without a key cannot check a MAC, so it does not trust the beacon.
		{"MAC at a node without key", mustEncode(t, testBeacon(), testBeaconKey(t, "0123456789abcdef")), errBeaconKeyed},
		{"MAC flag without MAC", mutate(func(p []byte) []byte { p[5] = beaconFlagMAC; return p }), errBeaconKeyed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeBeacon(tt.in, nil)
			if !errors.Is(err, tt.want) {
				t.Fatalf("decode: got %v, want %v", err, tt.want)
			}
		})
	}
}

// macBody appends a valid MAC under key to an arbitrary beacon body.
func macBody(key, body []byte) []byte {
	return beaconMAC(key, body, bytes.Clone(body))
}

func TestBeacon_MACRejects(t *testing.T) {
	key := testBeaconKey(t, "0123456789abcdef")
	good := mustEncode(t, testBeacon(), key)
	mutate := func(f func(p []byte) []byte) []byte { return f(bytes.Clone(good)) }
	unsigned := mustEncode(t, testBeacon(), nil)
	body := good[:len(good)-beaconMACSize]
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"no MAC", unsigned, errBeaconAuth},
		{"no MAC, flag cleared", mutate(func(p []byte) []byte { p[5] = 0; return p[:len(p)-beaconMACSize] }), errBeaconAuth},
		{"other cluster key", mustEncode(t, testBeacon(), testBeaconKey(t, "fedcba9876543210")), errBeaconAuth},
		{"raw secret as MAC key", mustEncode(t, testBeacon(), []byte("0123456789abcdef")), errBeaconAuth},
		{"flipped MAC bit", mutate(func(p []byte) []byte { p[len(p)-1] ^= 1; return p }), errBeaconAuth},
		{"changed gossip port", mutate(func(p []byte) []byte { p[20]++; return p }), errBeaconAuth},
		{"changed version byte", mutate(func(p []byte) []byte { p[4] = 1; return p }), errBeaconVersion},
		{"truncated MAC", good[:len(good)-1], errBeaconAuth},
		{"MAC only half", good[:len(good)-beaconMACSize/2], errBeaconAuth},
		{"header and flag only", good[:6], errBeaconAuth},
		{"unsigned with MAC appended", append(bytes.Clone(unsigned), good[len(good)-beaconMACSize:]...), errBeaconAuth},
		{"extra byte after MAC", append(bytes.Clone(good), 0), errBeaconAuth},
		{"oversized", make([]byte, maxBeaconSize+1), errBeaconTooLarge},
		// Authenticated garbage is still garbage.
		{"valid MAC over trailing byte", macBody(key, append(bytes.Clone(body), 0)), errBeaconMalformed},
		{"valid MAC over short body", macBody(key, body[:12]), errBeaconMalformed},
		{"valid MAC over header only", macBody(key, body[:6]), errBeaconMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeBeacon(tt.in, key)
			if !errors.Is(err, tt.want) {
				t.Fatalf("decode: got %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := decodeBeacon(good, key); err != nil {
		t.Fatalf("good beacon: %v", err)
	}
}

func TestBeaconKey_Derived(t *testing.T) {
	if k, err := beaconKey(nil); k != nil || err != nil {
		t.Fatalf("no secret: %x, %v", k, err)
	}
	secret := []byte("0123456789abcdef0123456789abcdef")
	a, b := testBeaconKey(t, string(secret)), testBeaconKey(t, string(secret))
	other := testBeaconKey(t, "0123456789abcdef0123456789abcdee")
	if len(a) != beaconMACSize || !bytes.Equal(a, b) {
		t.Fatalf("want a stable %d-byte key, got %x and %x", beaconMACSize, a, b)
	}
	if bytes.Equal(a, secret) || bytes.Contains(a, secret[:16]) || bytes.Equal(a, other) {
		t.Fatal("beacon key is the raw secret or does not depend on it")
	}
}

// The decoder allocates only the four strings (and HMAC state with a key),
// whatever the input.
func TestBeacon_DecodeAllocs(t *testing.T) {
	key := testBeaconKey(t, "0123456789abcdef")
	long := testBeacon()
	long.NodeID = strings.Repeat("n", maxNodeIDLen)
	inputs := map[string][]byte{
		"garbage": bytes.Repeat([]byte{0xff}, maxBeaconSize), "oversized": make([]byte, 64<<10),
		"unsigned": mustEncode(t, long, nil), "signed": mustEncode(t, long, key),
		"wrong MAC": mustEncode(t, long, testBeaconKey(t, "fedcba9876543210")),
	}
	for name, p := range inputs {
		for _, k := range [][]byte{nil, key} {
			if n := testing.AllocsPerRun(20, func() { decodeBeacon(p, k) }); n > 12 {
				t.Errorf("%s (key %v): %.0f allocations per decode", name, k != nil, n)
			}
		}
	}
}

func TestBeacon_EncodeRejects(t *testing.T) {
	b := testBeacon()
	b.GossipAddr = netip.AddrPort{}
	if _, err := encodeBeacon(b, nil); err == nil {
		t.Fatal("encoded a beacon without gossip address")
	}
	b = testBeacon()
	b.HTTPAddr = strings.Repeat("h", 256)
	if _, err := encodeBeacon(b, nil); !errors.Is(err, errBeaconTooLarge) {
		t.Fatalf("got %v, want errBeaconTooLarge", err)
	}
}

// fuzzSecret is the CLUSTER_KEY of the "keyed" half of the fuzz target.
const fuzzSecret = "0123456789abcdef"

func FuzzDecodeBeacon(f *testing.F) {
	key := testBeaconKey(f, fuzzSecret)
	unsigned := mustEncode(f, testBeacon(), nil)
	signed := mustEncode(f, testBeacon(), key)
	wrong := mustEncode(f, testBeacon(), testBeaconKey(f, "fedcba9876543210"))
	for _, keyed := range []bool{false, true} {
		f.Add(unsigned, keyed)                           // valid without key, missing MAC with one
		f.Add(signed, keyed)                             // valid MAC (unexpected without key)
		f.Add(wrong, keyed)                              // wrong MAC
		f.Add(signed[:len(signed)-1], keyed)             // truncated MAC
		f.Add(signed[:len(signed)-beaconMACSize], keyed) // flag set, MAC cut off
		f.Add(unsigned[:len(unsigned)/2], keyed)         // truncated body
		f.Add([]byte{}, keyed)
		f.Add([]byte("SKTB\x01"), keyed)
		f.Add([]byte("SKTB\x02\x01"), keyed)
		f.Add([]byte(`{"event":"hello"}`), keyed)
	}
	f.Fuzz(func(t *testing.T, p []byte, keyed bool) {
		var k []byte
		if keyed {
			k = key
		}
		b, err := decodeBeacon(p, k)
		if err != nil {
			return
		}
		if signed := len(p) > 5 && p[5]&beaconFlagMAC != 0; signed != keyed {
			t.Fatalf("accepted a beacon with MAC flag %v at a node with key %v", signed, keyed)
		}
		// Anything accepted must survive a re-encode unchanged.
		q, err := encodeBeacon(b, k)
		if err != nil {
			t.Fatalf("accepted beacon does not re-encode: %v", err)
		}
		if b2, err := decodeBeacon(q, k); err != nil || b2 != b {
			t.Fatalf("re-encode round trip: %+v, %v; want %+v", b2, err, b)
		}
	})
}
