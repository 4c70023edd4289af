//go:build netns && linux

package netnstest

import (
	"context"
	"crypto/tls"
	be "encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/netns"
	"github.com/soketi-go/soketi/internal/testutil"
	"github.com/soketi-go/soketi/pkg/clusternet"
	"github.com/soketi-go/soketi/pkg/consensus"
)

// raftState is what an outsider must not be able to change.
type raftState struct {
	leader  string
	term    uint64
	voters  []string
	members []string // gossip members, any state
	resets  uint64
}

func (c *raftCluster) raftState(i int) raftState {
	c.t.Helper()
	v, err := c.nodes[i].view()
	if err != nil {
		c.t.Fatalf("view of node %d: %v", i, err)
	}
	st := raftState{leader: v.Raft.LeaderID, term: v.Raft.Term, resets: v.Raft.Stats.Resets}
	for _, s := range v.Raft.Voters {
		st.voters = append(st.voters, s.ID)
	}
	for _, m := range v.Members {
		st.members = append(st.members, m.ID)
	}
	slices.Sort(st.voters)
	slices.Sort(st.members)
	return st
}

// rpcFrame is the cluster port's RPC request framing: len u32 | op | payload.
func rpcFrame(op byte, payload []byte) []byte {
	b := be.BigEndian.AppendUint32(nil, uint32(1+len(payload)))
	return append(append(b, op), payload...)
}

// refusedWithoutReply sends b on conn and requires the node to close it
// without a single byte of reply.
func refusedWithoutReply(t *testing.T, what string, conn net.Conn, b []byte) {
	t.Helper()
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(8 * time.Second))
	_, _ = conn.Write(b)
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	if n > 0 && buf[0] != 0x15 { // a TLS alert is the only reply allowed
		t.Errorf("%s: the node answered %q", what, buf[:n])
	}
	if err == nil {
		t.Errorf("%s: the connection stayed open", what)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("%s: the node neither answered nor closed (%v)", what, err)
	}
}

// Hosts on the LAN without the key — a soketi node with none, one with a
// wrong key, and raw packets forging every cluster RPC — cannot join,
// read, publish to subscribers or change the replicated state of a keyed
// cluster. The keyed cluster works throughout.
func TestClusterOutsider_CannotJoinForgeOrWipe(t *testing.T) {
	nw := netns.New(t, 5)
	c := newRaftClusterOn(t, nw)
	cl := startClients(t)
	lead := c.waitFormed(formTimeout, c.all()...)

	// Real state: a presence member and a subscriber on every node.
	cl.connect("member", c.nodes[0])
	if r := cl.join("member", "presence-room", "real-user", map[string]string{"name": "real"}); !r.OK {
		t.Fatalf("join: %+v", r)
	}
	c.waitUsers(deliveryTimeout, "presence-room", []string{"real-user"}, c.all()...)
	subs := []string{"sub0", "sub1", "sub2"}
	for i, id := range subs {
		cl.connect(id, c.nodes[i])
		cl.subscribe(id, "news")
	}
	before := make([]raftState, 3)
	for i := range c.all() {
		before[i] = c.raftState(i)
	}
	from := cl.mark()

	// Two soketi nodes on the LAN, with the lowest ids so that they would
	// win the merge rule, each bootstrapping a group of its own.
	var unicast []string
	for _, h := range nw.Hosts {
		unicast = append(unicast, `"`+h.Addr.String()+`"`)
	}
	outsiderEnv := func(id, key string) []string {
		return []string{"ADAPTER_DRIVER=cluster", "CLUSTER_PREFIX=raft-" + nw.ID, "CLUSTER_NODE_ID=" + id,
			"CLUSTER_UNICAST_ADDRESSES=[" + strings.Join(unicast, ",") + "]", "CLUSTER_EXPECTED_SERVERS=1",
			"CLUSTER_KEY=" + key, "CLUSTER_DATA_DIR=" + t.TempDir(),
			fmt.Sprintf("CLUSTER_NODE_TIMEOUT=%d", nodeTimeout.Milliseconds())}
	}
	open := startNode(t, nw.Hosts[3], outsiderEnv("aaa-open", ""))
	wrong := startNode(t, nw.Hosts[4], outsiderEnv("aaa-wrong", "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktMzI="))

	// Raw forgeries from the test's own namespace, which reaches every host.
	wipe, _ := json.Marshal(map[string]any{"from": "", "servers": []string{""}})
	forgedJoin, _ := consensus.EncodeCommand(consensus.PresenceJoin{App: "app-id", Channel: "presence-room",
		UserID: json.RawMessage(`"forged"`), Node: before[0].leader, Incarnation: 1})
	purge, _ := consensus.EncodeCommand(consensus.NodeUp{Node: before[0].voters[0], Incarnation: ^uint64(0)})
	apply := func(cmd []byte) []byte { return append([]byte{0, 0, 0x13, 0x88}, cmd...) }
	vote := append([]byte{byte(clusternet.KindRaft), 1}, []byte(`{"Term":99999,"Candidate":"aaa"}`)...)
	wrongCreds, err := clusternet.DeriveCredentials([]byte("not-the-cluster-key-32-bytes-xxx"), "aaa-raw")
	if err != nil {
		t.Fatal(err)
	}
	wrongPort, err := clusternet.Listen(clusternet.Config{BindAddr: "127.0.0.1:0", Credentials: wrongCreds})
	if err != nil {
		t.Fatal(err)
	}
	defer wrongPort.Close()
	attacks := []struct {
		name string
		b    []byte
	}{
		{"reset", append([]byte{byte(clusternet.KindRPC)}, rpcFrame(3, wipe)...)},
		{"status", append([]byte{byte(clusternet.KindRPC)}, rpcFrame(2, nil)...)},
		{"forged join", append([]byte{byte(clusternet.KindRPC)}, rpcFrame(1, apply(forgedJoin))...)},
		{"purge", append([]byte{byte(clusternet.KindRPC)}, rpcFrame(1, apply(purge))...)},
		{"vote", vote},
		{"stream hello", append([]byte{byte(clusternet.KindStream)}, []byte("\x00\x00\x00\x20hello from a fake origin node")...)},
	}
	for _, h := range nw.Hosts[:3] {
		addr := net.JoinHostPort(h.Addr.String(), "11004")
		for _, a := range attacks {
			conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				t.Fatalf("dial %s: %v", addr, err)
			}
			refusedWithoutReply(t, "plaintext "+a.name+" to "+h.Name, conn, a.b)
			// The same with a certificate of the attacker's own making.
			tc, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13,
				Certificates: []tls.Certificate{testutil.SelfSignedCert(t, "aaa-self")}})
			if err == nil {
				refusedWithoutReply(t, "self-signed "+a.name+" to "+h.Name, tc, a.b)
			}
		}
		// And with certificates derived from a wrong key.
		for _, k := range []clusternet.Kind{clusternet.KindRPC, clusternet.KindRaft, clusternet.KindStream} {
			if conn, err := wrongPort.Dial(context.Background(), addr, k, ""); err == nil {
				refusedWithoutReply(t, "wrong key "+k.String()+" to "+h.Name, conn, rpcFrame(3, wipe))
			}
		}
	}

	// Each outsider publishes through its own API to the channel the
	// cluster's clients listen on.
	for _, o := range []*node{open, wrong} {
		testutil.WaitFor(t, 10*time.Second, "outsider to serve HTTP", func() bool {
			resp, err := httpClient.Get("http://" + o.host.Addr.String() + ":6001/")
			if err == nil {
				resp.Body.Close()
			}
			return err == nil && resp.StatusCode == http.StatusOK
		})
		cl.trigger(o, "news", "forged", "outsider")
	}

	// Several node timeouts for anything that slipped in to show.
	time.Sleep(3 * nodeTimeout)
	for i := range c.all() {
		after := c.raftState(i)
		b := before[i]
		if after.leader != b.leader || after.term != b.term || !slices.Equal(after.voters, b.voters) ||
			!slices.Equal(after.members, b.members) || after.resets != 0 {
			t.Fatalf("node %d changed: before %+v, after %+v", i, b, after)
		}
		v, _ := c.nodes[i].view()
		if v.Port.Refused == 0 {
			t.Errorf("node %d counted no refused cluster connection", i)
		}
		for _, m := range v.Members {
			if strings.HasPrefix(m.ID, "aaa-") {
				t.Errorf("node %d lists outsider %s (%s)", i, m.ID, m.State)
			}
		}
		if !v.Secured {
			t.Errorf("node %d does not say it is secured", i)
		}
	}
	c.waitUsers(deliveryTimeout, "presence-room", []string{"real-user"}, c.all()...)
	if got := cl.matching(from, frame("", "news", "forged")); len(got) > 0 {
		t.Fatalf("an outsider's publish reached the cluster's subscribers: %s", describe(got))
	}
	if lead != c.raftLeader(c.all()...) {
		t.Fatalf("leader changed from %d", lead)
	}

	// The public port of a keyed node hands out no address, id or incarnation.
	resp, err := httpClient.Get("http://" + nw.Hosts[0].Addr.String() + ":6001/cluster")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, leak := range []string{nw.Hosts[1].Addr.String(), before[0].voters[0], "incarnation", "11004"} {
		if strings.Contains(string(body), leak) {
			t.Errorf("public GET /cluster shows %q: %s", leak, body)
		}
	}

	// The keyed cluster still works: a publish through every node reaches
	// every subscriber once.
	msgs := map[string]int{}
	for i := range c.all() {
		msgs[fmt.Sprintf("after-outsiders-%d", i)] = i
	}
	publishOnce(t, cl, c, "news", subs, msgs)
}
