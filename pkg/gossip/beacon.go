package gossip

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// Beacon wire format (big endian), version 1:
//
//	magic "SKTB" | version u8 | incarnation u64 |
//	gossip ip len u8 (4 or 16) | ip | gossip port u16 |
//	cluster, node id, http addr, raft addr: each len u8 | bytes
//
// Nothing else: no app data, no secrets. Trailing bytes are malformed.
const (
	beaconVersion = 1
	maxBeaconSize = 512
)

var beaconMagic = [4]byte{'S', 'K', 'T', 'B'}

var (
	errBeaconTooLarge  = errors.New("gossip: beacon too large")
	errBeaconVersion   = errors.New("gossip: unknown beacon version")
	errBeaconMalformed = errors.New("gossip: malformed beacon")
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

func encodeBeacon(b beacon) ([]byte, error) {
	if !b.GossipAddr.IsValid() || b.GossipAddr.Port() == 0 {
		return nil, errBeaconMalformed
	}
	ip := b.GossipAddr.Addr().Unmap().AsSlice()
	buf := make([]byte, 0, 64+len(b.Cluster)+len(b.NodeID)+len(b.HTTPAddr)+len(b.RaftAddr))
	buf = append(buf, beaconMagic[:]...)
	buf = append(buf, beaconVersion)
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
	if len(buf) > maxBeaconSize {
		return nil, errBeaconTooLarge
	}
	return buf, nil
}

// decodeBeacon parses and validates one datagram. It never panics on any
// input; the error says why a datagram was dropped.
func decodeBeacon(p []byte) (beacon, error) {
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
	r := reader{p: p[5:]}
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
// values and bad is set.
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
