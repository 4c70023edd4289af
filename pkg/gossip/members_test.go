package gossip

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testutil"
)

func TestMembers_UnicastClusterDetectsDeathAndLeave(t *testing.T) {
	nodes := loopbackNodes(t, "loop", 4)
	ms := make([]*Members, len(nodes))
	for i, n := range nodes {
		ms[i] = start(t, n.cfg)
	}

	took := testutil.WaitFor(t, 15*time.Second, "every node to see 4 alive members", func() bool {
		for _, m := range ms {
			if len(m.AliveMembers()) != 4 {
				return false
			}
		}
		return true
	})
	t.Logf("converged in %s", took)

	v := ms[0].View()
	if v.NodeID != "loop-1" || v.ClusterName != "loop" || v.Discovery.Mode != ModeUnicast || len(v.Discovery.Targets) != 4 {
		t.Fatalf("view header: %+v", v)
	}
	for _, mem := range v.Members {
		want := map[string]string{"loop-1": "127.0.0.1", "loop-2": "127.0.0.2", "loop-3": "127.0.0.3", "loop-4": "127.0.0.4"}[mem.ID]
		gossip, err := netip.ParseAddrPort(mem.GossipAddr)
		if err != nil || gossip.Addr().String() != want || mem.HTTPAddr != want+":6001" || mem.RaftAddr != want+":7000" ||
			mem.Incarnation == 0 || mem.Since.IsZero() || mem.Self != (mem.ID == "loop-1") {
			t.Errorf("member %+v: want addresses on %s", mem, want)
		}
	}

	timeout := ms[0].cfg.NodeTimeout
	const slack = 3 * time.Second // scheduling under -race on a small machine
	ms[3].Shutdown()
	took = testutil.WaitFor(t, timeout+slack, "loop-4 dead on every other node", func() bool {
		for _, m := range ms[:3] {
			if stateOf(m, "loop-4") != StateDead {
				return false
			}
		}
		return true
	})
	t.Logf("killed node marked dead everywhere after %s (node timeout %s, derived bound %s)",
		took, timeout, ms[0].Timing().DetectionBound)

	if err := ms[2].Leave(time.Second); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	took = testutil.WaitFor(t, timeout, "loop-3 left on loop-1 and loop-2", func() bool {
		return stateOf(ms[0], "loop-3") == StateLeft && stateOf(ms[1], "loop-3") == StateLeft
	})
	t.Logf("leave seen everywhere after %s", took)
	if got := ms[2].LocalNode().State; got != StateLeft {
		t.Errorf("leaving node's own state = %q, want left", got)
	}

	// Dead and left members stay in the view; AliveMembers leaves them out.
	if got := aliveIDs(ms[0]); len(got) != 2 || !got["loop-1"] || !got["loop-2"] {
		t.Errorf("alive members = %v, want loop-1 and loop-2", got)
	}
	if n := len(ms[0].View().Members); n != 4 {
		t.Errorf("view has %d members, want 4 (dead and left kept)", n)
	}

	var sawJoin, sawDead, sawLeave bool
	for ev := range drain(ms[0].Events()) {
		switch {
		case ev.Type == EventJoin && ev.Member.ID == "loop-2":
			sawJoin = true
		case ev.Type == EventDead && ev.Member.ID == "loop-4":
			sawDead = true
		case ev.Type == EventLeave && ev.Member.ID == "loop-3":
			sawLeave = true
		}
	}
	if !sawJoin || !sawDead || !sawLeave {
		t.Errorf("events: join=%v dead=%v leave=%v, want all", sawJoin, sawDead, sawLeave)
	}
	if s := ms[0].Stats(); s.BeaconsSent == 0 || s.BeaconsReceived == 0 || s.JoinAttempts == 0 {
		t.Errorf("stats not counting: %+v", s)
	}
}

// drain returns a channel yielding what is buffered in ch now.
func drain(ch <-chan Event) <-chan Event {
	out := make(chan Event, cap(ch))
	for {
		select {
		case ev := <-ch:
			out <- ev
		default:
			close(out)
			return out
		}
	}
}

func TestMembers_ClusterNamesStayApart(t *testing.T) {
	nodes := loopbackNodes(t, "red", 4)
	// Nodes 3 and 4 form cluster "blue" on the same beacon targets.
	for i := 2; i < 4; i++ {
		nodes[i].cfg.ClusterName = "blue"
	}
	ms := make([]*Members, len(nodes))
	for i, n := range nodes {
		ms[i] = start(t, n.cfg)
	}
	testutil.WaitFor(t, 15*time.Second, "pairs to form and foreign beacons to be dropped", func() bool {
		for _, m := range ms {
			if len(m.AliveMembers()) != 2 || m.Stats().DroppedCluster == 0 {
				return false
			}
		}
		return true
	})
	want := []map[string]bool{{"red-1": true, "red-2": true}, {"red-1": true, "red-2": true},
		{"red-3": true, "red-4": true}, {"red-3": true, "red-4": true}}
	for i, m := range ms {
		if got := aliveIDs(m); len(got) != 2 || !got[nodes[i].cfg.NodeID] || !want[i][nodes[i].cfg.NodeID] {
			t.Errorf("%s sees %v", nodes[i].cfg.NodeID, got)
		}
		if n := len(m.View().Members); n != 2 {
			t.Errorf("%s view has %d members, want 2", nodes[i].cfg.NodeID, n)
		}
	}
}

// Nodes with different keys, or with and without one, drop each other's
// beacons and so never even try to join.
func TestMembers_SecretKeyMismatchDoesNotJoin(t *testing.T) {
	nodes := loopbackNodes(t, "keys", 3)
	nodes[0].cfg.SecretKey = bytes.Repeat([]byte{1}, 32)
	nodes[1].cfg.SecretKey = bytes.Repeat([]byte{2}, 16)
	// nodes[2] has no key.
	ms := make([]*Members, len(nodes))
	for i, n := range nodes {
		ms[i] = start(t, n.cfg)
	}
	testutil.WaitFor(t, 15*time.Second, "every node to drop the others' beacons", func() bool {
		s0, s1, s2 := ms[0].Stats(), ms[1].Stats(), ms[2].Stats()
		// Keyed nodes: the other key's MAC and the missing MAC; keyless: both MACs.
		return s0.DroppedAuth >= 2 && s1.DroppedAuth >= 2 && s2.DroppedKeyed >= 2
	})
	for i, m := range ms {
		s := m.Stats()
		if n := len(m.View().Members); n != 1 || s.JoinAttempts != 0 || s.BeaconsReceived == 0 {
			t.Errorf("%s: view has %d members (want only itself), %d join attempts (want 0), %d own beacons heard",
				nodes[i].cfg.NodeID, n, s.JoinAttempts, s.BeaconsReceived)
		}
	}
}

func TestMembers_SameKeyJoins(t *testing.T) {
	nodes := loopbackNodes(t, "samekey", 3)
	ms := make([]*Members, len(nodes))
	for i := range nodes {
		nodes[i].cfg.SecretKey = []byte("0123456789abcdef")
		ms[i] = start(t, nodes[i].cfg)
	}
	testutil.WaitFor(t, 15*time.Second, "keyed nodes to form a cluster of 3", func() bool {
		for _, m := range ms {
			if len(m.AliveMembers()) != 3 {
				return false
			}
		}
		return true
	})
	for i, m := range ms {
		if s := m.Stats(); s.DroppedAuth != 0 || s.DroppedKeyed != 0 || s.BeaconsReceived == 0 {
			t.Errorf("%s: stats %+v, want keyed beacons heard and none dropped", nodes[i].cfg.NodeID, s)
		}
	}
}

func TestMembers_DropsBadBeacons(t *testing.T) {
	nodes := loopbackNodes(t, "drops", 1)
	m, err := New(nodes[0].cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown()

	from := netip.MustParseAddrPort("127.0.0.9:1234")
	foreign := mustEncode(t, beacon{Cluster: "other", NodeID: "x", GossipAddr: from}, nil)
	own := mustEncode(t, beacon{Cluster: "drops", NodeID: "drops-1", Incarnation: m.incarnation, GossipAddr: from}, nil)
	keyed := mustEncode(t, beacon{Cluster: "drops", NodeID: "keyed", GossipAddr: from}, testBeaconKey(t, "0123456789abcdef"))
	future := bytes.Clone(own)
	future[4] = 9
	for _, p := range [][]byte{[]byte("garbage"), make([]byte, maxBeaconSize+1), future, foreign, keyed, own} {
		m.handleBeacon(p, from)
	}
	s := m.Stats()
	if s.DroppedMalformed != 1 || s.DroppedOversized != 1 || s.DroppedVersion != 1 || s.DroppedCluster != 1 ||
		s.DroppedKeyed != 1 || s.DroppedAuth != 0 || s.BeaconsReceived != 1 || s.JoinAttempts != 0 || len(m.joins) != 0 {
		t.Fatalf("stats %+v, queued joins %d", s, len(m.joins))
	}

	// A new peer is queued once per join interval, with an unspecified
	// address replaced by the datagram source.
	peer := mustEncode(t, beacon{Cluster: "drops", NodeID: "peer", GossipAddr: netip.MustParseAddrPort("0.0.0.0:7946")}, nil)
	m.handleBeacon(peer, from)
	m.handleBeacon(peer, from)
	if len(m.joins) != 1 {
		t.Fatalf("queued joins = %d, want 1", len(m.joins))
	}
	if got := <-m.joins; got.String() != "127.0.0.9:7946" {
		t.Fatalf("join address %s", got)
	}
}

func TestMembers_ViewJSON(t *testing.T) {
	nodes := loopbackNodes(t, "json", 1)
	m := start(t, nodes[0].cfg)
	raw, err := json.Marshal(m.View())
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		NodeID      string `json:"node_id"`
		ClusterName string `json:"cluster_name"`
		Discovery   struct {
			Mode    string   `json:"mode"`
			Targets []string `json:"targets"`
		} `json:"discovery"`
		Members []struct {
			ID    string `json:"id"`
			State string `json:"state"`
			Since string `json:"since"`
		} `json:"members"`
	}
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if got.NodeID != "json-1" || got.Discovery.Mode != "unicast" || len(got.Members) != 1 || got.Members[0].State != "alive" {
		t.Fatalf("view JSON: %s", raw)
	}
	if _, err := time.Parse(time.RFC3339, got.Members[0].Since); err != nil {
		t.Fatalf("since %q: %v", got.Members[0].Since, err)
	}
}

func TestMembers_StartTwice(t *testing.T) {
	nodes := loopbackNodes(t, "twice", 1)
	m := start(t, nodes[0].cfg)
	if err := m.Start(t.Context()); err != ErrStarted {
		t.Fatalf("second Start: %v", err)
	}
	m.Shutdown()
	m.Shutdown()
	if err := m.Leave(time.Second); err != nil {
		t.Fatalf("Leave after Shutdown: %v", err)
	}
}

func TestMembers_WarnsWhenAlone(t *testing.T) {
	nodes := loopbackNodes(t, "alone", 1)
	logs := &testLog{}
	nodes[0].cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	nodes[0].cfg.KeepaliveInterval = 100 * time.Millisecond
	start(t, nodes[0].cfg)
	testutil.WaitFor(t, 20*time.Second, "the no-peers warning", func() bool {
		logs.mu.Lock()
		defer logs.mu.Unlock()
		s := logs.buf.String()
		return strings.Contains(s, "level=WARN") && strings.Contains(s, "no peers found") &&
			strings.Contains(s, "discovery_mode=unicast") && strings.Contains(s, "discovery_targets=")
	})
}
