package limiter

import (
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/soketi-go/soketi/pkg/pusher"
)

// fakeNet connects Cluster limiters in one process. By default an ask is
// answered in place; with delay set, after delay on another goroutine.
type fakeNet struct {
	mu     sync.Mutex
	nodes  map[string]*Cluster
	master string
	down   bool // the master receives nothing
	alive  []string
	delay  time.Duration
	msgs   atomic.Int64 // asks and grants that crossed the "network"
}

type fakeTransport struct {
	net *fakeNet
	id  string
}

func (f fakeTransport) Master() (string, bool) {
	f.net.mu.Lock()
	defer f.net.mu.Unlock()
	return f.net.master, f.net.master == f.id && f.id != ""
}

func (f fakeTransport) Send(master string, a Ask) error {
	f.net.mu.Lock()
	down, m, self := f.net.down, f.net.nodes[master], f.net.nodes[f.id]
	f.net.mu.Unlock()
	f.net.msgs.Add(1)
	if down || m == nil {
		return nil // lost on the way
	}
	deliver := func() {
		g := m.Serve(f.id, a, true)
		f.net.msgs.Add(1)
		self.HandleGrant(master, g)
	}
	if f.net.delay > 0 {
		go func() { time.Sleep(f.net.delay); deliver() }()
	} else {
		deliver()
	}
	return nil
}

func (f fakeTransport) Share() (int, int) {
	f.net.mu.Lock()
	defer f.net.mu.Unlock()
	return slices.Index(f.net.alive, f.id), len(f.net.alive)
}

func newFakeNet(n int, opts ClusterOptions) (*fakeNet, []*Cluster) {
	net := &fakeNet{nodes: map[string]*Cluster{}, master: "n0"}
	var out []*Cluster
	for i := range n {
		id := fmt.Sprintf("n%d", i)
		c := NewCluster(opts, fakeTransport{net, id})
		net.nodes[id] = c
		net.alive = append(net.alive, id)
		out = append(out, c)
	}
	sort.Strings(net.alive)
	return net, out
}

func (f *fakeNet) set(fn func(*fakeNet)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

const ev = pusher.LimitBackendEvents

// TestCluster_HoldsLimitAcrossNodes drives three nodes millisecond by
// millisecond on a fake clock and counts what each window admits.
func TestCluster_HoldsLimitAcrossNodes(t *testing.T) {
	tests := []struct {
		name   string
		perMs  [3]float64 // requests per millisecond on each node
		limit  int
		minAdm int // least admitted per window
	}{
		{"even, demand above the limit", [3]float64{1, 1, 1}, 100, 100},
		{"uneven, demand above the limit", [3]float64{3, 0.5, 0.05}, 100, 95},
		{"one node only", [3]float64{0, 2, 0}, 100, 100},
		{"demand below the limit is all admitted", [3]float64{0.02, 0.02, 0.01}, 100, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			net, nodes := newFakeNet(3, ClusterOptions{Now: clk.Now})
			nodes[0].SetLeading(true)
			clk.Advance(Window) // past the new term's fenced window
			acc := [3]float64{}
			for w := range 6 {
				admitted, demand := 0, 0
				for range 1000 {
					for i, n := range nodes {
						acc[i] += tt.perMs[i]
						for ; acc[i] >= 1; acc[i]-- {
							demand++
							if n.Consume("app", ev, 1, tt.limit).Allowed {
								admitted++
							}
						}
					}
					clk.Advance(time.Millisecond)
				}
				if admitted > tt.limit || admitted < min(tt.minAdm, demand) {
					t.Fatalf("window %d: admitted %d of %d, want %d..%d", w, admitted, demand, min(tt.minAdm, demand), tt.limit)
				}
			}
			t.Logf("lease messages: %d", net.msgs.Load())
		})
	}
}

func TestCluster_RefusedSpendsNothingAndLimitEdges(t *testing.T) {
	clk := newFakeClock()
	_, nodes := newFakeNet(1, ClusterOptions{Now: clk.Now})
	n := nodes[0]
	n.SetLeading(true)
	clk.Advance(Window)
	if r := n.Consume("app", ev, 1, -1); !r.Allowed || r.Remaining != -1 {
		t.Fatalf("negative limit: %+v", r)
	}
	if r := n.Consume("app", ev, 1, 0); r.Allowed {
		t.Fatalf("zero limit allowed: %+v", r)
	}
	if r := n.Consume("app", ev, 4, 5); !r.Allowed || r.Limit != 5 || r.Remaining != 1 || r.ResetIn != Window {
		t.Fatalf("first: %+v", r)
	}
	if r := n.Consume("app", ev, 3, 5); r.Allowed || r.Remaining != 0 || r.ResetIn != Window {
		t.Fatalf("over the limit: %+v", r)
	}
	clk.Advance(300 * time.Millisecond)
	if r := n.Consume("app", ev, 1, 5); !r.Allowed || r.Remaining != 0 || r.ResetIn != 700*time.Millisecond {
		t.Fatalf("the refused call spent nothing: %+v", r)
	}
	clk.Advance(700 * time.Millisecond)
	if r := n.Consume("app", ev, 5, 5); !r.Allowed {
		t.Fatalf("next window: %+v", r)
	}
}

func TestCluster_LocalShareWhileMasterUnreachable(t *testing.T) {
	clk := newFakeClock()
	net, nodes := newFakeNet(3, ClusterOptions{Now: clk.Now, MaxWait: 5 * time.Millisecond, AskTimeout: 100 * time.Millisecond})
	nodes[0].SetLeading(true)
	clk.Advance(Window)
	n := nodes[1]
	if !n.Consume("app", ev, 1, 100).Allowed {
		t.Fatal("lease refused")
	}
	net.set(func(f *fakeNet) { f.down = true })

	// The lease of this window is still spent; the next window waits for an
	// answer up to MaxWait, then refuses until the ask times out.
	clk.Advance(Window)
	start := time.Now()
	if n.Consume("app", ev, 1, 100).Allowed {
		t.Fatal("admitted with no lease and no answer")
	}
	if waited := time.Since(start); waited < 5*time.Millisecond || waited > time.Second {
		t.Fatalf("waited %v, want about MaxWait", waited)
	}
	clk.Advance(150 * time.Millisecond)
	if st := n.Status(); st.Mode != "local-share" {
		t.Fatalf("mode = %q", st.Mode)
	}
	// This window was funded by nothing yet: it gets the share (ranks 0..2 of 3).
	admitted := 0
	for range 100 {
		if n.Consume("app", ev, 1, 100).Allowed {
			admitted++
		}
	}
	if admitted != shareOf(100, 1, 3) {
		t.Fatalf("local share admitted %d, want %d", admitted, shareOf(100, 1, 3))
	}

	// Fewer alive nodes, bigger share, from the next window on.
	net.set(func(f *fakeNet) { f.alive = []string{"n1", "n2"} })
	clk.Advance(Window)
	admitted = 0
	for range 100 {
		if n.Consume("app", ev, 1, 100).Allowed {
			admitted++
		}
	}
	if admitted != 50 {
		t.Fatalf("local share of 2 nodes admitted %d, want 50", admitted)
	}

	// The master answers a probe again; the next window is leased.
	net.set(func(f *fakeNet) { f.down = false })
	clk.Advance(Window)
	n.Consume("app", ev, 1, 100) // sends the probe; this window stays a local share
	clk.Advance(Window)
	n.Consume("app", ev, 1, 100)
	st := n.Status()
	if st.Mode != "leases" || len(st.Apps) != 1 || st.Apps[0].Fund != "lease" {
		t.Fatalf("status after recovery = %+v", st)
	}
}

func TestCluster_NewMasterFencesItsFirstWindow(t *testing.T) {
	clk := newFakeClock()
	net, nodes := newFakeNet(3, ClusterOptions{Now: clk.Now})
	nodes[0].SetLeading(true)
	clk.Advance(Window)
	for range 200 {
		nodes[1].Consume("app", ev, 1, 100)
	}
	// n2 takes over in the middle of a window: that window is local shares.
	clk.Advance(Window + 500*time.Millisecond)
	nodes[0].SetLeading(false)
	net.set(func(f *fakeNet) { f.master = "n2" })
	admitted := 0
	for range 100 {
		if nodes[1].Consume("app", ev, 1, 100).Allowed {
			admitted++
		}
	}
	if admitted != shareOf(100, 1, 3) {
		t.Fatalf("fenced window admitted %d, want the share %d", admitted, shareOf(100, 1, 3))
	}
	clk.Advance(Window)
	admitted = 0
	for range 200 {
		if nodes[1].Consume("app", ev, 1, 100).Allowed {
			admitted++
		}
	}
	if admitted != 100 {
		t.Fatalf("new master's first full window admitted %d, want 100", admitted)
	}
}

// TestCluster_AsksAhead checks that steady demand is served from leases
// asked for before they run out: requests wait only when a window starts.
func TestCluster_AsksAhead(t *testing.T) {
	net, nodes := newFakeNet(2, ClusterOptions{})
	net.delay = 200 * time.Microsecond
	nodes[0].SetLeading(true)
	time.Sleep(time.Until(windowEnd(WindowOf(time.Now())))) // past the fenced window
	const total = 6000
	deadline := time.Now().Add(2500 * time.Millisecond)
	admitted, sent := 0, 0
	start := time.Now()
	for ; sent < total && time.Now().Before(deadline); sent++ {
		if nodes[1].Consume("app", ev, 1, 1_000_000).Allowed {
			admitted++
		}
		time.Sleep(200 * time.Microsecond)
	}
	st := nodes[1].Status()
	windows := int(time.Since(start)/Window) + 2 // window starts crossed, and the first ask
	t.Logf("admitted %d in %v, waits %d, lease messages %d (%.1f per 1000 requests)", admitted,
		time.Since(start).Round(time.Millisecond), st.Waits, net.msgs.Load(), float64(net.msgs.Load())*1000/float64(sent))
	if admitted != sent {
		t.Fatalf("admitted %d of %d under a huge limit", admitted, sent)
	}
	if int(st.Waits) > windows {
		t.Fatalf("%d requests waited for a grant over %d window starts", st.Waits, windows)
	}
}

func TestCluster_KeyCap(t *testing.T) {
	clk := newFakeClock()
	_, nodes := newFakeNet(1, ClusterOptions{Now: clk.Now, MaxKeys: shardCount})
	n := nodes[0]
	n.SetLeading(true)
	clk.Advance(Window)
	for i := range 500 {
		n.Consume(fmt.Sprintf("app-%d", i), ev, 1, 10)
	}
	st := n.Stats()
	if st.Keys > shardCount || st.Evictions == 0 {
		t.Fatalf("stats = %+v, want at most %d keys and evictions", st, shardCount)
	}
	clk.Advance(idleAfter)
	n.Consume("fresh", ev, 1, 10)
	if got := n.Status().Keys; got > shardCount {
		t.Fatalf("keys = %d", got)
	}
}

func TestCluster_Concurrent(t *testing.T) {
	net, nodes := newFakeNet(3, ClusterOptions{})
	net.delay = 100 * time.Microsecond
	nodes[0].SetLeading(true)
	time.Sleep(time.Until(windowEnd(WindowOf(time.Now()))))
	var wg sync.WaitGroup
	var mu sync.Mutex
	perWindow := map[int64]int{}
	stop := time.Now().Add(1500 * time.Millisecond)
	for _, n := range nodes {
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 100_000 && time.Now().Before(stop); i++ {
					if n.Consume("app", ev, 1, 100).Allowed {
						w := WindowOf(time.Now())
						mu.Lock()
						perWindow[w]++
						mu.Unlock()
					}
				}
			}()
		}
	}
	wg.Wait()
	for w, n := range perWindow {
		if n > 100 {
			t.Fatalf("window %d admitted %d, limit 100 (all: %v)", w, n, perWindow)
		}
	}
}
