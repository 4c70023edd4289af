package gossip

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestEventQueue_DropsOldestWhenFull(t *testing.T) {
	q := newEventQueue(2)
	for _, id := range []string{"a", "b", "c"} {
		q.push(Event{Type: EventJoin, Member: Member{ID: id}})
	}
	if got := q.dropped.Load(); got != 1 {
		t.Fatalf("dropped = %d, want 1", got)
	}
	if a, b := (<-q.ch).Member.ID, (<-q.ch).Member.ID; a != "b" || b != "c" {
		t.Fatalf("kept %s, %s; want b, c", a, b)
	}
	q.close()
	q.push(Event{}) // after close: ignored, no panic
	if _, ok := <-q.ch; ok {
		t.Fatal("channel not closed")
	}
}

func TestConfig_Validate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // substring of the error; "" means valid
	}{
		{"defaults", Config{}, ""},
		{"unicast with and without port", Config{UnicastAddresses: []string{"10.0.0.1", "10.0.0.2:12000"}}, ""},
		{"hostname bind", Config{BindHost: "localhost"}, "bind host"},
		{"ipv6 bind", Config{BindHost: "::1"}, "bind host"},
		{"bad unicast", Config{UnicastAddresses: []string{"soketi_svc"}}, "unicast address"},
		{"ipv6 unicast", Config{UnicastAddresses: []string{"[::1]:11002"}}, "unicast address"},
		{"unicast port zero", Config{UnicastAddresses: []string{"10.0.0.1:0"}}, "unicast address"},
		{"not multicast", Config{MulticastAddress: "10.0.0.1"}, "multicast address"},
		{"bad key", Config{SecretKey: []byte("short")}, "secret key"},
		{"timeout below check", Config{CheckInterval: time.Second, NodeTimeout: 500 * time.Millisecond}, "node timeout"},
		{"master below node", Config{MasterTimeout: time.Second}, "master timeout"},
		{"same ports", Config{DiscoveryPort: 7000, GossipPort: 7000}, "both 7000"},
		{"long cluster", Config{ClusterName: strings.Repeat("x", 65)}, "cluster name"},
		{"control in id", Config{NodeID: "a\tb"}, "node id"},
		{"advertise unspecified", Config{AdvertiseAddr: "0.0.0.0"}, "advertise addr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.cfg.withDefaults()
			if tt.want == "" && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
	c, _ := Config{}.withDefaults()
	if c.ClusterName != "soketi" || c.DiscoveryPort != 11002 || c.NodeTimeout != 2*time.Second ||
		c.MasterTimeout != c.NodeTimeout || !strings.Contains(c.NodeID, "-") {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestLogWriter_RoutesAndSuspects(t *testing.T) {
	nodes := loopbackNodes(t, "logw", 1)
	m, err := New(nodes[0].cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown()
	m.setState("peer", func(mem *Member) { mem.State = StateAlive }, "")
	w := logWriter{m: m}
	w.Write([]byte("[INFO] memberlist: Suspect peer has failed, no acks received\n"))
	if got := stateOf(m, "peer"); got != StateSuspect {
		t.Fatalf("state after suspect line = %q", got)
	}
	w.Write([]byte("[WARN] memberlist: Refuting a suspect message (from: x)\n"))
	w.Write([]byte("unprefixed line\n"))
}

func TestReap_DropsOldDeadMembers(t *testing.T) {
	nodes := loopbackNodes(t, "reap", 1)
	m, err := New(nodes[0].cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown()
	m.setState("gone", func(mem *Member) { mem.State = StateDead }, "")
	m.setState("fresh", func(mem *Member) { mem.State = StateDead }, "")
	m.mu.Lock()
	m.members["gone"].Since = time.Now().Add(-deadRetention - time.Second)
	m.mu.Unlock()
	m.reap(time.Now())
	if stateOf(m, "gone") != "" || stateOf(m, "fresh") != StateDead {
		t.Fatalf("after reap: %+v", m.View().Members)
	}
}

func TestParseUnicast_NamesAndAddresses(t *testing.T) {
	for in, want := range map[string]unicastTarget{
		"10.0.0.1":                    {addr: netip.MustParseAddrPort("10.0.0.1:11002"), port: 11002},
		"10.0.0.1:12000":              {addr: netip.MustParseAddrPort("10.0.0.1:12000"), port: 12000},
		"soketi-0.soketi.default.svc": {host: "soketi-0.soketi.default.svc", port: 11002},
		"soketi-1.soketi:11005":       {host: "soketi-1.soketi", port: 11005},
		" localhost ":                 {host: "localhost", port: 11002},
	} {
		got, err := parseUnicast(in, 11002)
		if err != nil || got != want {
			t.Errorf("parseUnicast(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
}

// A name in the unicast list is resolved to every address it has.
func TestUnicastDiscovery_ResolvesNames(t *testing.T) {
	d := &discovery{unicast: []unicastTarget{{host: "localhost", port: 11002}, {addr: netip.MustParseAddrPort("127.0.0.9:1"), port: 1}}}
	got := d.resolve(t.Context(), func(h string, err error) { t.Errorf("resolve %s: %v", h, err) })
	want := map[netip.AddrPort]bool{netip.MustParseAddrPort("127.0.0.1:11002"): true, netip.MustParseAddrPort("127.0.0.9:1"): true}
	if len(got) != 2 || !want[got[0]] || !want[got[1]] {
		t.Fatalf("targets = %v", got)
	}
}
