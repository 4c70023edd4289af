package gossip

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"net/netip"
)

// Beacon wire format (big endian), version 2:
//
//	magic "SKTB" | version u8 | flags u8 | incarnation u64 |
//	gossip ip len u8 (4 or 16) | ip | gossip port u16 |
//	cluster, node id, http addr, raft addr: each len u8 | bytes |
//	[mac: 32 bytes, present iff flags&beaconFlagMAC]
//
// The MAC is HMAC-SHA256, under beaconKey(SecretKey), of every byte before
// it (magic to raft addr). Other flag bits are reserved and must be zero.
// Nothing else: no app data, no secrets. Trailing bytes are malformed.
const (
	beaconVersion = 2
	maxBeaconSize = 512

	beaconFlagMAC = 1 << 0
	beaconMACSize = sha256.Size

	// beaconKeyInfo separates the beacon MAC key from every other key
	// derived from CLUSTER_KEY (memberlist uses the raw key; the cluster
	// port's certificates use their own info string).
	beaconKeyInfo = "soketi beacon v2"
)

var beaconMagic = [4]byte{'S', 'K', 'T', 'B'}

var (
	errBeaconTooLarge  = errors.New("gossip: beacon too large")
	errBeaconVersion   = errors.New("gossip: unknown beacon version")
	errBeaconMalformed = errors.New("gossip: malformed beacon")
	// errBeaconAuth: this node has a key and the beacon has no MAC or a
	// wrong one.
	errBeaconAuth = errors.New("gossip: beacon not authenticated under this cluster's key")
	// errBeaconKeyed: this node has no key and the beacon carries a MAC it
	// cannot check.
	errBeaconKeyed = errors.New("gossip: authenticated beacon but this node has no key")
)

// beacon announces a node to peers so they can join its memberlist.
type beacon struct {
	Cluster     string
	NodeID      string
	Incarnation uint64
	GossipAddr  netip.AddrPort
	HTTPAddr    string
	RaftAddr    string
}

// beaconKey derives the HMAC key for beacons from the cluster secret; nil
// without a secret. The raw secret is never used as the MAC key.
func beaconKey(secret []byte) ([]byte, error) {
	if len(secret) == 0 {
		return nil, nil
	}
	return hkdf.Key(sha256.New, secret, nil, beaconKeyInfo, sha256.Size)
}

// encodeBeacon encodes b, with a MAC under key when key is set.
func encodeBeacon(b beacon, key []byte) ([]byte, error) {
	if !b.GossipAddr.IsValid() || b.GossipAddr.Port() == 0 {
		return nil, errBeaconMalformed
	}
	var flags byte
	if len(key) > 0 {
		flags |= beaconFlagMAC
	}
	ip := b.GossipAddr.Addr().Unmap().AsSlice()
	buf := make([]byte, 0, 64+beaconMACSize+len(b.Cluster)+len(b.NodeID)+len(b.HTTPAddr)+len(b.RaftAddr))
	buf = append(buf, beaconMagic[:]...)
	buf = append(buf, beaconVersion, flags)
	buf = binary.BigEndian.AppendUint64(buf, b.Incarnation)
	buf = append(buf, byte(len(ip)))
	buf = append(buf, ip...)
	buf = binary.BigEndian.AppendUint16(buf, b.GossipAddr.Port())
	for _, s := range []string{b.Cluster, b.NodeID, b.HTTPAddr, b.RaftAddr} {
		if len(s) > 255 {
			return nil, errBeaconTooLarge
		}
		buf = append(buf, byte(len(s)))
		buf = append(buf, s...)
	}
	if flags&beaconFlagMAC != 0 {
		buf = beaconMAC(key, buf, buf)
	}
	if len(buf) > maxBeaconSize {
		return nil, errBeaconTooLarge
	}
	return buf, nil
}

// beaconMAC appends the MAC of msg under key to dst.
func beaconMAC(key, msg, dst []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(msg)
	return h.Sum(dst)
}

// decodeBeacon checks and parses one datagram. With a key, only a beacon
// whose MAC verifies under it is parsed further; without one, a beacon that
// carries a MAC is refused. It never panics and allocates only the decoded
// strings on any input; the error says why a datagram was dropped.
func decodeBeacon(p, key []byte) (beacon, error) {
	var b beacon
	if len(p) > maxBeaconSize {
		return b, errBeaconTooLarge
	}
	if len(p) < len(beaconMagic)+1 || [4]byte(p[:4]) != beaconMagic {
		return b, errBeaconMalformed
	}
	if p[4] != beaconVersion {
		return b, errBeaconVersion
	}
	if len(p) < 6 || p[5]&^beaconFlagMAC != 0 {
		return b, errBeaconMalformed
	}
	body := p
	switch signed := p[5]&beaconFlagMAC != 0; {
	case len(key) > 0 && !signed:
		return b, errBeaconAuth
	case len(key) > 0:
		if len(p) < 6+beaconMACSize {
			return b, errBeaconAuth
		}
		body = p[:len(p)-beaconMACSize]
		var sum [beaconMACSize]byte
		if !hmac.Equal(beaconMAC(key, body, sum[:0]), p[len(body):]) {
			return b, errBeaconAuth
		}
	case signed:
		return b, errBeaconKeyed
	}
	r := reader{p: body[6:]}
	b.Incarnation = r.u64()
	ipLen := int(r.u8())
	if ipLen != 4 && ipLen != 16 {
		return b, errBeaconMalformed
	}
	ip, _ := netip.AddrFromSlice(r.bytes(ipLen))
	port := r.u16()
	b.Cluster = r.str()
	b.NodeID = r.str()
	b.HTTPAddr = r.str()
	b.RaftAddr = r.str()
	if r.bad || len(r.p) != 0 || port == 0 {
		return beacon{}, errBeaconMalformed
	}
	b.GossipAddr = netip.AddrPortFrom(ip.Unmap(), port)
	if !validName(b.Cluster, maxClusterNameLen) || !validName(b.NodeID, maxNodeIDLen) ||
		!validOptional(b.HTTPAddr) || !validOptional(b.RaftAddr) {
		return beacon{}, errBeaconMalformed
	}
	return b, nil
}

// reader consumes p; after the first short read every call returns zero
// values and bad is set. A short read allocates at most 255 bytes.
type reader struct {
	p   []byte
	bad bool
}

func (r *reader) bytes(n int) []byte {
	if r.bad || len(r.p) < n {
		r.bad = true
		return make([]byte, n)
	}
	v := r.p[:n]
	r.p = r.p[n:]
	return v
}

func (r *reader) u8() uint8   { return r.bytes(1)[0] }
func (r *reader) u16() uint16 { return binary.BigEndian.Uint16(r.bytes(2)) }
func (r *reader) u64() uint64 { return binary.BigEndian.Uint64(r.bytes(8)) }
func (r *reader) str() string { return string(r.bytes(int(r.u8()))) }
