package gossip

import (
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testutil"
)

// peerTrap listens on TCP and UDP at one ip:port and counts every
// connection and datagram: what memberlist would send to a peer it joins.
type peerTrap struct {
	addr  netip.AddrPort
	conns atomic.Int64
	pkts  atomic.Int64
}

func newPeerTrap(t *testing.T, ip string) *peerTrap {
	t.Helper()
	ln, err := net.Listen("tcp4", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	tr := &peerTrap{addr: ln.Addr().(*net.TCPAddr).AddrPort()}
	pc, err := net.ListenPacket("udp4", tr.addr.String())
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); pc.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tr.conns.Add(1)
			c.Close() // the join fails at once
		}
	}()
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			tr.pkts.Add(1)
		}
	}()
	return tr
}

func (tr *peerTrap) heard() int64 { return tr.conns.Load() + tr.pkts.Load() }

// A beacon that is well formed but not authenticated under this node's key
// makes no join attempt: memberlist never hears of the spoofer. A correctly
// keyed beacon sent after the spoofed ones still leads to a join, which
// shows the spoofed ones were processed and dropped, not lost.
func TestMembers_SpoofedBeaconsMakeNoJoin(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	tests := []struct {
		name   string
		secret []byte // the node's CLUSTER_KEY
		spoofs func(spoofer beacon, captured []byte) [][]byte
		canary []byte // key of the canary beacon
		want   func(Stats) bool
	}{
		{
			name:   "keyed node",
			secret: secret,
			spoofs: func(spoofer beacon, captured []byte) [][]byte {
				tampered := append([]byte(nil), captured...)
				copy(tampered[15:19], spoofer.GossipAddr.Addr().AsSlice()) // ip 15-18, port 19-20
				tampered[19], tampered[20] = byte(spoofer.GossipAddr.Port()>>8), byte(spoofer.GossipAddr.Port())
				return [][]byte{
					mustEncode(t, spoofer, nil),                                      // no MAC
					mustEncode(t, spoofer, testBeaconKey(t, "another cluster key!")), // other key
					mustEncode(t, spoofer, secret),                                   // raw secret, not the derived key
					tampered,                                                         // captured, address rewritten
				}
			},
			canary: testBeaconKey(t, string(secret)),
			want:   func(s Stats) bool { return s.DroppedAuth == 4 && s.DroppedKeyed == 0 },
		},
		{
			name: "keyless node",
			spoofs: func(spoofer beacon, _ []byte) [][]byte {
				return [][]byte{mustEncode(t, spoofer, testBeaconKey(t, string(secret)))}
			},
			want: func(s Stats) bool { return s.DroppedKeyed == 1 && s.DroppedAuth == 0 },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodes := loopbackNodes(t, "spoof", 1)
			nodes[0].cfg.SecretKey = tt.secret
			m := start(t, nodes[0].cfg)
			spoofTrap, canaryTrap := newPeerTrap(t, "127.0.0.77"), newPeerTrap(t, "127.0.0.78")

			spoofer := beacon{Cluster: "spoof", NodeID: "spoofer", Incarnation: 1, GossipAddr: spoofTrap.addr}
			canary := beacon{Cluster: "spoof", NodeID: "canary", Incarnation: 1, GossipAddr: canaryTrap.addr}
			canaryBeacon := mustEncode(t, canary, tt.canary)

			conn, err := net.Dial("udp4", net.JoinHostPort(nodes[0].ip, strconv.Itoa(nodes[0].port)))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			for _, p := range append(tt.spoofs(spoofer, canaryBeacon), canaryBeacon) {
				if _, err := conn.Write(p); err != nil {
					t.Fatal(err)
				}
			}
			// One socket on loopback: the datagrams arrive in order, and the
			// receive loop handles them one by one before queueing a join.
			testutil.WaitFor(t, 10*time.Second, "the canary's join", func() bool { return canaryTrap.conns.Load() > 0 })
			s := m.Stats()
			if !tt.want(s) {
				t.Errorf("spoofed beacons not dropped as unauthenticated: %+v", s)
			}
			if s.JoinAttempts != 1 || spoofTrap.heard() != 0 {
				t.Errorf("join attempts %d (want 1, the canary), spoofer contacted %d times (want 0); stats %+v",
					s.JoinAttempts, spoofTrap.heard(), s)
			}
			for _, n := range m.ml.Members() {
				if n.Name == "spoofer" || n.Port == spoofTrap.addr.Port() {
					t.Errorf("memberlist knows the spoofer: %s %s", n.Name, n.Address())
				}
			}
			if stateOf(m, "spoofer") != "" {
				t.Error("the spoofer is in the view")
			}
		})
	}
}
