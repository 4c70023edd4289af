//go:build netns && linux

package netnstest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/netns"
	"github.com/soketi-go/soketi/internal/testutil"
	"github.com/soketi-go/soketi/pkg/gossip"
	"github.com/soketi-go/soketi/pkg/pusher"
)

// Timing of the consistent-cluster tests. The reap delay is shortened from
// 10 s so that a dead node's members are purged within the test budget.
const (
	masterTimeout = 2 * time.Second
	reapDelay     = 3 * time.Second
	// loadSlack is what this 2-core machine adds to every bound: three
	// servers, Node.js with up to ~400 clients and the test share it.
	loadSlack     = 2 * time.Second
	formTimeout   = 30 * time.Second
	settleTimeout = 20 * time.Second
)

// raftCluster is three soketi nodes with ADAPTER_DRIVER=cluster, one per
// host, with unicast discovery, CLUSTER_EXPECTED_SERVERS=3 and a data
// directory per host that survives restarts.
type raftCluster struct {
	t     *testing.T
	nw    *netns.Network
	env   []string
	dirs  []string
	nodes []*node // the current process of each host
}

func newRaftCluster(t *testing.T, extraEnv ...string) *raftCluster {
	t.Helper()
	return newRaftClusterOn(t, netns.New(t, 3), extraEnv...)
}

// newRaftClusterOn runs the cluster on the first three hosts of nw; any
// further hosts are left to the test (outsiders on the same LAN).
func newRaftClusterOn(t *testing.T, nw *netns.Network, extraEnv ...string) *raftCluster {
	t.Helper()
	var addrs []string
	for _, h := range nw.Hosts[:3] {
		addrs = append(addrs, `"`+h.Addr.String()+`"`)
	}
	c := &raftCluster{t: t, nw: nw, nodes: make([]*node, 3)}
	c.env = append([]string{
		"ADAPTER_DRIVER=cluster",
		clusterKey,
		"CLUSTER_PREFIX=raft-" + nw.ID,
		"CLUSTER_UNICAST_ADDRESSES=[" + strings.Join(addrs, ",") + "]",
		"CLUSTER_EXPECTED_SERVERS=3",
		// Fixed ports, as deploy/ sets them: a restarted node comes back
		// at the same gossip and raft addresses.
		"CLUSTER_GOSSIP_PORT=11003",
		"CLUSTER_RAFT_PORT=11004",
		fmt.Sprintf("CLUSTER_NODE_TIMEOUT=%d", nodeTimeout.Milliseconds()),
		fmt.Sprintf("CLUSTER_MASTER_TIMEOUT=%d", masterTimeout.Milliseconds()),
		fmt.Sprintf("CLUSTER_REAP_DELAY=%d", reapDelay.Milliseconds()),
		"SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES=true",
	}, extraEnv...) // for a repeated name, os/exec passes the last value
	for i := range c.nodes {
		c.dirs = append(c.dirs, t.TempDir())
		c.start(i)
	}
	c.waitFormed(formTimeout, c.all()...)
	return c
}

// start runs (or re-runs) soketi on host i with its data directory. The
// node id is not set: the node keeps the one it wrote to its data dir.
func (c *raftCluster) start(i int) *node {
	c.t.Helper()
	env := append(slices.Clone(c.env), "CLUSTER_DATA_DIR="+c.dirs[i])
	c.nodes[i] = startNode(c.t, c.nw.Hosts[i], env)
	return c.nodes[i]
}

func (c *raftCluster) all() []int { return []int{0, 1, 2} }

// others are the indexes except i.
func (c *raftCluster) others(i int) []int {
	var out []int
	for _, j := range c.all() {
		if j != i {
			out = append(out, j)
		}
	}
	return out
}

// nodeID is the id host i's node keeps in its data directory.
func (c *raftCluster) nodeID(i int) string {
	b, err := os.ReadFile(filepath.Join(c.dirs[i], "node-id"))
	if err != nil {
		c.t.Fatalf("node id of host %d: %v", i, err)
	}
	return strings.TrimSpace(string(b))
}

// indexOf maps a node id to its host index, or -1.
func (c *raftCluster) indexOf(id string) int {
	for i := range c.dirs {
		if b, err := os.ReadFile(filepath.Join(c.dirs[i], "node-id")); err == nil && strings.TrimSpace(string(b)) == id {
			return i
		}
	}
	return -1
}

// agreedLeader returns the leader every node of group names, with each of
// them alive to exactly the group in gossip, registered in raft and
// reporting a quorum on /cluster; -1 if they do not agree yet.
func (c *raftCluster) agreedLeader(group ...int) int {
	want := make([]*node, len(group))
	for k, i := range group {
		want[k] = c.nodes[i]
	}
	leader := ""
	for _, i := range group {
		n := c.nodes[i]
		if !n.running() || !n.seesExactly(want...) {
			return -1
		}
		v, err := n.view()
		if err != nil || !v.Quorum || !v.Raft.Registered || v.Raft.LeaderID == "" {
			return -1
		}
		if leader != "" && v.Raft.LeaderID != leader {
			return -1
		}
		leader = v.Raft.LeaderID
	}
	l := c.indexOf(leader)
	if !slices.Contains(group, l) {
		return -1
	}
	return l
}

// waitFormed waits until the group agrees on a leader (see agreedLeader)
// and returns its index.
func (c *raftCluster) waitFormed(timeout time.Duration, group ...int) int {
	c.t.Helper()
	leader := -1
	testutil.WaitFor(c.t, timeout, fmt.Sprintf("nodes %v to agree on a registered raft leader", group), func() bool {
		leader = c.agreedLeader(group...)
		return leader >= 0
	})
	return leader
}

// incarnation is host j's incarnation as host i's gossip sees it.
func (c *raftCluster) incarnation(i, j int) uint64 {
	v, err := c.nodes[i].view()
	if err != nil {
		return 0
	}
	for _, m := range v.Members {
		if m.State == gossip.StateAlive && strings.HasPrefix(m.GossipAddr, c.nw.Hosts[j].Addr.String()+":") {
			return m.Incarnation
		}
	}
	return 0
}

// api makes a signed HTTP API GET on node n.
func api(n *node, path string, params url.Values, out any) error {
	q := pusher.SignedQuery("app-key", "app-secret", "GET", path, params, nil, time.Now())
	resp, err := httpClient.Get("http://" + n.host.Addr.String() + ":6001" + path + "?" + q.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// users is GET /apps/app-id/channels/{channel}/users on node n, sorted.
func users(n *node, channel string) ([]string, error) {
	var body struct {
		Users []struct {
			ID string `json:"id"`
		} `json:"users"`
	}
	if err := api(n, "/apps/app-id/channels/"+channel+"/users", nil, &body); err != nil {
		return nil, err
	}
	out := make([]string, 0, len(body.Users))
	for _, u := range body.Users {
		out = append(out, u.ID)
	}
	sort.Strings(out)
	return out, nil
}

// waitSubscriptions waits until node n counts want subscriptions to
// channel over the cluster: a leave sent by a client has been processed.
func (c *raftCluster) waitSubscriptions(timeout time.Duration, n *node, channel string, want int) {
	c.t.Helper()
	var body struct {
		SubscriptionCount int `json:"subscription_count"`
	}
	testutil.WaitFor(c.t, timeout, fmt.Sprintf("%d subscriptions to %s", want, channel), func() bool {
		err := api(n, "/apps/app-id/channels/"+channel, url.Values{"info": {"subscription_count"}}, &body)
		return err == nil && body.SubscriptionCount == want
	})
}

// waitUsers waits until /users of channel on every node of group lists
// exactly want, and returns how long that took.
func (c *raftCluster) waitUsers(timeout time.Duration, channel string, want []string, group ...int) time.Duration {
	c.t.Helper()
	want = slices.Sorted(slices.Values(want))
	last := map[int]string{}
	start := time.Now()
	for {
		ok := true
		for _, i := range group {
			got, err := users(c.nodes[i], channel)
			if err != nil || !slices.Equal(got, want) {
				ok = false
				last[i] = fmt.Sprint(got, err)
			}
		}
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			c.t.Fatalf("timed out after %s waiting for %s users %v on nodes %v; last seen %v", timeout, channel, want, group, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// presenceModel tracks which user each live socket joined a presence
// channel as: the members every node's view must equal.
type presenceModel map[string]string // client id → user id

func (m presenceModel) users() []string {
	seen := map[string]bool{}
	var out []string
	for _, u := range m {
		if !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	sort.Strings(out)
	return out
}

// raftLeader is the leader every node of group names in raft, if they agree
// on one of them and it says it leads; -1 otherwise. Unlike agreedLeader it
// ignores gossip, so it sees an election as soon as it completes.
func (c *raftCluster) raftLeader(group ...int) int {
	leader := ""
	for _, i := range group {
		v, err := c.nodes[i].view()
		if err != nil || v.Raft.LeaderID == "" || (leader != "" && v.Raft.LeaderID != leader) {
			return -1
		}
		leader = v.Raft.LeaderID
	}
	l := c.indexOf(leader)
	if !slices.Contains(group, l) {
		return -1
	}
	if v, err := c.nodes[l].view(); err != nil || v.Raft.State != "leader" {
		return -1
	}
	return l
}

// isolate cuts host i off from the other hosts, in both directions, with
// blackhole routes; the root namespace (the test and its clients) still
// reaches every host. It returns the function that heals the partition,
// which also runs at cleanup.
func (c *raftCluster) isolate(i int) (heal func()) {
	c.t.Helper()
	type route struct{ ns, dst string }
	var routes []route
	for _, j := range c.others(i) {
		routes = append(routes,
			route{c.nw.Hosts[i].Name, c.nw.Hosts[j].Addr.String() + "/32"},
			route{c.nw.Hosts[j].Name, c.nw.Hosts[i].Addr.String() + "/32"})
	}
	for _, r := range routes {
		if out, err := exec.Command("ip", "-n", r.ns, "route", "add", "blackhole", r.dst).CombinedOutput(); err != nil {
			c.t.Fatalf("ip -n %s route add blackhole %s: %v: %s", r.ns, r.dst, err, out)
		}
	}
	var once sync.Once
	heal = func() {
		once.Do(func() {
			for _, r := range routes {
				if out, err := exec.Command("ip", "-n", r.ns, "route", "del", "blackhole", r.dst).CombinedOutput(); err != nil {
					c.t.Errorf("ip -n %s route del blackhole %s: %v: %s", r.ns, r.dst, err, out)
				}
			}
		})
	}
	c.t.Cleanup(heal)
	return heal
}
