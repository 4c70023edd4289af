package consensus

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// BenchmarkApplyJoin measures one presence join committed by a three-node
// group over the keyed cluster port, proposed on the leader and on a
// follower (forwarded, then applied by the follower's own replica): the
// latency a subscriber waits for between its subscribe and its
// subscription_succeeded, less the protocol work.
func BenchmarkApplyJoin(b *testing.B) {
	for _, tc := range []struct {
		on   string
		info int
	}{{"leader", 0}, {"follower", 0}, {"leader", 2000}, {"follower", 2000}} {
		on := tc.on
		info := json.RawMessage(fmt.Sprintf(`{"bio":%q}`, strings.Repeat("x", tc.info)))
		b.Run(fmt.Sprintf("%s/info=%d", on, tc.info), func(b *testing.B) {
			c := newTestCluster(b, 3, 3)
			for i := range c.nodes {
				c.start(i)
			}
			c.link(0, 1, 2)
			c.waitRegistered(10 * time.Second)
			tn := c.waitLeader(10 * time.Second)
			if on == "follower" {
				tn = c.follower()
			}
			b.ResetTimer()
			for k := range b.N {
				j := PresenceJoin{App: "app", Channel: "presence-bench", UserID: json.RawMessage(fmt.Sprintf(`"u%d"`, k)), Node: tn.id, Incarnation: tn.inc, UserInfo: info}
				if _, err := tn.n.Apply(context.Background(), j); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
