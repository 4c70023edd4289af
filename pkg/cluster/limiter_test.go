package cluster_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testcluster"
	"github.com/soketi-go/soketi/internal/testutil"
	"github.com/soketi-go/soketi/pkg/limiter"
	"github.com/soketi-go/soketi/pkg/pusher"
)

const rateLimit = 100

// admissions counts what every node's limiter admits per one-second window,
// read right after the limiter decided.
type admissions struct {
	mu       sync.Mutex
	windows  map[int64]int
	requests int
}

func (a *admissions) wrap(_ int, l pusher.RateLimiter) pusher.RateLimiter {
	return countingLimiter{l, a}
}

type countingLimiter struct {
	pusher.RateLimiter
	a *admissions
}

func (c countingLimiter) Consume(app, key string, points, limit int) pusher.LimitResult {
	res := c.RateLimiter.Consume(app, key, points, limit)
	w := limiter.WindowOf(time.Now())
	c.a.mu.Lock()
	c.a.requests++
	if res.Allowed {
		c.a.windows[w] += points
	}
	c.a.mu.Unlock()
	return res
}

func (a *admissions) snapshot() (map[int64]int, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[int64]int, len(a.windows))
	for w, n := range a.windows {
		out[w] = n
	}
	return out, a.requests
}

// hammer sends events through the given nodes until stop, with workers[i]
// goroutines on node i, each pausing pause[i] between requests. Loops are
// bounded; transport errors end a worker (its node was killed).
func hammer(nodes []*testcluster.Node, workers []int, pause []time.Duration, stop time.Time) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	var wg sync.WaitGroup
	for i, n := range nodes {
		for range workers[i] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := 0; k < 200_000 && time.Now().Before(stop); k++ {
					if _, err := postEvent(client, n); err != nil {
						return
					}
					if pause[i] > 0 {
						time.Sleep(pause[i])
					}
				}
			}()
		}
	}
	wg.Wait()
	client.CloseIdleConnections()
}

// postEvent publishes one event through n's signed HTTP API.
func postEvent(client *http.Client, n *testcluster.Node) (*http.Response, error) {
	path := "/apps/" + testcluster.App.ID + "/events"
	body := []byte(`{"name":"tick","channel":"rate","data":"{}"}`)
	q := pusher.SignedQuery(testcluster.App.Key, testcluster.App.Secret, "POST", path, nil, body, time.Now())
	resp, err := client.Post(n.URL+path+"?"+q.Encode(), "application/json", strings.NewReader(string(body)))
	if err != nil {
		return nil, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(strings.NewReader(string(b)))
	return resp, nil
}

// checkWindows asserts every whole window in [from, to) admitted at most
// most and, when full is set, at least rateLimit-5.
func checkWindows(t *testing.T, phase string, counts map[int64]int, from, to int64, most int, full bool) {
	t.Helper()
	for w := from; w < to; w++ {
		n := counts[w]
		t.Logf("%s: window %d admitted %d", phase, w, n)
		if n > most {
			t.Errorf("%s: window %d admitted %d, over %d", phase, w, n, most)
		}
		if full && n < rateLimit-5 {
			t.Errorf("%s: window %d admitted %d, under %d-5 with demand above the limit", phase, w, n, rateLimit)
		}
	}
}

func TestCluster_RateLimitHoldsAcrossNodes(t *testing.T) {
	app := *testcluster.App
	app.MaxBackendEventsPerSecond = rateLimit
	adm := &admissions{windows: map[int64]int{}}
	c := testcluster.NewWithOptions(t, 3, testcluster.Options{App: &app, ClusterLimiter: true, WrapLimiter: adm.wrap})
	c.WaitReady(20 * time.Second)

	// Responses keep soketi's shapes.
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := postEvent(client, c.Nodes[0])
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("X-RateLimit-Limit") != strconv.Itoa(rateLimit) ||
		resp.Header.Get("X-RateLimit-Remaining") == "" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("allowed response: %v %+v", err, resp)
	}

	phase := func(name string, nodes []*testcluster.Node, workers []int, pause []time.Duration, d time.Duration) (int64, int64) {
		start := time.Now()
		hammer(nodes, workers, pause, start.Add(d))
		return limiter.WindowOf(start) + 1, limiter.WindowOf(time.Now()) // whole windows only
	}
	msgs := func() uint64 {
		var n uint64
		for _, nd := range c.Alive() {
			n += nd.Cluster.Status().RateLimiter.MessagesSent
		}
		return n
	}
	msgs0 := msgs()
	_, req0 := adm.snapshot()

	evenFrom, evenTo := phase("even", c.Nodes, []int{2, 2, 2}, []time.Duration{0, 0, 0}, 5*time.Second)
	unevenFrom, unevenTo := phase("uneven", c.Nodes, []int{3, 1, 1}, []time.Duration{0, 20 * time.Millisecond, 50 * time.Millisecond}, 5*time.Second)
	counts, reqs := adm.snapshot()
	checkWindows(t, "even", counts, evenFrom, evenTo, rateLimit+5, true)
	checkWindows(t, "uneven", counts, unevenFrom, unevenTo, rateLimit+5, true)
	sent := msgs() - msgs0
	t.Logf("lease traffic: %d control messages for %d requests (%.1f per 1000 requests, %.1f per 1000 admitted)",
		sent, reqs-req0, float64(sent)*1000/float64(reqs-req0), float64(sent)*1000/float64(rateLimit*(unevenTo-evenFrom)))

	for _, n := range c.Nodes {
		st := n.Cluster.Status().RateLimiter
		if st == nil || st.Mode != "leases" || st.Keys == 0 || len(st.Apps) == 0 || st.Apps[0].App != app.ID {
			b, _ := json.Marshal(st)
			t.Fatalf("node %d /cluster rate_limiter = %s", n.Index, b)
		}
	}
	resp, err = postEvent(client, c.Nodes[0])
	for k := 0; k < 10*rateLimit && err == nil && resp.StatusCode == 200; k++ {
		resp, err = postEvent(client, c.Nodes[k%3])
	}
	if b, _ := io.ReadAll(resp.Body); err != nil || resp.StatusCode != 429 ||
		string(b) != `{"code":429,"error":"Too many requests."}` {
		t.Fatalf("refused response: %v %d %s", err, resp.StatusCode, b)
	}

	// Kill the master while the two others keep hammering.
	leader := c.Leader()
	killedAt := limiter.WindowOf(time.Now())
	c.Kill(leader)
	alive := c.Alive()
	done := make(chan struct{})
	var recovered int64
	go func() {
		defer close(done)
		testutil.WaitFor(t, 20*time.Second, "leases from a new master", func() bool {
			for _, n := range alive {
				st := n.Cluster.Status().RateLimiter
				if st.Mode != "leases" || st.Master == "" || st.Master == fmt.Sprintf("node%d", leader) {
					return false
				}
			}
			return true
		})
		recovered = limiter.WindowOf(time.Now())
	}()
	phase("after the kill", alive, []int{2, 1}, []time.Duration{0, 10 * time.Millisecond}, 10*time.Second)
	<-done
	end := limiter.WindowOf(time.Now())
	counts, _ = adm.snapshot()
	// Windows from the kill until leases are back: local shares, and the
	// fenced first window of the new master, where the old master's leases
	// and the shares of nodes without one may add up (DESIGN.md: at most
	// limit + limit·(N−1)/N). How much they admitted is logged.
	const nodes = 3
	checkWindows(t, "election", counts, killedAt, recovered+1, rateLimit+(rateLimit*(nodes-1)+nodes-1)/nodes, false)
	if end-(recovered+1) < 3 {
		t.Fatalf("only %d whole windows after recovery", end-(recovered+1))
	}
	checkWindows(t, "new master", counts, recovered+1, end, rateLimit+5, true)
}
