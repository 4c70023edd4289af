package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testcluster"
	"github.com/soketi-go/soketi/internal/testutil"
	"github.com/soketi-go/soketi/pkg/cluster"
	"github.com/soketi-go/soketi/pkg/gossip"
)

// Every node reports its replica, clients and streams to the page; a
// killed node drops out of the reports and gossip marks it dead, while
// the page's refresh stays within the report timeout.
func TestDashboard_ReportsEveryNodeAndFollowsADeath(t *testing.T) {
	c := testcluster.New(t, 3)
	c.WaitReady(20 * time.Second)
	sub := c.Nodes[1].Connect(t)
	sub.Subscribe("news")

	var d cluster.Dashboard
	testutil.WaitFor(t, 10*time.Second, "three reports with node1's client", func() bool {
		d = c.Nodes[0].Cluster.Dashboard(context.Background())
		return len(d.Reports) == 3 && d.Leader != "" && d.Reports[1].Connections == 1
	})
	if d.Self != "node0" || len(d.Members) != 3 || len(d.Unanswered) != 0 || !d.Secured || !d.Quorum {
		t.Fatalf("dashboard = %+v", d)
	}
	for _, r := range d.Reports {
		if r.Lag == nil || r.Raft.Term == 0 || r.Raft.AppliedIndex == 0 || r.RateLimiter != "local" {
			t.Fatalf("report %+v (lag %v)", r, r.Lag)
		}
		if len(r.Streams) != 2 {
			t.Fatalf("node %s reports streams %+v", r.ID, r.Streams)
		}
	}
	if d.Reports[1].Channels != 1 {
		t.Fatalf("node1 channels = %d", d.Reports[1].Channels)
	}

	victim := 2
	if c.Leader() == victim {
		victim = 1
	}
	c.Kill(victim)
	dead := "node" + string(rune('0'+victim))
	testutil.WaitFor(t, 10*time.Second, dead+" dead on the dashboard", func() bool {
		start := time.Now()
		d = c.Nodes[0].Cluster.Dashboard(context.Background())
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("a dashboard took %v with a node dead", took)
		}
		for _, m := range d.Members {
			if m.ID == dead && m.State == gossip.StateDead {
				return len(d.Reports) == 2
			}
		}
		return false
	})
}
