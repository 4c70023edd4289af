//go:build netns && linux

package netnstest

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testutil"
	"github.com/soketi-go/soketi/pkg/limiter"
	"github.com/soketi-go/soketi/pkg/pusher"
)

// rlLimit is the app's maxBackendEventsPerSecond in the rate-limit test.
const rlLimit = 100

// rlWorkers is how many goroutines hammer the nodes, each with its own
// keep-alive client: bounded concurrency on a 2-core machine that also
// runs the three servers.
const rlWorkers = 9

// rlResult is one POST /events: the windows (Unix seconds) in which it was
// sent and in which its response was read, and its status (0: transport
// error).
type rlResult struct {
	sent, recv int64
	code       int
}

// rlWindow tallies one window by response time.
type rlWindow struct {
	admitted, refused, other int
	// straddling are admissions sent in the previous window: their
	// decision may have been taken in either.
	straddling int
}

// rlTally groups results by the window of their response.
func rlTally(results []rlResult) map[int64]*rlWindow {
	out := map[int64]*rlWindow{}
	for _, r := range results {
		w := out[r.recv]
		if w == nil {
			w = &rlWindow{}
			out[r.recv] = w
		}
		switch r.code {
		case http.StatusOK:
			w.admitted++
			if r.sent != r.recv {
				w.straddling++
			}
		case http.StatusTooManyRequests:
			w.refused++
		default:
			w.other++
		}
	}
	return out
}

// postEvent publishes one event through n's signed HTTP API and reads the
// whole response, so that the connection is kept alive.
func postEvent(client *http.Client, n *node) (*http.Response, []byte, error) {
	const path = "/apps/app-id/events"
	body := []byte(`{"name":"tick","channel":"rate","data":"{}"}`)
	q := pusher.SignedQuery("app-key", "app-secret", "POST", path, nil, body, time.Now())
	resp, err := client.Post("http://"+n.host.Addr.String()+":6001"+path+"?"+q.Encode(), "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b, err
}

// rlHammer posts events for d with rlWorkers goroutines. Each goroutine
// walks schedule (host indexes), starting at its own offset, so the share
// of requests each node gets is its share of schedule. It returns every
// result and the whole windows [from, to) the phase covered.
func rlHammer(c *raftCluster, schedule []int, d time.Duration) (results []rlResult, from, to int64) {
	start := time.Now()
	stop := start.Add(d)
	per := make([][]rlResult, rlWorkers)
	var wg sync.WaitGroup
	for w := range rlWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			client := &http.Client{Timeout: 2 * time.Second, Transport: tr}
			for k := 0; k < 50_000 && time.Now().Before(stop); k++ {
				n := c.nodes[schedule[(w+k)%len(schedule)]]
				sent := time.Now()
				resp, _, err := postEvent(client, n)
				r := rlResult{sent: limiter.WindowOf(sent), recv: limiter.WindowOf(time.Now())}
				if err == nil {
					r.code = resp.StatusCode
				}
				per[w] = append(per[w], r)
				if err != nil {
					time.Sleep(20 * time.Millisecond) // no tight loop on a failing node
				}
			}
		}()
	}
	wg.Wait()
	for _, p := range per {
		results = append(results, p...)
	}
	// The first and last windows are partial.
	return results, limiter.WindowOf(start) + 1, limiter.WindowOf(time.Now())
}

// rlCheck asserts every whole window in [from, to) admitted at most most
// and, when full is set, that demand exceeded the limit (some 429s) and at
// least rlLimit-5 were admitted. It returns the admissions per window.
func rlCheck(t *testing.T, phase string, tally map[int64]*rlWindow, from, to int64, most int, full bool) []int {
	t.Helper()
	var got []int
	for w := from; w < to; w++ {
		n := tally[w]
		if n == nil {
			n = &rlWindow{}
		}
		got = append(got, n.admitted)
		t.Logf("%s: window %d admitted %d (%d sent in the window before), refused %d, other %d",
			phase, w, n.admitted, n.straddling, n.refused, n.other)
		if n.admitted > most {
			t.Errorf("%s: window %d admitted %d, over %d", phase, w, n.admitted, most)
		}
		if n.other > 0 {
			t.Errorf("%s: window %d had %d answers neither 200 nor 429", phase, w, n.other)
		}
		if full {
			if n.refused == 0 {
				t.Errorf("%s: window %d had no 429: demand did not exceed the limit", phase, w)
			}
			if n.admitted < rlLimit-5 {
				t.Errorf("%s: window %d admitted %d, under %d-5 with demand above the limit", phase, w, n.admitted, rlLimit)
			}
		}
	}
	return got
}

// rlRate is the requests per second of a phase that lasted d.
func rlRate(results []rlResult, d time.Duration) string {
	return fmt.Sprintf("%d requests, %.0f/s", len(results), float64(len(results))/d.Seconds())
}

// leaseMessages sums the lease messages the nodes of group sent.
func (c *raftCluster) leaseMessages(group ...int) uint64 {
	var sum uint64
	for _, i := range group {
		if v, err := c.nodes[i].view(); err == nil && v.RateLimiter != nil {
			sum += v.RateLimiter.MessagesSent
		}
	}
	return sum
}

// leasesFrom reports whether every node of group spends leases of the
// master with id master.
func (c *raftCluster) leasesFrom(master string, group ...int) bool {
	for _, i := range group {
		v, err := c.nodes[i].view()
		if err != nil || v.RateLimiter == nil || v.RateLimiter.Mode != "leases" || v.RateLimiter.Master != master {
			return false
		}
	}
	return true
}

// TestClusterRateLimit_HoldsAcrossNodes is TestCluster_RateLimitHoldsAcrossNodes
// (pkg/cluster) on the namespace LAN with the real binary: with
// RATE_LIMITER_DRIVER=cluster an app's maxBackendEventsPerSecond holds for
// the whole cluster, with even and uneven load, and again after the
// master is SIGKILLed. Admissions are counted by the window (Unix second)
// in which the test read the 200; the nodes share this machine's clock.
func TestClusterRateLimit_HoldsAcrossNodes(t *testing.T) {
	c := newRaftCluster(t, "RATE_LIMITER_DRIVER=cluster",
		"SOKETI_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC="+strconv.Itoa(rlLimit))
	leader := c.waitFormed(formTimeout, c.all()...)
	leaderID := c.nodeID(leader)
	testutil.WaitFor(t, settleTimeout, "every node to spend leases of the leader", func() bool {
		return c.leasesFrom(leaderID, c.all()...)
	})

	// An allowed response keeps soketi's headers.
	resp, b, err := postEvent(&http.Client{Timeout: 2 * time.Second}, c.nodes[0])
	if err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get("X-RateLimit-Limit") != strconv.Itoa(rlLimit) ||
		resp.Header.Get("X-RateLimit-Remaining") == "" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("allowed response: %v %+v %s", err, resp, b)
	}

	const phase = 5 * time.Second
	msgs0 := c.leaseMessages(c.all()...)
	even, evenFrom, evenTo := rlHammer(c, []int{0, 1, 2}, phase)
	// 70% of the requests through the leader's neighbour, 20% and 10%
	// through the others.
	heavy := c.others(leader)[0]
	rest := c.others(heavy)
	uneven, unevenFrom, unevenTo := rlHammer(c, []int{heavy, heavy, heavy, heavy, heavy, heavy, heavy, rest[0], rest[0], rest[1]}, phase)
	sent := c.leaseMessages(c.all()...) - msgs0
	t.Logf("even: %s; uneven: %s", rlRate(even, phase), rlRate(uneven, phase))
	rlCheck(t, "even", rlTally(even), evenFrom, evenTo, rlLimit+5, true)
	rlCheck(t, "uneven", rlTally(uneven), unevenFrom, unevenTo, rlLimit+5, true)
	t.Logf("MEASURE lease_messages=%d for %d requests (%.1f per 1000)",
		sent, len(even)+len(uneven), float64(sent)*1000/float64(len(even)+len(uneven)))

	// SIGKILL the master while the two survivors keep being hammered.
	survivors := c.others(leader)
	killedAt := limiter.WindowOf(time.Now())
	killed := time.Now()
	c.nodes[leader].kill()
	type recovery struct {
		window int64
		after  time.Duration
		ok     bool
		master int
	}
	done := make(chan recovery, 1)
	go func() {
		// Leases are back once both survivors spend leases of one of them.
		for time.Since(killed) < 20*time.Second {
			if l := c.raftLeader(survivors...); l >= 0 && c.leasesFrom(c.nodeID(l), survivors...) {
				done <- recovery{window: limiter.WindowOf(time.Now()), after: time.Since(killed), ok: true, master: l}
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		done <- recovery{}
	}()
	// Longer than the even and uneven phases: failover takes 2-3 s here and
	// whole windows must be left to check after the new master's leases.
	const afterKill = 8 * time.Second
	after, _, end := rlHammer(c, survivors, afterKill)
	rec := <-done
	if !rec.ok {
		t.Fatalf("the survivors got no leases from a new master within 20s of the kill")
	}
	t.Logf("MEASURE rate_limit_failover=%s (SIGKILL of the master until both survivors spend leases of the new one, host %d)",
		rec.after.Round(time.Millisecond), rec.master)
	t.Logf("after the kill: %s", rlRate(after, afterKill))
	tally := rlTally(after)
	// Windows from the kill until leases are back are local shares and
	// the new master's fenced first window, where the old master's leases
	// and the shares of nodes without one add up to at most
	// limit + limit·(N−1)/N (DESIGN.md).
	const nodes = 3
	electionMost := (rlLimit*(2*nodes-1) + nodes - 1) / nodes // ⌈limit·(2 − 1/N)⌉
	election := rlCheck(t, "election", tally, killedAt, rec.window+1, electionMost, false)
	t.Logf("MEASURE election_windows_admitted=%v (windows %d..%d, from the kill to the return of leases; limit %d, bound %d)",
		election, killedAt, rec.window, rlLimit, electionMost)
	if end-(rec.window+1) < 1 {
		t.Fatalf("no whole window after leases came back (windows %d..%d hammered, leases back in %d)", killedAt, end-1, rec.window)
	}
	newMaster := rlCheck(t, "new master", tally, rec.window+1, end, rlLimit+5, true)
	t.Logf("MEASURE new_master_windows_admitted=%v", newMaster)
}
