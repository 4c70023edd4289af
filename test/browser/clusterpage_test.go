// Package browsertest drives the real binary from a real browser: Debian's
// chromium, headless, through chromedp.
package browsertest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/soketi-go/soketi/internal/testutil"
)

// nodeTimeout is the cluster's CLUSTER_NODE_TIMEOUT: the page must mark a
// killed node dead within it plus one refresh and the browser's own time.
const nodeTimeout = 2 * time.Second

// chromium finds the browser; CI installs it (.ci/run), and there a
// missing browser fails the test instead of skipping it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("CHROMIUM"), "chromium", "chromium-browser"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no chromium on PATH: CI must run the browser tests (.ci/run installs Debian's chromium)")
	}
	t.Skip("no chromium on PATH (apt-get install chromium)")
	return ""
}

// browser starts a headless chromium with nothing of the user's and no
// traffic of its own, and returns a tab's context.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox, // root in CI
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.WindowSize(1400, 800),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// node is one soketi process of the test's cluster.
type node struct {
	id, ip      string
	port, mport int
	cmd         *exec.Cmd
	out         *testutil.LockedBuffer
	exited      chan struct{}
}

func (n *node) metricsURL() string { return fmt.Sprintf("http://%s:%d", n.ip, n.mport) }
func (n *node) mainURL() string    { return fmt.Sprintf("http://%s:%d", n.ip, n.port) }

// freePorts finds n TCP ports and one UDP port free on every address.
func freePorts(t *testing.T, ips []string, n int) (tcp []int, udp int) {
	t.Helper()
	free := func(network string, port int) bool {
		for _, ip := range ips {
			addr := net.JoinHostPort(ip, strconv.Itoa(port))
			if network == "udp" {
				pc, err := net.ListenPacket("udp4", addr)
				if err != nil {
					return false
				}
				pc.Close()
				continue
			}
			ln, err := net.Listen("tcp4", addr)
			if err != nil {
				return false
			}
			ln.Close()
		}
		return true
	}
	seen := map[int]bool{}
	for try := 0; try < 500 && (len(tcp) < n || udp == 0); try++ {
		p := 20000 + rand.IntN(30000)
		if seen[p] {
			continue
		}
		seen[p] = true
		switch {
		case udp == 0 && free("udp", p):
			udp = p
		case len(tcp) < n && free("tcp", p) && free("udp", p): // gossip uses both
			tcp = append(tcp, p)
		}
	}
	if len(tcp) < n || udp == 0 {
		t.Fatal("no free ports on the test addresses")
	}
	return tcp, udp
}

// startCluster runs three secured nodes of the real binary, each on its
// own loopback address (unique to this run), found by unicast beacons.
func startCluster(t *testing.T) []*node {
	t.Helper()
	bin := testutil.SoketiBinary(t)
	base := 10 + rand.IntN(200)
	ips := []string{}
	for i := 1; i <= 3; i++ {
		ips = append(ips, fmt.Sprintf("127.%d.%d.%d", 100+rand.IntN(100), base, i))
	}
	// One /24 per run: keep the first address's network for all three.
	for i := range ips {
		ips[i] = ips[0][:strings.LastIndex(ips[0], ".")] + "." + strconv.Itoa(i+1)
	}
	ports, discovery := freePorts(t, ips, 4)
	unicast, _ := json.Marshal(ips)
	key := base64.StdEncoding.EncodeToString([]byte("browser-test-key-of-32-bytes-ok!"))
	dir := t.TempDir()
	var nodes []*node
	for i, ip := range ips {
		n := &node{id: fmt.Sprintf("node-%d", i+1), ip: ip, port: ports[0], mport: ports[1],
			out: &testutil.LockedBuffer{}, exited: make(chan struct{})}
		env := map[string]string{
			"SOKETI_HOST": ip, "SOKETI_PORT": strconv.Itoa(ports[0]),
			"SOKETI_METRICS_HOST": ip, "SOKETI_METRICS_SERVER_PORT": strconv.Itoa(ports[1]),
			"ADAPTER_DRIVER": "cluster", "CLUSTER_NODE_ID": n.id, "CLUSTER_KEY": key,
			"CLUSTER_HOST": ip, "CLUSTER_ADVERTISE_ADDRESS": ip, "CLUSTER_PORT": strconv.Itoa(discovery),
			"CLUSTER_GOSSIP_PORT": strconv.Itoa(ports[2]), "CLUSTER_RAFT_PORT": strconv.Itoa(ports[3]),
			"CLUSTER_UNICAST_ADDRESSES": string(unicast), "CLUSTER_EXPECTED_SERVERS": "3",
			"CLUSTER_NODE_TIMEOUT": strconv.Itoa(int(nodeTimeout / time.Millisecond)),
			"CLUSTER_DATA_DIR":     filepath.Join(dir, n.id), "CLUSTER_PREFIX": "browser-test",
		}
		n.cmd = exec.Command(bin, "start")
		n.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		for k, v := range env {
			n.cmd.Env = append(n.cmd.Env, k+"="+v)
		}
		n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
		n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := n.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { _ = n.cmd.Wait(); close(n.exited) }()
		nodes = append(nodes, n)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			_ = n.cmd.Process.Kill()
			<-n.exited
			if t.Failed() {
				t.Logf("--- %s output (last 3000 bytes):\n%s", n.id, tail(n.out.String(), 3000))
			}
		}
	})
	return nodes
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// clusterJSON reads a node's detailed view from its metrics port.
func clusterJSON(n *node) (members map[string]string, leader string, ok bool) {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(n.metricsURL() + "/cluster")
	if err != nil {
		return nil, "", false
	}
	defer resp.Body.Close()
	var v struct {
		Members []struct{ ID, State string }
		Raft    struct {
			LeaderID string `json:"leader_id"`
		}
	}
	if json.NewDecoder(resp.Body).Decode(&v) != nil {
		return nil, "", false
	}
	members = map[string]string{}
	for _, m := range v.Members {
		members[m.ID] = m.State
	}
	return members, v.Raft.LeaderID, true
}

// pageState reads what the page shows, from its DOM.
type pageState struct {
	View    string            `json:"view"`
	States  map[string]string `json:"states"`
	Masters []string          `json:"masters"`
	Live    bool              `json:"live"`
	Marker  bool              `json:"marker"` // set before the kill: false after a reload
	Text    string            `json:"text"`
}

const readPage = `(() => {
  const rows = [...document.querySelectorAll('#nodes tbody tr[data-node]')];
  return {
    view: document.body.dataset.view || '',
    states: Object.fromEntries(rows.map((r) => [r.dataset.node, r.dataset.state])),
    masters: rows.filter((r) => r.dataset.master === 'true').map((r) => r.dataset.node),
    live: document.getElementById('live').dataset.live === 'true',
    marker: window.__beforeKill === true,
    text: document.body.innerText,
  };
})()`

func read(t *testing.T, ctx context.Context) pageState {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[pageState](readPage))
	if err != nil {
		t.Fatalf("read the page: %v", err)
	}
	return s
}

// waitPage polls the page's DOM until cond holds, at most timeout.
func waitPage(t *testing.T, ctx context.Context, timeout time.Duration, what string, cond func(pageState) bool) (pageState, time.Duration) {
	t.Helper()
	start := time.Now()
	var s pageState
	for time.Since(start) < timeout {
		if s = read(t, ctx); cond(s) {
			return s, time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the page never showed %s within %v; it shows %+v", what, timeout, s)
	return s, 0
}

// The check: three nodes and one master on the operators' page,
// then a node killed and marked dead on screen without a reload; the
// public port of the secured cluster shows counts only.
func TestClusterPage_FollowsANodesDeathLive(t *testing.T) {
	ctx := browser(t)
	nodes := startCluster(t)
	testutil.WaitFor(t, 45*time.Second, "three alive members and a leader", func() bool {
		m, leader, ok := clusterJSON(nodes[0])
		alive := 0
		for _, s := range m {
			if s == "alive" {
				alive++
			}
		}
		return ok && alive == 3 && leader != ""
	})

	if err := chromedp.Do(ctx, chromedp.Navigate(nodes[0].metricsURL()+"/cluster")); err != nil {
		t.Fatal(err)
	}
	s, _ := waitPage(t, ctx, 10*time.Second, "three alive nodes and one master", func(s pageState) bool {
		alive := 0
		for _, st := range s.States {
			if st == "alive" {
				alive++
			}
		}
		return s.View == "full" && s.Live && alive == 3 && len(s.Masters) == 1
	})
	master := s.Masters[0]
	t.Logf("page shows %v, master %s", s.States, master)
	if path := os.Getenv("CLUSTER_PAGE_SCREENSHOT"); path != "" {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Kill the master unless the page is served by it; then the page must
	// also follow the election.
	var victim *node
	for _, n := range nodes[1:] {
		if n.id == master {
			victim = n
		}
	}
	if victim == nil {
		victim = nodes[1]
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__beforeKill = true`)); err != nil {
		t.Fatal(err)
	}
	_ = victim.cmd.Process.Kill()
	<-victim.exited
	s, took := waitPage(t, ctx, nodeTimeout+4*time.Second, victim.id+" dead", func(s pageState) bool {
		return s.States[victim.id] == "dead"
	})
	t.Logf("the page marked %s dead %v after SIGKILL (CLUSTER_NODE_TIMEOUT %v)", victim.id, took.Round(10*time.Millisecond), nodeTimeout)
	if !s.Marker {
		t.Fatal("the page reloaded")
	}
	s, _ = waitPage(t, ctx, 10*time.Second, "one master among the survivors", func(s pageState) bool {
		return len(s.Masters) == 1 && s.Masters[0] != victim.id && s.Live
	})
	t.Logf("master after the kill: %s", s.Masters[0])

	// The public port of a secured cluster: the same page, counts only.
	if err := chromedp.Do(ctx, chromedp.Navigate(nodes[0].mainURL()+"/cluster")); err != nil {
		t.Fatal(err)
	}
	s, _ = waitPage(t, ctx, 10*time.Second, "the summary view", func(s pageState) bool { return s.View == "summary" && s.Live })
	for _, n := range nodes {
		if strings.Contains(s.Text, n.id) || strings.Contains(s.Text, n.ip) {
			t.Fatalf("the public page of a secured cluster shows %s: %q", n.id, s.Text)
		}
	}
	if !strings.Contains(s.Text, "metrics port") {
		t.Fatalf("the summary page does not say where the detail is: %q", s.Text)
	}
}
