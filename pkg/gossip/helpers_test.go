package gossip

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
)

// testLog collects log lines and prints them only when the test fails, so
// memberlist goroutines that outlive a test never write to a finished T.
type testLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf.Len() < 1<<20 {
		l.buf.Write(p)
	}
	return len(p), nil
}

func newTestLogger(t *testing.T) *slog.Logger {
	l := &testLog{}
	t.Cleanup(func() {
		if t.Failed() {
			l.mu.Lock()
			t.Log("gossip logs:\n" + l.buf.String())
			l.mu.Unlock()
		}
	})
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// freeUDPPort returns a UDP port that was free on ip a moment ago.
func freeUDPPort(t *testing.T, ip string) int {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatalf("free port on %s: %v", ip, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// testNode describes one node of an in-process loopback cluster.
type testNode struct {
	ip   string
	port int
	cfg  Config
}

// loopbackNodes returns n node configs on 127.0.0.1..n, each with its own
// free beacon port and unicast discovery listing all of them.
func loopbackNodes(t *testing.T, cluster string, n int) []testNode {
	t.Helper()
	nodes := make([]testNode, n)
	var addrs []string
	for i := range nodes {
		ip := fmt.Sprintf("127.0.0.%d", i+1)
		nodes[i] = testNode{ip: ip, port: freeUDPPort(t, ip)}
		addrs = append(addrs, fmt.Sprintf("%s:%d", ip, nodes[i].port))
	}
	for i := range nodes {
		nodes[i].cfg = Config{
			ClusterName:      cluster,
			NodeID:           fmt.Sprintf("%s-%d", cluster, i+1),
			BindHost:         nodes[i].ip,
			DiscoveryPort:    nodes[i].port,
			UnicastAddresses: addrs,
			HTTPAddr:         nodes[i].ip + ":6001",
			RaftAddr:         nodes[i].ip + ":7000",
			Logger:           newTestLogger(t),
		}
	}
	return nodes
}

// start creates and starts a member, shut down at cleanup.
func start(t *testing.T, cfg Config) *Members {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", cfg.NodeID, err)
	}
	t.Cleanup(m.Shutdown)
	if err := m.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return m
}

// stateOf returns id's state in m's view, or "" when absent.
func stateOf(m *Members, id string) State {
	for _, mem := range m.View().Members {
		if mem.ID == id {
			return mem.State
		}
	}
	return ""
}

func aliveIDs(m *Members) map[string]bool {
	ids := make(map[string]bool)
	for _, mem := range m.AliveMembers() {
		ids[mem.ID] = true
	}
	return ids
}
