//go:build netns && linux

package netnstest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testutil"
)

// roomChannel is the presence channel the fault tests watch.
const roomChannel = "presence-room"

// population is the clients of a fault test: on every node a subscriber of
// "news" (sub<i>) and a member of roomChannel (w<i>, user w<i>), plus extra
// members. It knows where each client is and which user it joined as.
type population struct {
	t     *testing.T
	cl    *clients
	c     *raftCluster
	on    map[string]int // client id → host index
	model presenceModel  // live members of roomChannel
}

func populate(t *testing.T, c *raftCluster, cl *clients) *population {
	t.Helper()
	p := &population{t: t, cl: cl, c: c, on: map[string]int{}, model: presenceModel{}}
	for _, i := range c.all() {
		sub := fmt.Sprintf("sub%d", i)
		p.connect(sub, i)
		cl.subscribe(sub, "news")
		p.join(fmt.Sprintf("w%d", i), i, fmt.Sprintf("w%d", i))
	}
	return p
}

func (p *population) connect(id string, i int) {
	p.t.Helper()
	p.cl.connect(id, p.c.nodes[i])
	p.on[id] = i
}

// join connects client id to host i and joins roomChannel as user.
func (p *population) join(id string, i int, user string) reply {
	p.t.Helper()
	p.connect(id, i)
	r := p.cl.join(id, roomChannel, user, map[string]any{"host": i})
	p.model[id] = user
	return r
}

// leave unsubscribes id from roomChannel.
func (p *population) leave(id string) {
	p.t.Helper()
	p.cl.unsubscribe(id, roomChannel)
	delete(p.model, id)
}

// drop forgets the clients of host i (its process is gone) and
// disconnects them, so that pusher-js does not reconnect them later.
func (p *population) drop(i int) {
	p.t.Helper()
	for id, at := range p.on {
		if at == i {
			p.cl.disconnect(id)
			delete(p.on, id)
			delete(p.model, id)
		}
	}
}

// ids lists the clients on the given hosts whose id starts with prefix
// ("sub" for subscribers, "" for all), sorted.
func (p *population) ids(prefix string, hosts ...int) []string {
	var out []string
	for id, i := range p.on {
		if slices.Contains(hosts, i) && len(id) >= len(prefix) && id[:len(prefix)] == prefix {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// members lists the presence clients on the given hosts.
func (p *population) members(hosts ...int) []string {
	var out []string
	for id := range p.model {
		if slices.Contains(hosts, p.on[id]) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// publishEverywhere checks exactly-once delivery of a few messages
// published through each node of hosts to the subscribers on them.
func (p *population) publishEverywhere(tag string, hosts ...int) {
	p.t.Helper()
	msgs := map[string]int{}
	for _, i := range hosts {
		for k := range 3 {
			msgs[fmt.Sprintf("%s-via%d-%d", tag, i, k)] = i
		}
	}
	publishOnce(p.t, p.cl, p.c, "news", p.ids("sub", hosts...), msgs)
}

// once waits until each of the presence clients watchers got the presence
// event name (memberAdded or memberRemoved) for user since from, and checks
// that each got it exactly once. The fence orders what the watchers' nodes
// relay; removals decided by a purge in the raft log are sent by each node
// to its own clients, so the tests count those once more at their end.
func (p *population) once(from int, timeout time.Duration, name, user string, watchers ...string) {
	p.t.Helper()
	var via []int
	for _, id := range watchers {
		p.cl.waitEvent(from, timeout, name+" "+user+" on "+id, memberEvent(id, roomChannel, name, user))
		if !slices.Contains(via, p.on[id]) {
			via = append(via, p.on[id])
		}
	}
	fence(p.t, p.cl, p.c, roomChannel, watchers, via...)
	got := countEvents(p.cl, from, watchers, func(id string) func(event) bool {
		return memberEvent(id, roomChannel, name, user)
	})
	for _, n := range got {
		if n != 1 {
			p.t.Fatalf("%s %s counts = %v, want 1 each", name, user, got)
		}
	}
}

// clientViewsAgree checks pusher-js's member count of every presence
// client on hosts against the model.
func (p *population) clientViewsAgree(hosts ...int) {
	p.t.Helper()
	want := len(p.model.users())
	for _, id := range p.members(hosts...) {
		if m := p.cl.members(id, roomChannel); m.Count != want {
			p.t.Fatalf("%s's pusher-js member list has %d members, want %d (%v)", id, m.Count, want, p.model.users())
		}
	}
}

func TestClusterPusher_LeaderKill(t *testing.T) {
	c := newRaftCluster(t)
	cl := startClients(t)
	leader := c.waitFormed(formTimeout, c.all()...)
	survivors := c.others(leader)
	p := populate(t, c, cl)
	// "both" has a socket on the leader and one on a survivor: it must stay.
	p.join("both-leader", leader, "both")
	p.join("both-survivor", survivors[0], "both")
	c.waitUsers(deliveryTimeout, roomChannel, p.model.users(), c.all()...)
	gone := fmt.Sprintf("w%d", leader)

	from := cl.mark()
	killed := time.Now()
	c.nodes[leader].kill()
	p.drop(leader)
	bound := masterTimeout + time.Second + loadSlack
	newLeader := -1
	failover := testutil.WaitFor(t, bound, "the survivors to agree on a new raft leader", func() bool {
		newLeader = c.raftLeader(survivors...)
		return newLeader >= 0
	})
	t.Logf("MEASURE leader_failover=%s (SIGKILL of the leader until both survivors name the same new leader; CLUSTER_MASTER_TIMEOUT %s, bound %s)",
		failover.Round(time.Millisecond), masterTimeout, bound)

	p.publishEverywhere("after-failover", survivors...)

	watchers := p.members(survivors...)
	p.once(from, nodeTimeout+reapDelay+settleTimeout, memberRemoved, gone, watchers...)
	t.Logf("MEASURE dead_member_removed=%s (SIGKILL until every survivor's clients got member_removed; node timeout %s + reap delay %s)",
		time.Since(killed).Round(time.Millisecond), nodeTimeout, reapDelay)
	if got := cl.matching(from, memberEvent("", roomChannel, memberRemoved, "both")); len(got) != 0 {
		t.Fatalf("member_removed for a user with a live socket on a survivor:%s", describe(got))
	}
	c.waitUsers(deliveryTimeout, roomChannel, p.model.users(), survivors...)
	p.clientViewsAgree(survivors...)

	// Presence still changes with two of three nodes.
	late := cl.mark()
	if r := p.join("late", survivors[1], "late"); r.Count != len(p.model.users()) {
		t.Fatalf("join after the failover: count %d, want %d", r.Count, len(p.model.users()))
	}
	p.once(late, deliveryTimeout, memberAdded, "late", watchers...)
	c.waitUsers(deliveryTimeout, roomChannel, p.model.users(), survivors...)
	// Still exactly one member_removed for the dead node's member.
	p.once(from, deliveryTimeout, memberRemoved, gone, watchers...)
}

func TestClusterPusher_Partition(t *testing.T) {
	c := newRaftCluster(t)
	cl := startClients(t)
	// The leader is the one cut off: the majority must elect another, and
	// the old leader must notice that it lost its quorum.
	minority := c.waitFormed(formTimeout, c.all()...)
	majority := c.others(minority)
	p := populate(t, c, cl)
	p.join("leaver", minority, "leaver")
	c.waitUsers(deliveryTimeout, roomChannel, p.model.users(), c.all()...)
	before := p.model.users()

	gone := fmt.Sprintf("w%d", minority)
	cut := cl.mark()
	heal := c.isolate(minority)
	parted := time.Now()
	c.waitFormed(nodeTimeout+masterTimeout+loadSlack, majority...)
	t.Logf("MEASURE partition_majority_ready=%s (cut until the majority agrees on a leader and sees the minority dead)",
		time.Since(parted).Round(time.Millisecond))
	var status string
	testutil.WaitFor(t, masterTimeout+loadSlack, "the minority to say on /cluster that it has no quorum", func() bool {
		v, err := c.nodes[minority].view()
		status = fmt.Sprintf("quorum %v, raft state %s, leader %q, last contact %d ms", v.Quorum, v.Raft.State, v.Raft.LeaderID, v.Raft.LastContactMs)
		return err == nil && !v.Quorum && v.Raft.LeaderID == "" && v.Raft.State != "leader"
	})
	t.Logf("minority /cluster: %s", status)

	// The majority changes presence.
	from := cl.mark()
	if r := p.join("maj", majority[0], "maj"); r.Count != len(before)+1 {
		t.Fatalf("join on the majority: count %d, want %d", r.Count, len(before)+1)
	}
	cl.waitEvent(from, deliveryTimeout, "member_added maj", memberEvent(fmt.Sprintf("w%d", majority[1]), roomChannel, memberAdded, "maj"))

	// The minority refuses presence joins, and serves public channels and
	// the presence state it has.
	p.connect("refused", minority)
	r := <-cl.send(joinCmd("refused", roomChannel, "refused", nil))
	if r.OK || r.Status != 4302 {
		t.Fatalf("presence join on the minority: %+v, want subscription_error 4302", r)
	}
	t.Logf("minority presence join refused with 4302 after %.0f ms", r.MS)
	publishOnce(t, cl, c, "news", []string{fmt.Sprintf("sub%d", minority)}, map[string]int{"minority-local": minority})
	if got, err := users(c.nodes[minority], roomChannel); err != nil || !slices.Equal(got, before) {
		t.Fatalf("minority /users = %v %v, want what it had: %v", got, err, before)
	}
	// A leave on the minority cannot be written now; it must be after the heal.
	p.leave("leaver")

	// The majority purges the unreachable node's members after the reap delay.
	alive := presenceModel{}
	for id, u := range p.model {
		if p.on[id] != minority {
			alive[id] = u
		}
	}
	c.waitUsers(nodeTimeout+reapDelay+settleTimeout, roomChannel, alive.users(), majority...)
	watchers := []string{fmt.Sprintf("w%d", majority[0]), fmt.Sprintf("w%d", majority[1])}
	p.once(cut, deliveryTimeout, memberRemoved, gone, watchers...)
	p.once(cut, deliveryTimeout, memberRemoved, "leaver", watchers...)

	healing := cl.mark()
	heal()
	healed := time.Now()
	c.waitFormed(settleTimeout, c.all()...)
	c.waitUsers(settleTimeout, roomChannel, p.model.users(), c.all()...)
	t.Logf("MEASURE partition_heal_converge=%s (heal until one leader everywhere and every node's /users equals the live members)",
		time.Since(healed).Round(time.Millisecond))

	// The healed node announces its members again, once.
	p.once(healing, deliveryTimeout, memberAdded, gone, watchers...)
	p.publishEverywhere("after-heal", c.all()...)
	p.clientViewsAgree(majority...)
	// Presence events sent while the node was cut off never reach its
	// clients; the figure shows whether anything resynchronises them.
	m := cl.members(gone, roomChannel)
	t.Logf("after the heal, pusher-js on the former minority lists %d members; the cluster has %d", m.Count, len(p.model.users()))

	from = cl.mark()
	if r := p.join("after", minority, "after"); r.Count != len(p.model.users()) {
		t.Fatalf("join on the healed node: count %d, want %d", r.Count, len(p.model.users()))
	}
	p.once(from, deliveryTimeout, memberAdded, "after", watchers...)
	c.waitUsers(deliveryTimeout, roomChannel, p.model.users(), c.all()...)
}

func TestClusterPusher_RestartNewIncarnation(t *testing.T) {
	// As deploy/ runs it: the node comes back at the same addresses.
	t.Run("fixed ports", func(t *testing.T) { restartFollower(t, settleTimeout) })
	// With free ports (0) it comes back at new ones; raft reaches it at the
	// address gossip has now. memberlist may refuse a known name at a new
	// address until the old entry, once dead, is forgotten (up to 15 s), so
	// the bound allows that; measured 1.9–3.2 s.
	t.Run("free ports", func(t *testing.T) {
		restartFollower(t, nodeTimeout+15*time.Second+settleTimeout, "CLUSTER_GOSSIP_PORT=0", "CLUSTER_RAFT_PORT=0")
	})
}

// restartFollower SIGKILLs a follower and starts it again with the same
// data directory, so the same node id and raft log, and a new incarnation;
// it must rejoin within rejoin. A long reap delay leaves the new
// incarnation as the only thing that can purge the members of the old life.
func restartFollower(t *testing.T, rejoin time.Duration, env ...string) {
	c := newRaftCluster(t, append([]string{"CLUSTER_REAP_DELAY=60000"}, env...)...)
	cl := startClients(t)
	leader := c.waitFormed(formTimeout, c.all()...)
	f := c.others(leader)[0]
	rest := c.others(f)
	p := populate(t, c, cl)
	p.join("old-life", f, "old-life")
	p.join("both-f", f, "both")
	p.join("both-other", rest[0], "both")
	c.waitUsers(deliveryTimeout, roomChannel, p.model.users(), c.all()...)
	id := c.nodeID(f)
	oldInc := c.incarnation(rest[0], f)
	if oldInc == 0 {
		t.Fatal("no incarnation for the follower in gossip")
	}

	from := cl.mark()
	c.nodes[f].kill()
	p.drop(f)
	restarted := time.Now()
	c.start(f)
	testutil.WaitFor(t, rejoin, "one leader everywhere and the others seeing the new incarnation", func() bool {
		for _, i := range rest {
			if c.incarnation(i, f) <= oldInc {
				return false
			}
		}
		return c.agreedLeader(c.all()...) >= 0
	})
	t.Logf("MEASURE restart_rejoin=%s (SIGKILL and restart until one leader everywhere, the node registered again and its new incarnation seen by the others)",
		time.Since(restarted).Round(time.Millisecond))
	v, err := c.nodes[f].view()
	if err != nil {
		t.Fatal(err)
	}
	if v.Raft.NodeID != id || v.Raft.Stats.Bootstraps != 0 || v.Raft.Stats.Resets != 0 {
		t.Fatalf("restarted node raft = id %q (want %q), bootstraps %d, resets %d: it must rejoin with its own log",
			v.Raft.NodeID, id, v.Raft.Stats.Bootstraps, v.Raft.Stats.Resets)
	}

	watchers := p.members(rest...)
	for _, user := range []string{fmt.Sprintf("w%d", f), "old-life"} {
		p.once(from, settleTimeout, memberRemoved, user, watchers...)
	}
	c.waitUsers(deliveryTimeout, roomChannel, p.model.users(), c.all()...)
	t.Logf("MEASURE restart_purged=%s (SIGKILL and restart until the old life's members are gone everywhere)",
		time.Since(restarted).Round(time.Millisecond))
	if got := cl.matching(from, memberEvent("", roomChannel, memberRemoved, "both")); len(got) != 0 {
		t.Fatalf("member_removed for a user with a live socket elsewhere:%s", describe(got))
	}

	// The new life's clients join and are seen everywhere.
	newLife := cl.mark()
	if r := p.join("new-life", f, "new-life"); r.Count != len(p.model.users()) {
		t.Fatalf("join on the restarted node: count %d, want %d", r.Count, len(p.model.users()))
	}
	p.connect(fmt.Sprintf("sub%d", f), f)
	cl.subscribe(fmt.Sprintf("sub%d", f), "news")
	p.once(newLife, deliveryTimeout, memberAdded, "new-life", watchers...)
	c.waitUsers(deliveryTimeout, roomChannel, p.model.users(), c.all()...)
	p.clientViewsAgree(c.all()...)
	p.publishEverywhere("after-restart", c.all()...)
	// Still exactly one member_removed for each member of the old life.
	for _, user := range []string{fmt.Sprintf("w%d", f), "old-life"} {
		p.once(from, deliveryTimeout, memberRemoved, user, watchers...)
	}
}
