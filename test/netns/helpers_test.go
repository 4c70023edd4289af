//go:build netns && linux

package netnstest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/netns"
	"github.com/soketi-go/soketi/internal/testutil"
	"github.com/soketi-go/soketi/pkg/cluster"
	"github.com/soketi-go/soketi/pkg/gossip"
)

const (
	nodeTimeout = 2 * time.Second
	// slack covers scheduling of five processes plus the test on a small
	// machine, and the detection tail DESIGN.md describes.
	slack = 3 * time.Second
)

// node is one soketi process in a namespace.
type node struct {
	host   *netns.Host
	cmd    *exec.Cmd
	out    *testutil.LockedBuffer
	exited chan struct{}
}

func startNode(t *testing.T, h *netns.Host, env []string) *node {
	t.Helper()
	cmd := h.Command(context.Background(), testutil.SoketiBinary(t), "start")
	cmd.Dir = t.TempDir() // no stray .env
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	n := &node{host: h, cmd: cmd, out: &testutil.LockedBuffer{}, exited: make(chan struct{})}
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

// clusterKey is the CLUSTER_KEY of the test clusters: like a production
// cluster they run with gossip encrypted, beacons authenticated and the
// cluster port behind mutual TLS. A test that wants the open cluster of
// ADAPTER_DRIVER=cluster alone passes "CLUSTER_KEY=".
const clusterKey = "CLUSTER_KEY=c29rZXRpLW5ldG5zLXRlc3QtY2x1c3Rlci1rZXktMzI="

// view fetches GET /cluster from the node's metrics port, where the whole
// view is (the public port shows a secured cluster's summary only).
func (n *node) view() (cluster.View, error) {
	var v cluster.View
	resp, err := httpClient.Get("http://" + n.host.Addr.String() + ":9601/cluster")
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
