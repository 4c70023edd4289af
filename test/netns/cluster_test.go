//go:build netns && linux

// Package netnstest runs the real soketi binary, one node per network
// namespace on a private bridge, and checks cluster discovery and failure
// detection for each discovery mode. Run as root: go test -tags netns ./test/netns/
package netnstest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/netns"
	"github.com/soketi-go/soketi/pkg/gossip"
)

const (
	nodeTimeout = 2 * time.Second
	// slack covers scheduling of five processes plus the test on a small
	// machine, and the detection tail DESIGN.md describes.
	slack = 3 * time.Second
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds cmd/soketi once per test run, or returns $SOKETI_BIN
// (a prebuilt binary to test instead).
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if binPath = os.Getenv("SOKETI_BIN"); binPath != "" {
			return
		}
		dir, err := os.MkdirTemp("", "soketi-netns-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "soketi")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/soketi")
		cmd.Dir = filepath.Join("..", "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/soketi: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// lockedBuffer collects a process's output.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// node is one soketi process in a namespace.
type node struct {
	host   *netns.Host
	cmd    *exec.Cmd
	out    *lockedBuffer
	exited chan struct{}
}

func startNode(t *testing.T, h *netns.Host, env []string) *node {
	t.Helper()
	cmd := h.Command(context.Background(), binary(t), "start")
	cmd.Dir = t.TempDir() // no stray .env
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	n := &node{host: h, cmd: cmd, out: &lockedBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = n.out, n.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start soketi in %s: %v", h.Name, err)
	}
	go func() { cmd.Wait(); close(n.exited) }()
	t.Cleanup(func() {
		n.kill()
		if t.Failed() {
			t.Logf("--- %s (%s) output:\n%s", h.Name, h.Addr, n.out.String())
		}
	})
	return n
}

func (n *node) kill() {
	select {
	case <-n.exited:
	default:
		n.cmd.Process.Signal(syscall.SIGKILL)
		<-n.exited
	}
}

func (n *node) running() bool {
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

var httpClient = &http.Client{Timeout: time.Second}

// view fetches GET /cluster from the node.
func (n *node) view() (gossip.View, error) {
	var v gossip.View
	resp, err := httpClient.Get("http://" + n.host.Addr.String() + ":6001/cluster")
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return v, fmt.Errorf("GET /cluster: %s", resp.Status)
	}
	return v, json.NewDecoder(resp.Body).Decode(&v)
}

// states maps each member's IP to its state as n sees it.
func (n *node) states() map[netip.Addr]gossip.State {
	v, err := n.view()
	if err != nil {
		return nil
	}
	out := make(map[netip.Addr]gossip.State)
	for _, m := range v.Members {
		if ap, err := netip.ParseAddrPort(m.GossipAddr); err == nil {
			out[ap.Addr()] = m.State
		}
	}
	return out
}

// seesExactly reports whether n sees exactly want alive (and nothing else alive).
func (n *node) seesExactly(want ...*node) bool {
	st := n.states()
	alive := 0
	for _, s := range st {
		if s == gossip.StateAlive {
			alive++
		}
	}
	if st == nil || alive != len(want) {
		return false
	}
	for _, w := range want {
		if st[w.host.Addr] != gossip.StateAlive {
			return false
		}
	}
	return true
}

// waitFor polls cond every 50ms and returns how long it took.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// skipIfNotWired skips when the binary was built without cluster support.
func skipIfNotWired(t *testing.T, n *node) {
	t.Helper()
	select {
	case <-n.exited:
		if strings.Contains(n.out.String(), "not available in this build") {
			t.Skip("cmd/soketi does not wire pkg/gossip yet (ADAPTER_DRIVER=cluster unavailable)")
		}
		t.Fatalf("soketi exited at start:\n%s", n.out.String())
	case <-time.After(300 * time.Millisecond):
	}
}

func clusterEnv(prefix string, i int, extra ...string) []string {
	return append([]string{
		"ADAPTER_DRIVER=cluster",
		"CLUSTER_PREFIX=" + prefix,
		fmt.Sprintf("CLUSTER_NODE_ID=node-%d", i),
		fmt.Sprintf("CLUSTER_NODE_TIMEOUT=%d", nodeTimeout.Milliseconds()),
		"SOKETI_DEBUG=1",
	}, extra...)
}

func TestCluster_DiscoveryModes(t *testing.T) {
	modes := []struct {
		name string
		env  func(nw *netns.Network) []string
	}{
		{gossip.ModeBroadcast, func(*netns.Network) []string { return nil }},
		{gossip.ModeMulticast, func(nw *netns.Network) []string {
			b := nw.Subnet.Addr().As4()
			return []string{fmt.Sprintf("CLUSTER_MULTICAST_ADDRESS=239.255.%d.%d", b[1], b[2])}
		}},
		{gossip.ModeUnicast, func(nw *netns.Network) []string {
			var addrs []string
			for _, h := range nw.Hosts {
				addrs = append(addrs, `"`+h.Addr.String()+`"`)
			}
			return []string{"CLUSTER_UNICAST_ADDRESSES=[" + strings.Join(addrs, ",") + "]"}
		}},
	}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			const size = 5
			nw := netns.New(t, size)
			prefix := "e2e-" + nw.ID + "-" + mode.name
			nodes := make([]*node, size)
			for i, h := range nw.Hosts {
				nodes[i] = startNode(t, h, clusterEnv(prefix, i, mode.env(nw)...))
				if i == 0 {
					skipIfNotWired(t, nodes[0])
				}
			}
			lastStart := time.Now()
			waitFor(t, 30*time.Second, "every node to see all 5 alive", func() bool {
				for _, n := range nodes {
					if !n.seesExactly(nodes...) {
						return false
					}
				}
				return true
			})
			t.Logf("MEASURE mode=%s converge_5_nodes=%s (from start of the last process)", mode.name, time.Since(lastStart).Round(time.Millisecond))
			for _, n := range nodes {
				if v, _ := n.view(); v.Discovery.Mode != mode.name {
					t.Fatalf("%s reports discovery mode %q", n.host.Name, v.Discovery.Mode)
				}
			}

			// SIGKILL: dead on every other node within the node timeout (+ slack).
			victim, rest := nodes[size-1], nodes[:size-1]
			killed := time.Now()
			victim.kill()
			waitFor(t, nodeTimeout+slack, "the killed node dead on every other node", func() bool {
				for _, n := range rest {
					if n.states()[victim.host.Addr] != gossip.StateDead {
						return false
					}
				}
				return true
			})
			t.Logf("MEASURE mode=%s detect_sigkill=%s (node timeout %s)", mode.name, time.Since(killed).Round(time.Millisecond), nodeTimeout)

			// A cut link: dead for the others; alive again once restored.
			cut, others := rest[len(rest)-1], rest[:len(rest)-1]
			if err := cut.host.Cut(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, nodeTimeout+slack, "the cut node dead on the others", func() bool {
				for _, n := range others {
					if n.states()[cut.host.Addr] != gossip.StateDead {
						return false
					}
				}
				return true
			})
			if err := cut.host.Restore(); err != nil {
				t.Fatal(err)
			}
			restored := time.Now()
			waitFor(t, 30*time.Second, "the restored node alive everywhere again", func() bool {
				for _, n := range rest {
					if !n.seesExactly(rest...) {
						return false
					}
				}
				return true
			})
			t.Logf("MEASURE mode=%s rejoin_after_restore=%s", mode.name, time.Since(restored).Round(time.Millisecond))
			for _, n := range rest {
				if !n.running() {
					t.Fatalf("%s exited", n.host.Name)
				}
			}
		})
	}
}

func TestCluster_PrefixesStayApart(t *testing.T) {
	nw := netns.New(t, 4)
	nodes := make([]*node, 4)
	for i, h := range nw.Hosts {
		prefix := "red-" + nw.ID
		if i >= 2 {
			prefix = "blue-" + nw.ID
		}
		nodes[i] = startNode(t, h, clusterEnv(prefix, i))
		if i == 0 {
			skipIfNotWired(t, nodes[0])
		}
	}
	red, blue := nodes[:2], nodes[2:]
	waitFor(t, 30*time.Second, "both pairs to form", func() bool {
		return red[0].seesExactly(red...) && red[1].seesExactly(red...) &&
			blue[0].seesExactly(blue...) && blue[1].seesExactly(blue...)
	})
	// Beacons from the other cluster keep arriving; for a few node timeouts
	// neither view may ever list a member of the other.
	until := time.Now().Add(2 * nodeTimeout)
	for time.Now().Before(until) {
		for i, n := range nodes {
			if st := n.states(); len(st) > 2 {
				t.Fatalf("node %d sees a foreign member: %v", i, st)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}
