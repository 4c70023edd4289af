//go:build netns && linux

// Package netnstest runs the real soketi binary, one node per network
// namespace on a private bridge. It checks cluster discovery and failure
// detection for each discovery mode (cluster_test.go) and, with pusher-js
// clients and the pusher server SDK run by clients.js, the consistent
// cluster: delivery and presence across nodes, leader loss, a partition,
// a restart and a large presence channel (pusher_test.go, faults_test.go,
// large_presence_test.go). Run as root, with Node.js 20 and `npm ci` done
// in test/e2e: go test -tags netns -count=1 ./test/netns/
package netnstest

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/netns"
	"github.com/soketi-go/soketi/internal/testutil"
	"github.com/soketi-go/soketi/pkg/cluster"
	"github.com/soketi-go/soketi/pkg/gossip"
)

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
		clusterKey,
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
			testutil.WaitFor(t, 30*time.Second, "every node to see all 5 alive", func() bool {
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
			testutil.WaitFor(t, nodeTimeout+slack, "the killed node dead on every other node", func() bool {
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
			testutil.WaitFor(t, nodeTimeout+slack, "the cut node dead on the others", func() bool {
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
			testutil.WaitFor(t, 30*time.Second, "the restored node alive everywhere again", func() bool {
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
		// Without a key, as ADAPTER_DRIVER=cluster alone runs: the cluster
		// forms as before and says on its public port that it is open.
		nodes[i] = startNode(t, h, clusterEnv(prefix, i, "CLUSTER_KEY="))
		if i == 0 {
			skipIfNotWired(t, nodes[0])
		}
	}
	red, blue := nodes[:2], nodes[2:]
	defer func() {
		resp, err := httpClient.Get("http://" + nodes[0].host.Addr.String() + ":6001/cluster")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v cluster.View
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || v.Secured || len(v.Members) != 2 {
			t.Errorf("public GET /cluster of an open cluster: secured %v, %d members, %v", v.Secured, len(v.Members), err)
		}
		if !strings.Contains(nodes[0].out.String(), "CLUSTER_KEY is not set") {
			t.Error("an open cluster did not warn that it is open")
		}
	}()
	testutil.WaitFor(t, 30*time.Second, "both pairs to form", func() bool {
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

// /ready answers 503 while a cluster node is still joining, and 200 once it
// is in a group (here: alone, after the discovery window), so that a load
// balancer never routes to a node a merge could still wipe.
func TestCluster_ReadyOnlyOnceInAGroup(t *testing.T) {
	nw := netns.New(t, 1)
	n := startNode(t, nw.Hosts[0], clusterEnv("ready-"+nw.ID, 0))
	url := "http://" + nw.Hosts[0].Addr.String() + ":6001/ready"
	var codes []int
	testutil.WaitFor(t, 15*time.Second, "/ready to answer 200", func() bool {
		resp, err := httpClient.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		if len(codes) == 0 || codes[len(codes)-1] != resp.StatusCode {
			codes = append(codes, resp.StatusCode)
		}
		return resp.StatusCode == 200
	})
	if len(codes) < 2 || codes[0] != 503 {
		t.Fatalf("/ready answered %v; want 503 while joining, then 200", codes)
	}
	if !n.running() {
		t.Fatal("node exited")
	}
}
