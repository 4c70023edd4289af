package cluster_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testcluster"
	"github.com/soketi-go/soketi/internal/testutil"
	"github.com/soketi-go/soketi/pkg/gossip"
	"github.com/soketi-go/soketi/pkg/pusher"
)

// What a 200 from POST /events promises: the event reaches every
// subscriber of the nodes the publishing node believes alive, once. These
// tests publish through a node in trouble and check each answer.

// apiClient bounds every publish, so that a stuck request fails the test
// rather than hanging it.
var apiClient = &http.Client{Timeout: 10 * time.Second}

// publish posts event "update" through node n's HTTP API. It does not fail
// the test, so publishing goroutines may call it.
func publish(n *testcluster.Node, channel, data string) (int, map[string]any, error) {
	path := "/apps/" + testcluster.App.ID + "/events"
	raw, _ := json.Marshal(map[string]any{"name": "update", "channel": channel, "data": data})
	q := pusher.SignedQuery(testcluster.App.Key, testcluster.App.Secret, "POST", path, nil, raw, time.Now())
	resp, err := apiClient.Post(n.URL+path+"?"+q.Encode(), "application/json", bytes.NewReader(raw))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body, nil
}

// receive reads c's "update" events until each of want has arrived or
// timeout passes, then for settle more so that duplicates show, and counts
// each data it saw.
func receive(c *testcluster.Client, want []string, timeout, settle time.Duration) map[string]int {
	wanted := map[string]bool{}
	for _, w := range want {
		wanted[w] = true
	}
	got := map[string]int{}
	missing := len(wanted)
	deadline := time.Now().Add(timeout)
	for missing > 0 {
		m, ok := c.Next(time.Until(deadline))
		if !ok {
			break
		}
		if d, _ := m["data"].(string); m["event"] == "update" {
			if got[d]++; wanted[d] && got[d] == 1 {
				missing--
			}
		}
	}
	for {
		m, ok := c.Next(settle)
		if !ok {
			return got
		}
		if d, _ := m["data"].(string); m["event"] == "update" {
			got[d]++
		}
	}
}

// checkOnce fails unless every id of want was received exactly once.
func checkOnce(t *testing.T, who string, got map[string]int, want []string) {
	t.Helper()
	var bad []string
	for _, id := range want {
		if got[id] != 1 {
			bad = append(bad, fmt.Sprintf("%s×%d", id, got[id]))
		}
	}
	if len(bad) > 0 {
		t.Fatalf("%s: %d of %d acknowledged publishes not received exactly once: %v", who, len(bad), len(want), bad)
	}
}

// A node that is alive in gossip but whose stream cannot take a publish
// (here: its queue is full while it is unreachable) makes the publishing
// node answer 503, not 200. The publishing node's own subscribers still
// get the event.
func TestCluster_PublishRefusedWhenANodeCannotTakeIt(t *testing.T) {
	app := *testcluster.App
	app.MaxEventPayloadInKB = 1024
	c := testcluster.NewWithOptions(t, 3, testcluster.Options{App: &app})
	c.WaitReady(20 * time.Second)
	local := c.Nodes[0].Connect(t)
	local.Subscribe("news")
	healthy := c.Nodes[2].Connect(t)
	healthy.Subscribe("news")
	if code, body, err := publish(c.Nodes[0], "news", "before"); err != nil || code != 200 {
		t.Fatalf("publish before the fault: %d %v %v", code, body, err)
	}
	checkOnce(t, "node 2", receive(healthy, []string{"before"}, 5*time.Second, 0), []string{"before"})

	// Node 1 stays alive in gossip but takes no stream any more.
	_ = c.Nodes[1].Cluster.StreamsForTest().Close()
	testutil.WaitFor(t, 10*time.Second, "node 0 to lose its stream to node 1", func() bool {
		return !c.Nodes[0].Cluster.Figures().Streams.Peers["node1"].Connected
	})
	big := strings.Repeat("x", 512<<10)
	accepted, code := 0, 0
	var body map[string]any
	for accepted < 100 {
		var err error
		if code, body, err = publish(c.Nodes[0], "fill", big); err != nil {
			t.Fatal(err)
		}
		if code != 200 {
			break
		}
		accepted++
	}
	// The queue bound is 16 MiB: about 32 such events.
	if code != 503 || body["code"] != float64(503) || accepted < 16 || accepted > 40 {
		t.Fatalf("after %d accepted: %d %v, want 503 at the queue bound", accepted, code, body)
	}
	if st := c.Nodes[0].Cluster.Status(); !aliveIn(st.Members, "node1") {
		t.Fatalf("node 1 is not alive for node 0 (%v): the test is not testing an alive peer", st.Members)
	}
	t.Logf("503 after %d publishes of 512 KiB: %v", accepted, body["error"])

	// Small events fill what room is left; the first refused one was still
	// delivered to node 0's own subscriber.
	var sent []string
	for code = 200; code == 200 && len(sent) < 10_000; {
		id := fmt.Sprintf("small-%d", len(sent))
		var err error
		if code, body, err = publish(c.Nodes[0], "news", id); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, id)
	}
	if code != 503 {
		t.Fatalf("publish with node 1's queue full: %d %v, want 503", code, body)
	}
	checkOnce(t, "node 0's own subscriber", receive(local, sent, 5*time.Second, 0), sent)
}

func aliveIn(members []gossip.Member, id string) bool {
	for _, m := range members {
		if m.ID == id {
			return m.State == gossip.StateAlive
		}
	}
	return false
}

// A stopping node, in the order cmd/soketi's shutdown uses (sockets closed
// and the grace period served, then Drain, then Leave), answers each
// publish either 200, and the event reaches the subscribers of the other
// nodes, or 503.
func TestCluster_StoppingNodeForwardsOrRefuses(t *testing.T) {
	c := testcluster.New(t, 3)
	c.WaitReady(20 * time.Second)
	stopping := c.Nodes[0]
	own := stopping.Connect(t)
	own.Subscribe("news")
	subs := []*testcluster.Client{c.Nodes[1].Connect(t), c.Nodes[2].Connect(t)}
	for _, s := range subs {
		s.Subscribe("news")
	}

	type result struct {
		id    string
		code  int
		phase string
	}
	var mu sync.Mutex
	phase := "serving"
	setPhase := func(p string) { mu.Lock(); phase = p; mu.Unlock() }
	var results []result
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for k := 1; ; k++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			id := fmt.Sprintf("p%04d", k)
			code, _, err := publish(stopping, "news", id)
			if err != nil {
				code = 0
			}
			mu.Lock() // the phase when the answer came: a 503 comes after Drain began
			results = append(results, result{id, code, phase})
			mu.Unlock()
		}
	}()
	count := func(phase string, code int) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, r := range results {
			if r.phase == phase && r.code == code {
				n++
			}
		}
		return n
	}
	testutil.WaitFor(t, 5*time.Second, "publishes while serving", func() bool { return count("serving", 200) >= 10 })

	setPhase("grace")
	grace, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_ = stopping.Server.Shutdown(grace) // 4200 to its socket, then the rest of the grace period
	own.ExpectClose(4200)
	<-grace.Done()
	setPhase("draining")
	drainCtx, cancelDrain := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelDrain()
	if err := stopping.Cluster.Drain(drainCtx); err != nil {
		t.Fatalf("drain: %v", err)
	}
	stopping.Cluster.Leave()
	setPhase("left")
	testutil.WaitFor(t, 5*time.Second, "publishes after the leave", func() bool { return count("left", 503) >= 5 })
	close(stop)
	wg.Wait()

	var acked []string
	for _, r := range results {
		switch {
		case r.code == 200:
			acked = append(acked, r.id)
		case r.code == 503 && r.phase != "serving" && r.phase != "grace":
		default:
			t.Fatalf("%s while %s: HTTP %d, want 200, or 503 once draining", r.id, r.phase, r.code)
		}
	}
	if n := count("grace", 200); n == 0 {
		t.Fatal("no publish accepted during the grace period")
	}
	t.Logf("200: serving %d, grace %d, draining %d; 503: draining %d, left %d", count("serving", 200),
		count("grace", 200), count("draining", 200), count("draining", 503), count("left", 503))
	for i, s := range subs {
		checkOnce(t, fmt.Sprintf("subscriber on node %d", i+1), receive(s, acked, 10*time.Second, 200*time.Millisecond), acked)
	}
}

// A node cut off from the others, long enough for gossip to declare them
// dead, then healed: for a while after the heal its gossip still says dead
// (it rejoins on the next beacon). Every publish it acknowledges after the
// heal must reach the other nodes' subscribers exactly once. The cut is
// faked below gossip's view: the peers are dead at an address that refuses
// connections; the heal gives the address back, and later the alive state.
func TestCluster_HealedNodeLosesNoAcknowledgedPublish(t *testing.T) {
	c := testcluster.New(t, 3)
	c.WaitReady(20 * time.Second)
	healed := c.Nodes[2]
	subs := []*testcluster.Client{c.Nodes[0].Connect(t), c.Nodes[1].Connect(t)}
	for _, s := range subs {
		s.Subscribe("news")
	}
	cutAt := time.Now()
	// view marks the other side of the cut dead; unreachable also moves it
	// to an address that refuses connections.
	view := func(self int, unreachable bool) func([]gossip.Member) []gossip.Member {
		return func(ms []gossip.Member) []gossip.Member {
			for i := range ms {
				if other := ms[i].ID == "node2"; other != (self == 2) && !ms[i].Self {
					ms[i].State, ms[i].Since = gossip.StateDead, cutAt
					if unreachable {
						ms[i].RaftAddr = "127.0.0.1:1"
					}
				}
			}
			return ms
		}
	}
	for i, n := range c.Nodes {
		n.Cluster.SetViewForTest(view(i, true))
	}
	testutil.WaitFor(t, 10*time.Second, "node 2's streams to be cut", func() bool {
		for _, p := range healed.Cluster.Figures().Streams.Peers {
			if p.Connected {
				return false
			}
		}
		return true
	})
	var during []string
	for k := range 20 {
		id := fmt.Sprintf("cut-%02d", k)
		if code, body, err := publish(healed, "news", id); err != nil || code != 200 {
			t.Fatalf("publish during the cut: %d %v %v", code, body, err)
		}
		during = append(during, id)
	}

	// The heal: the network is back, gossip still says dead.
	for i, n := range c.Nodes {
		n.Cluster.SetViewForTest(view(i, false))
	}
	var after []string
	lagging := time.Now().Add(time.Second)
	for k := 0; time.Now().Before(lagging) || k < 50; k++ {
		id := fmt.Sprintf("healed-%03d", k)
		code, body, err := publish(healed, "news", id)
		switch {
		case err != nil:
			t.Fatal(err)
		case code == 200:
			after = append(after, id)
		case code != 503:
			t.Fatalf("publish after the heal: %d %v", code, body)
		}
	}
	// Gossip catches up.
	for _, n := range c.Nodes {
		n.Cluster.SetViewForTest(nil)
	}
	for k := range 20 {
		id := fmt.Sprintf("alive-%02d", k)
		if code, body, err := publish(healed, "news", id); err != nil || code != 200 {
			t.Fatalf("publish after gossip caught up: %d %v %v", code, body, err)
		}
		after = append(after, id)
	}

	for i, s := range subs {
		got := receive(s, after, 15*time.Second, 200*time.Millisecond)
		checkOnce(t, fmt.Sprintf("subscriber on node %d", i), got, after)
		late := 0
		for _, id := range during {
			if got[id] > 1 {
				t.Fatalf("subscriber on node %d got %s %d times", i, id, got[id])
			}
			late += got[id]
		}
		t.Logf("subscriber on node %d: %d publishes after the heal once each; %d of %d made during the cut arrived after it",
			i, len(after), late, len(during))
	}
}
