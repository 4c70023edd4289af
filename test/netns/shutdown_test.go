//go:build netns && linux

package netnstest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testutil"
	"github.com/soketi-go/soketi/pkg/pusher"
)

// publishVia publishes event "update" with data through node n's HTTP API
// and returns the status, 0 when the request failed (the node is gone). It
// does not fail the test, so a publishing goroutine may call it.
func publishVia(n *node, channel, data string) int {
	const path = "/apps/app-id/events"
	body, _ := json.Marshal(map[string]any{"name": "update", "channel": channel, "data": data})
	q := pusher.SignedQuery("app-key", "app-secret", "POST", path, nil, body, time.Now())
	resp, err := httpClient.Post("http://"+n.host.Addr.String()+":6001"+path+"?"+q.Encode(), "application/json", bytes.NewReader(body))
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// A SIGTERMed node keeps serving the API through its grace period: each
// publish it answers 200 meanwhile must reach the subscribers on the other
// nodes exactly once; once it stops forwarding it answers 503, never 200.
func TestClusterPusher_PublishesDuringShutdownGracePeriod(t *testing.T) {
	c := newRaftCluster(t)
	cl := startClients(t)
	c.waitFormed(formTimeout, c.all()...)
	const stopping = 0
	var subs []string
	for _, i := range c.others(stopping) {
		id := fmt.Sprintf("sub%d", i)
		cl.connect(id, c.nodes[i])
		cl.subscribe(id, "news")
		subs = append(subs, id)
	}
	from := cl.mark()

	type answer struct {
		data      string
		status    int
		afterTerm bool
	}
	var (
		mu      sync.Mutex
		answers []answer
		termAt  time.Time
	)
	n := c.nodes[stopping]
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for k := 1; n.running(); k++ {
			<-tick.C
			mu.Lock()
			after := !termAt.IsZero()
			mu.Unlock()
			data := fmt.Sprintf("pub-%04d", k)
			status := publishVia(n, "news", data)
			mu.Lock()
			answers = append(answers, answer{data, status, after})
			mu.Unlock()
		}
	}()
	testutil.WaitFor(t, 10*time.Second, "publishes before the signal", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(answers) >= 25
	})
	mu.Lock()
	termAt = time.Now()
	mu.Unlock()
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(termExitBound):
		t.Fatalf("node %d still running %s after SIGTERM", stopping, termExitBound)
	}
	t.Logf("MEASURE sigterm_exit=%s (SIGTERM until the process exited; grace period 3 s)", time.Since(termAt).Round(time.Millisecond))
	<-done

	var acked []string
	counts := map[string]int{}
	for _, a := range answers {
		key := fmt.Sprintf("%d", a.status)
		if a.afterTerm {
			key += " after SIGTERM"
		}
		counts[key]++
		switch {
		case a.status == http.StatusOK:
			acked = append(acked, a.data)
		case a.status == http.StatusServiceUnavailable && a.afterTerm, a.status == 0 && a.afterTerm:
		default:
			t.Fatalf("%s: HTTP %d (after SIGTERM %v), want 200, or 503 while stopping", a.data, a.status, a.afterTerm)
		}
	}
	t.Logf("answers: %v", counts)
	if counts["200 after SIGTERM"] == 0 {
		t.Fatal("no publish accepted during the grace period: the test shows nothing")
	}
	for _, id := range subs {
		for _, data := range acked {
			cl.waitEvent(from, deliveryTimeout, fmt.Sprintf("%s (HTTP 200) on %s", data, id), appEvent(id, "news", "update", data))
		}
		got := map[string]int{}
		for _, ev := range cl.matching(from, frame(id, "news", "update")) {
			var s string
			_ = json.Unmarshal(ev.Data, &s)
			got[s]++
		}
		for _, data := range acked {
			if got[data] != 1 {
				t.Fatalf("%s received %s %d times, want once", id, data, got[data])
			}
		}
	}
}

// termExitBound is how long a SIGTERMed node may take to exit: the 3 s
// grace period, the drain and the leave.
const termExitBound = 15 * time.Second
