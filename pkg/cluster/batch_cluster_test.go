package cluster_test

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testcluster"
	"github.com/soketi-go/soketi/internal/testutil"
)

// Joins made at once on every node are group-committed: fewer raft
// entries than joins, and every socket gets its list and every node the
// whole membership.
func TestPresence_BurstIsGroupCommitted(t *testing.T) {
	c := testcluster.New(t, 3)
	c.WaitReady(20 * time.Second)
	const ch = "presence-group"
	const perNode = 30
	var clients []*testcluster.Client
	for _, n := range c.Nodes {
		for range perNode {
			clients = append(clients, n.Connect(t))
		}
	}
	lead := c.Nodes[c.Leader()].Cluster.Raft()
	before := lead.FSM().AppliedIndex()
	var wg sync.WaitGroup
	for i, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			join(cl, ch, strconv.Itoa(i))
		}()
	}
	wg.Wait()
	for _, cl := range clients {
		cl.Expect("pusher_internal:subscription_succeeded")
	}
	testutil.WaitFor(t, 10*time.Second, "every member on every node", func() bool {
		for _, n := range c.Nodes {
			if n.Cluster.Raft().FSM().MemberCount(testcluster.App.ID, ch) != len(clients) {
				return false
			}
		}
		return true
	})
	// The entries include each node's occupancy and the leader's HooksSent.
	entries := lead.FSM().AppliedIndex() - before
	t.Logf("%d joins in %d raft entries", len(clients), entries)
	if entries >= uint64(len(clients)) {
		t.Fatalf("%d joins took %d raft entries: not group-committed", len(clients), entries)
	}
}
