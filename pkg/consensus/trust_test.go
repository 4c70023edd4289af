package consensus

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/soketi-go/soketi/pkg/clusternet"
)

// outsider is a process on the LAN that speaks the cluster port's
// protocol: with creds nil it has no key, otherwise the key it was given.
func outsider(t *testing.T, creds *clusternet.Credentials) *rpcClient {
	t.Helper()
	p, err := clusternet.Listen(clusternet.Config{BindAddr: "127.0.0.1:0", Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	rc := newRPCClient(p)
	t.Cleanup(rc.close)
	return rc
}

type snapshotOfState struct {
	leader  string
	term    uint64
	voters  []string
	members []string
	resets  uint64
}

func observe(c *tcluster) []snapshotOfState {
	var out []snapshotOfState
	for _, tn := range c.running() {
		st := tn.n.Status()
		out = append(out, snapshotOfState{
			leader: st.LeaderID, term: st.Term, voters: voters(tn),
			members: memberIDs(tn.n.FSM().Members("app", "presence-x")), resets: tn.n.Stats().Resets,
		})
	}
	return out
}

// Every RPC an outsider can send: a wipe that wins the merge rule, a
// forged presence join and a NodeUp that would purge a real node. None
// may change anything, whether the outsider has no key, a wrong key, or
// the right key but no membership.
func TestTrust_OutsiderCannotWipeOrForge(t *testing.T) {
	c := newTestCluster(t, 3, 3)
	for i := range c.nodes {
		c.start(i)
	}
	c.link(0, 1, 2)
	lead := c.waitLeader(15 * time.Second)
	c.waitRegistered(10 * time.Second)
	c.joinLocal(lead, "presence-x", `"real"`)
	c.waitMembers(5*time.Second, "presence-x", `"real"`)
	before := observe(c)

	wrongKey, err := clusternet.DeriveCredentials([]byte("a wrong key, thirty-two bytes..."), "node-a")
	if err != nil {
		t.Fatal(err)
	}
	rightKey, err := clusternet.DeriveCredentials(testKey, "node-z") // holds the key, not a member
	if err != nil {
		t.Fatal(err)
	}
	wipe, _ := json.Marshal(resetRequest{From: "", Servers: []string{""}})
	wellFormedWipe, _ := json.Marshal(resetRequest{From: "a", Servers: []string{"a"}})
	joinCmd, _ := EncodeCommand(PresenceJoin{App: "app", Channel: "presence-x", UserID: json.RawMessage(`"forged"`),
		Node: lead.id, Incarnation: lead.inc})
	purge, _ := EncodeCommand(NodeUp{Node: c.nodes[1].id, Incarnation: ^uint64(0)})
	apply := func(cmd []byte) []byte {
		return append([]byte{0, 0, 0x13, 0x88}, cmd...) // 5 s timeout
	}
	for _, who := range []struct {
		name   string
		creds  *clusternet.Credentials
		hasKey bool
	}{{"no key", nil, false}, {"wrong key", wrongKey, false}, {"key without membership", rightKey, true}} {
		rc := outsider(t, who.creds)
		for _, tn := range c.running() {
			for _, req := range []struct {
				op      byte
				payload []byte
			}{{opReset, wipe}, {opReset, wellFormedWipe}, {opApply, apply(joinCmd)}, {opApply, apply(purge)}} {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				_, err := rc.call(ctx, tn.n.Addr(), "", req.op, req.payload)
				cancel()
				if err == nil {
					t.Errorf("%s: op %d to %s was accepted", who.name, req.op, tn.id)
				}
			}
			if !who.hasKey { // status is for key holders only
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				if _, err := rc.call(ctx, tn.n.Addr(), "", opStatus, nil); err == nil {
					t.Errorf("%s: status of %s was readable", who.name, tn.id)
				}
				cancel()
			}
		}
	}
	// Give anything that slipped through time to show.
	time.Sleep(500 * time.Millisecond)
	after := observe(c)
	for i := range before {
		b, a := before[i], after[i]
		if a.leader != b.leader || a.term != b.term || !slices.Equal(a.voters, b.voters) ||
			!slices.Equal(a.members, b.members) || a.resets != b.resets {
			t.Fatalf("node %d changed: before %+v after %+v", i, b, a)
		}
	}
	for _, tn := range c.running() {
		if inc, ok := tn.n.FSM().Incarnation(c.nodes[1].id); !ok || inc != c.nodes[1].inc {
			t.Fatalf("%s: node-b's incarnation is %d, %v", tn.id, inc, ok)
		}
		if tn.n.Stats().Refused == 0 {
			t.Errorf("%s: no refused RPC counted", tn.id)
		}
	}
	// The cluster still works.
	c.joinLocal(c.nodes[2], "presence-x", `"second"`)
	c.waitMembers(5*time.Second, "presence-x", `"real"`, `"second"`)
}

// Without a key the port is open, as documented, but a reset still has to
// come from a member and name a real group.
func TestTrust_PlaintextResetNeedsAMember(t *testing.T) {
	c := newTestCluster(t, 1, 1)
	c.key = nil
	a := c.start(0)
	c.waitLeader(10 * time.Second)
	rc := outsider(t, nil)
	for _, req := range []resetRequest{
		{From: "", Servers: []string{""}},
		{From: "a", Servers: []string{"b", "a"}},
		{From: "a", Servers: []string{"b"}},
		{From: "a", Servers: []string{"a"}}, // well formed, but "a" is no member
	} {
		b, _ := json.Marshal(req)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err := rc.call(ctx, a.n.Addr(), "", opReset, b)
		cancel()
		var re *remoteError
		if !errors.As(err, &re) {
			t.Fatalf("reset %+v: %v, want a refusal", req, err)
		}
	}
	if a.n.Stats().Resets != 0 || !a.n.IsLeader() {
		t.Fatalf("node reset or lost leadership: %+v", a.n.Stats())
	}
}
