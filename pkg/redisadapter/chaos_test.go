package redisadapter_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testutil"
)

// chaosSeeds are the seeds the chaos test runs; REDIS_CHAOS_SEEDS=a,b,...
// picks others.
func chaosSeeds(t *testing.T) []uint64 {
	list := os.Getenv("REDIS_CHAOS_SEEDS")
	if list == "" {
		return []uint64{1, 42}
	}
	var out []uint64
	for _, s := range strings.Split(list, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
		if err != nil {
			t.Fatalf("REDIS_CHAOS_SEEDS=%q: %v", list, err)
		}
		out = append(out, n)
	}
	return out
}

// Seeded sequences of faults under client churn: nodes crash and are
// replaced, Redis restarts empty, clients join a presence channel (users
// shared over nodes) and leave. When the faults stop, the shared state
// must equal the live connections (no ghost, no missing member, every
// subscription counted), and publishes through every node must reach
// every live subscriber once.
func TestRedis_ChaosSettlesToTheLiveConnections(t *testing.T) {
	for _, seed := range chaosSeeds(t) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { redisChaos(t, seed) })
	}
}

type chaosClient struct {
	c    *testutil.Client
	node int
	user string
}

func redisChaos(t *testing.T, seed uint64) {
	const (
		steps    = 60
		channel  = "presence-chaos"
		news     = "news"
		maxUsers = 6
	)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	f := newFleet(t, 3)
	var live []*chaosClient
	faults := map[string]int{}
	redisDown := false
	for step := 0; step < steps; step++ {
		if redisDown && rng.IntN(3) == 0 {
			f.redis.Restart() // back, empty
			redisDown = false
		}
		time.Sleep(time.Duration(rng.IntN(80)) * time.Millisecond)
		switch r := rng.IntN(100); {
		case r < 45 && len(live) < 24:
			n := rng.IntN(len(f.nodes))
			c := f.connect(n)
			user := strconv.Quote("u" + strconv.Itoa(rng.IntN(maxUsers)))
			m := f.joinPresence(c, channel, user)
			if m["event"] != "pusher_internal:subscription_succeeded" {
				c.Close() // refused while Redis is away: 4302, by design
				faults["joins refused"]++
				continue
			}
			subscribe(c, news)
			live = append(live, &chaosClient{c: c, node: n, user: user})
			faults["joins"]++
		case r < 70 && len(live) > 0:
			i := rng.IntN(len(live))
			live[i].c.Close()
			live = append(live[:i], live[i+1:]...)
			faults["leaves"]++
		case r < 82:
			n := rng.IntN(len(f.nodes))
			f.stop(f.nodes[n], false) // a crash: nothing cleaned up
			f.nodes[n] = f.start(n)
			kept := live[:0]
			for _, c := range live {
				if c.node != n {
					kept = append(kept, c)
				}
			}
			live = kept
			faults["node crashes"]++
		case r < 87:
			f.redis.Restart()
			faults["redis restarts"]++
		case r < 92 && !redisDown:
			f.redis.Kill() // away for a few steps
			redisDown = true
			faults["redis outages"]++
		default:
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		}
	}
	if redisDown {
		f.redis.Restart()
	}
	t.Logf("seed %d: %v; %d clients live at the end", seed, faults, len(live))

	want := map[string]bool{}
	for _, c := range live {
		want[c.user] = true
	}
	wantUsers := sortedKeys(want)
	// Settle: crashed nodes reaped (TTL), dirty writes resynced.
	var got []string
	testutil.WaitFor(t, 15*time.Second, "the shared presence equal to the live connections", func() bool {
		code, body := apiCall(t, f.nodes[0].http.URL, f.app, "GET", "/apps/"+f.app.ID+"/channels/"+channel+"/users", nil)
		if code != 200 {
			return false
		}
		got = got[:0]
		for _, u := range body["users"].([]any) {
			got = append(got, strconv.Quote(u.(map[string]any)["id"].(string)))
		}
		sort.Strings(got)
		return strings.Join(got, ",") == strings.Join(wantUsers, ",")
	})
	testutil.WaitFor(t, 10*time.Second, "every live subscription counted", func() bool {
		code, body := apiCall(t, f.nodes[1].http.URL, f.app, "GET", "/apps/"+f.app.ID+"/channels/"+news, nil, "info", "subscription_count")
		n, _ := body["subscription_count"].(float64)
		return code == 200 && int(n) == len(live)
	})
	// Every live subscriber hears a publish through each node once.
	for i := range f.nodes {
		if code, _ := f.trigger(i, news, "after", fmt.Sprint(i)); code != 200 {
			t.Fatalf("publish through node %d after the faults: %d", i, code)
		}
	}
	for _, c := range live {
		seen := map[string]int{}
		for len(seen) < len(f.nodes) {
			m, ok := c.c.Next(3 * time.Second)
			if !ok {
				t.Fatalf("a subscriber on node %d got %v of the three publishes", c.node, seen)
			}
			if m["event"] == "after" {
				seen[m["data"].(string)]++
			}
		}
		for via, n := range seen {
			if n != 1 {
				t.Fatalf("publish via %s delivered %d times", via, n)
			}
		}
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
