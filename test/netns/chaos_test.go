//go:build netns && chaos && linux

package netnstest

// The chaos tests: faults that come one after another, as in a rolling
// deploy or a flaky network, under presence churn and a steady publish
// load, then a heal and a check that the cluster healed itself. They are
// seeded and bounded, report every violation they find (not just the
// first) and print a summary table. Behind the extra `chaos` tag until the
// cluster passes them:
//
//	go test -tags 'netns chaos' -count=1 -timeout 30m -run TestChaos -v ./test/netns/
//
// CHAOS_SEEDS=1,2,3 (or CHAOS_SEED=7) picks the seeds, CHAOS_DURATION=90s
// (or 90) the time faults are applied per seed, CHAOS_LOG_DIR=/some/dir
// keeps every node process's output, the clients' frames and the model
// there, CHAOS_NODE_ENV="SOKETI_DEBUG=1 …" adds to the nodes' environment.
//
// The model, kept simple and explicit:
//   - A socket is "joined" when the test joined it and has not asked it to
//     leave, and its own event stream (pusher-js state changes and frames)
//     says it is connected and got subscription_succeeded for the channel
//     on its current connection. That is the truth the servers' views are
//     compared with.
//   - SIGKILL: the test disconnects every socket of the killed node at once
//     (as population.drop does); their users must disappear. Watchers and
//     subscribers of that node are re-created once it is restarted.
//   - SIGTERM: the node closes its sockets with 4200 and pusher-js
//     reconnects them to the same host, which is back after the restart;
//     pusher-js re-subscribes by itself. The test leaves these sockets to
//     pusher-js: a socket that is subscribed again is joined again, one
//     that got a subscription_error is not.
//   - A cut (blackhole routes between the node and the other nodes only):
//     the test still reaches the node, so its sockets stay connected.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Parameters of a chaos run.
const (
	chaosPresence = "presence-chaos"
	chaosNews     = "chaos-news"
	chaosUsers    = 30 // churn users u00…u29
	chaosSockets  = 45 // churn sockets kept open, about
	chaosWatchers = 2  // per node
	chaosSubs     = 2  // per node
	publishEvery  = 50 * time.Millisecond
	// leaderBound is check 4: after a fault ends, every running node names
	// the same raft leader within CLUSTER_MASTER_TIMEOUT + 1 s.
	leaderBound = masterTimeout + time.Second
	// leaderGiveUp bounds how long the nemesis waits for a leader before
	// it goes on with the next fault.
	leaderGiveUp = 20 * time.Second
	// exitBound is how long a SIGTERMed node may take to exit: the 3 s
	// shutdown grace period, the webhooks' second and the leave.
	exitBound = 15 * time.Second
	// healthBefore is the margin before a publish in which a fault makes
	// the pair unhealthy (see publishCheck).
	healthBefore = time.Second
)

var defaultChaosSeeds = []int64{1, 20240917}

type chaosConfig struct {
	seeds    []int64
	duration time.Duration
	logDir   string
}

func chaosConfigFromEnv(t *testing.T) chaosConfig {
	t.Helper()
	cfg := chaosConfig{seeds: defaultChaosSeeds, duration: 60 * time.Second, logDir: os.Getenv("CHAOS_LOG_DIR")}
	list := os.Getenv("CHAOS_SEEDS")
	if list == "" {
		list = os.Getenv("CHAOS_SEED")
	}
	if list != "" {
		cfg.seeds = nil
		for _, s := range strings.Split(list, ",") {
			n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
			if err != nil {
				t.Fatalf("CHAOS_SEEDS=%q: %v", list, err)
			}
			cfg.seeds = append(cfg.seeds, n)
		}
		if len(cfg.seeds) > 20 {
			t.Fatalf("CHAOS_SEEDS: %d seeds, at most 20", len(cfg.seeds))
		}
	}
	if d := os.Getenv("CHAOS_DURATION"); d != "" {
		v, err := time.ParseDuration(d)
		if err != nil {
			secs, err2 := strconv.Atoi(d)
			if err2 != nil {
				t.Fatalf("CHAOS_DURATION=%q: %v", d, err)
			}
			v = time.Duration(secs) * time.Second
		}
		if v < 10*time.Second || v > 30*time.Minute {
			t.Fatalf("CHAOS_DURATION=%s: want 10s to 30m", v)
		}
		cfg.duration = v
	}
	return cfg
}

func TestChaos_HealsItself(t *testing.T) {
	cfg := chaosConfigFromEnv(t)
	for _, seed := range cfg.seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			r := newChaosRun(t, seed, cfg)
			r.runLoad(func() { r.nemesis(cfg.duration) })
			r.finish()
		})
	}
}

// TestChaos_RollingRestart SIGTERMs and restarts the three nodes one after
// another, as a rolling deploy does, waiting until each is back in the
// group and the group has a leader, under the same load and checks.
func TestChaos_RollingRestart(t *testing.T) {
	cfg := chaosConfigFromEnv(t)
	r := newChaosRun(t, cfg.seeds[0], cfg)
	r.runLoad(r.rollingRestart)
	r.finish()
}

// chaosFault is one fault the nemesis applied.
type chaosFault struct {
	n      int
	kind   string // "kill", "term" or "cut"
	node   int
	nodeID string
	note   string
	start  time.Time // SIGKILL, SIGTERM or routes added
	end    time.Time // restart started or routes removed
	// leaderAt is when every node first named the same raft leader (which
	// says it leads) after end; zero if not within leaderGiveUp.
	leaderAt  time.Time
	leaderOut bool // gave up waiting
	// recoveredAt is when the whole group first agreed on a registered
	// leader with everyone alive in gossip (agreedLeader) after end; zero
	// if never. The node counts as faulty from start to recoveredAt.
	recoveredAt time.Time
	// views is every node's raft view when the leader was last looked for
	// in vain, for the report.
	views   string
	viewsAt time.Time
}

func (f *chaosFault) String() string {
	return fmt.Sprintf("#%d %s n%d", f.n, f.kind, f.node)
}

// chaosRun is one seeded run: the cluster, the clients, the model and
// what was recorded.
type chaosRun struct {
	t     *testing.T
	seed  int64
	cfg   chaosConfig
	c     *raftCluster
	cl    *clients
	start time.Time
	rng   *rand.Rand // the nemesis's; the load goroutines have their own

	loadCtx  context.Context
	stopLoad context.CancelFunc
	wg       sync.WaitGroup

	mu         sync.Mutex
	socks      map[string]*chaosSock
	order      []*chaosSock
	gen        [3]int // incremented when the node is killed
	nextSock   int
	watcherSeq [3]int
	faults     []*chaosFault
	pubs       []*chaosPub
	churn      churnStats
	procs      []chaosProc
	violations []violation
	notes      []string
	endedAt    time.Time
}

type chaosProc struct {
	host int
	n    *node
}

func newChaosRun(t *testing.T, seed int64, cfg chaosConfig) *chaosRun {
	t.Helper()
	t.Logf("CHAOS seed=%d duration=%s (rerun with CHAOS_SEEDS=%d)", seed, cfg.duration, seed)
	c := newRaftCluster(t, strings.Fields(os.Getenv("CHAOS_NODE_ENV"))...)
	cl := startClients(t)
	r := &chaosRun{t: t, seed: seed, cfg: cfg, c: c, cl: cl, socks: map[string]*chaosSock{},
		rng: rand.New(rand.NewPCG(uint64(seed), 0))}
	for i := range c.nodes {
		r.procs = append(r.procs, chaosProc{i, c.nodes[i]})
	}
	r.loadCtx, r.stopLoad = context.WithCancel(context.Background())
	// Registered after the cluster's and the clients' cleanups, so it runs
	// first: the load goroutines stop before the processes go.
	t.Cleanup(func() {
		r.stopLoad()
		r.wg.Wait()
		r.saveLogs()
	})
	return r
}

func (r *chaosRun) rel(at time.Time) string {
	if at.IsZero() {
		return "-"
	}
	return fmt.Sprintf("%.1fs", at.Sub(r.start).Seconds())
}

// runLoad sets up the watchers, subscribers and the first churn sockets,
// starts the churn and the publishes, runs faults, then stops the load.
func (r *chaosRun) runLoad(faults func()) {
	r.c.waitFormed(formTimeout, r.c.all()...)
	r.start = time.Now()
	var setup sync.WaitGroup
	for i := range 3 {
		for range chaosWatchers {
			setup.Add(1)
			go func() { defer setup.Done(); r.addWatcher(i, r.gen[i]) }()
		}
		for range chaosSubs {
			setup.Add(1)
			go func() { defer setup.Done(); r.addSubscriber(i, r.gen[i]) }()
		}
	}
	setupRng := rand.New(rand.NewPCG(uint64(r.seed), 1))
	for k := range chaosSockets - 8 {
		node, user := k%3, fmt.Sprintf("u%02d", setupRng.IntN(chaosUsers))
		setup.Add(1)
		go func() { defer setup.Done(); r.joinNew(node, user) }()
	}
	setup.Wait()
	r.t.Logf("CHAOS set up %d sockets in %s", len(r.order), time.Since(r.start).Round(time.Millisecond))

	r.wg.Add(2)
	go r.churnLoop(rand.New(rand.NewPCG(uint64(r.seed), 2)))
	go r.publishLoop(rand.New(rand.NewPCG(uint64(r.seed), 3)))
	faults()
	r.stopLoad()
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * commandTimeout):
		r.violate("harness", "the load goroutines did not stop within %s", 2*commandTimeout)
	}
	r.endedAt = time.Now()
}

// nemesis applies one fault about every 10 s (jittered) for duration, in
// rounds of the three kinds in a seeded random order.
func (r *chaosRun) nemesis(duration time.Duration) {
	stop := time.Now().Add(duration)
	next := time.Now().Add(r.jitter(3*time.Second, 6*time.Second))
	var kinds []string
	for k := 1; k <= 200; k++ {
		r.sleepUntil(next)
		r.awaitLeaders()
		if time.Now().After(stop) {
			return
		}
		if len(kinds) == 0 {
			kinds = []string{"kill", "term", "cut"}
			r.rng.Shuffle(len(kinds), func(a, b int) { kinds[a], kinds[b] = kinds[b], kinds[a] })
		}
		kind := kinds[0]
		kinds = kinds[1:]
		var f *chaosFault
		switch kind {
		case "kill":
			f = r.kill(k, r.rng.IntN(3), r.jitter(time.Second, 3*time.Second))
		case "term":
			i := r.c.raftLeader(r.c.all()...)
			note := ""
			if i < 0 {
				i, note = r.rng.IntN(3), "no agreed raft leader: a random node"
			}
			f = r.term(k, i, note)
		case "cut":
			f = r.cut(k, r.rng.IntN(3), r.jitter(8*time.Second, 12*time.Second))
		}
		next = later(f.start.Add(r.jitter(8*time.Second, 12*time.Second)), f.end.Add(r.jitter(2*time.Second, 4*time.Second)))
	}
}

// rollingRestart SIGTERMs and restarts each node in turn, waiting until it
// is back in the group and the group has a leader.
func (r *chaosRun) rollingRestart() {
	r.sleepUntil(time.Now().Add(5 * time.Second))
	for k, i := range r.c.all() {
		f := r.term(k+1, i, "rolling restart")
		deadline := time.Now().Add(formTimeout)
		for f.recoveredAt.IsZero() && time.Now().Before(deadline) {
			r.sleepUntil(time.Now().Add(200 * time.Millisecond))
		}
		if f.recoveredAt.IsZero() {
			r.violate("no-reform", "%s: the group did not agree on a leader within %s of the restart", f, formTimeout)
		}
		r.awaitLeaders()
		r.sleepUntil(time.Now().Add(5 * time.Second)) // steady load between restarts
	}
}

func (r *chaosRun) jitter(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(r.rng.Int64N(int64(hi-lo)+1))
}

func (r *chaosRun) newFault(n int, kind string, i int, note string) *chaosFault {
	f := &chaosFault{n: n, kind: kind, node: i, nodeID: r.c.nodeID(i), note: note, start: time.Now()}
	r.mu.Lock()
	r.faults = append(r.faults, f)
	r.mu.Unlock()
	r.t.Logf("CHAOS %s fault %s (node id %s) %s", r.rel(f.start), f, f.nodeID, note)
	return f
}

// kill SIGKILLs node i, disconnects its sockets, waits down, restarts it
// with the same data directory and re-creates its watchers and subscribers.
func (r *chaosRun) kill(n, i int, down time.Duration) *chaosFault {
	r.mu.Lock()
	r.gen[i]++ // sockets of the old life are dropped, even those being opened now
	r.mu.Unlock()
	f := r.newFault(n, "kill", i, fmt.Sprintf("down %s", down.Round(100*time.Millisecond)))
	r.c.nodes[i].kill()
	r.dropNode(i, fmt.Sprintf("node %d killed (%s)", i, f))
	r.sleepUntil(f.start.Add(down))
	r.restart(i, f)
	r.mu.Lock()
	gen := r.gen[i]
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		var w sync.WaitGroup
		for range chaosWatchers {
			w.Add(1)
			go func() { defer w.Done(); r.addWatcher(i, gen) }()
		}
		for range chaosSubs {
			w.Add(1)
			go func() { defer w.Done(); r.addSubscriber(i, gen) }()
		}
		w.Wait()
	}()
	return f
}

// term SIGTERMs node i (a graceful shutdown), waits for it to exit and
// restarts it with the same data directory. Its sockets are left to
// pusher-js, which reconnects them.
func (r *chaosRun) term(n, i int, note string) *chaosFault {
	f := r.newFault(n, "term", i, note)
	old := r.c.nodes[i]
	old.cmd.Process.Signal(syscall.SIGTERM)
	deadline := f.start.Add(exitBound)
	for old.running() && time.Now().Before(deadline) {
		r.sleepUntil(time.Now().Add(100 * time.Millisecond))
	}
	if old.running() {
		r.violate("exit-timeout", "%s: node %d still running %s after SIGTERM; SIGKILLed", f, i, exitBound)
		old.kill()
	}
	f.note = strings.TrimSpace(fmt.Sprintf("%s exited after %s", f.note, time.Since(f.start).Round(100*time.Millisecond)))
	r.restart(i, f)
	return f
}

// cut isolates node i from the other nodes for d, then heals.
func (r *chaosRun) cut(n, i int, d time.Duration) *chaosFault {
	heal := r.c.isolate(i)
	f := r.newFault(n, "cut", i, fmt.Sprintf("for %s", d.Round(100*time.Millisecond)))
	r.sleepUntil(f.start.Add(d))
	heal()
	f.end = time.Now()
	r.t.Logf("CHAOS %s healed %s", r.rel(f.end), f)
	return f
}

func (r *chaosRun) restart(i int, f *chaosFault) {
	n := r.c.start(i)
	f.end = time.Now()
	r.mu.Lock()
	r.procs = append(r.procs, chaosProc{i, n})
	r.mu.Unlock()
	r.t.Logf("CHAOS %s restarted %s", r.rel(f.end), f)
}

// sleepUntil waits until at, measuring the pending faults' recovery
// meanwhile.
func (r *chaosRun) sleepUntil(at time.Time) {
	for {
		r.measure()
		d := time.Until(at)
		if d <= 0 {
			return
		}
		time.Sleep(min(d, 100*time.Millisecond))
	}
}

// awaitLeaders waits until every ended fault has its leader measured or
// given up, so that the next fault does not hide an election.
func (r *chaosRun) awaitLeaders() {
	for range int(leaderGiveUp/(100*time.Millisecond)) + 10 {
		pending := false
		for _, f := range r.faults {
			if !f.end.IsZero() && f.leaderAt.IsZero() && !f.leaderOut {
				pending = true
			}
		}
		if !pending {
			return
		}
		r.sleepUntil(time.Now().Add(100 * time.Millisecond))
	}
}

// measure records, for the faults that ended, when every node first named
// one raft leader (check 4) and when the group first agreed on it.
func (r *chaosRun) measure() {
	var leader, recovery []*chaosFault
	for _, f := range r.faults {
		if f.end.IsZero() {
			continue
		}
		if f.leaderAt.IsZero() && !f.leaderOut {
			leader = append(leader, f)
		}
		if f.recoveredAt.IsZero() {
			recovery = append(recovery, f)
		}
	}
	if len(leader) > 0 {
		ok := r.c.raftLeader(r.c.all()...) >= 0
		now := time.Now()
		var views string
		for _, f := range leader {
			switch {
			case ok:
				f.leaderAt = now
			case now.Sub(f.end) > leaderGiveUp:
				f.leaderOut = true
			}
			if !ok && now.Sub(f.viewsAt) > time.Second {
				if views == "" {
					views = r.raftViews()
				}
				f.views, f.viewsAt = views, now
			}
		}
	}
	if len(recovery) > 0 && r.c.agreedLeader(r.c.all()...) >= 0 {
		now := time.Now()
		for _, f := range recovery {
			f.recoveredAt = now
		}
	}
}

// raftViews describes every node's raft view.
func (r *chaosRun) raftViews() string {
	var out []string
	for i, n := range r.c.nodes {
		v, err := n.view()
		if err != nil {
			out = append(out, fmt.Sprintf("n%d: %v", i, err))
			continue
		}
		var voters, nonVoters []string
		for _, s := range v.Raft.Voters {
			voters = append(voters, s.ID)
		}
		for _, s := range v.Raft.NonVoters {
			nonVoters = append(nonVoters, s.ID)
		}
		out = append(out, fmt.Sprintf("n%d %s: %s term %d leader %q registered %v quorum %v last contact %d ms, voters %v non-voters %v, last log %d applied %d",
			i, v.Raft.NodeID, v.Raft.State, v.Raft.Term, v.Raft.LeaderID, v.Raft.Registered, v.Quorum, v.Raft.LastContactMs,
			voters, nonVoters, v.Raft.LastLogIndex, v.Raft.AppliedIndex))
	}
	return strings.Join(out, "; ")
}

// finish heals and settles the cluster, runs the checks and prints the summary.
func (r *chaosRun) finish() {
	t := r.t
	for i, n := range r.c.nodes {
		if !n.running() {
			r.violate("harness", "node %d is not running at the end", i)
			r.c.start(i)
		}
	}
	formed, ok := poll(formTimeout, func() bool {
		r.measure()
		return r.c.agreedLeader(r.c.all()...) >= 0
	})
	if !ok {
		r.violate("no-reform", "the group did not agree on a leader within %s after the load stopped", formTimeout)
	}
	r.awaitLeaders()
	t.Logf("CHAOS %s load stopped; group formed after %s more", r.rel(r.endedAt), formed.Round(time.Millisecond))

	r.settleSockets()
	users := r.usersCheck()
	r.quiet(chaosPresence, 10*time.Second)
	ev := r.snapshot()
	truth := r.truth(ev)
	wst := r.presenceCheck(ev, truth)
	fresh := r.freshCheck(r.truth(r.snapshot()))
	pst := r.publishCheck()
	lost, unexplained := r.disconnectCheck(r.snapshot())
	r.leaderCheck()
	r.summary(truth, users, wst, fresh, pst, lost, unexplained)
}

// poll calls cond every 100 ms until it holds or timeout passes, and
// reports how long that took and whether it held.
func poll(timeout time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for k := 0; ; k++ {
		if cond() {
			return time.Since(start), true
		}
		if time.Since(start) > timeout || k > 100_000 {
			return time.Since(start), false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// saveLogs writes every node process's output to CHAOS_LOG_DIR.
func (r *chaosRun) saveLogs() {
	if r.cfg.logDir == "" {
		return
	}
	dir := filepath.Join(r.cfg.logDir, strings.NewReplacer("/", "_", "=", "-").Replace(r.t.Name()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		r.t.Logf("CHAOS_LOG_DIR: %v", err)
		return
	}
	r.mu.Lock()
	procs := slices.Clone(r.procs)
	r.mu.Unlock()
	life := map[int]int{}
	for _, p := range procs {
		life[p.host]++
		name := filepath.Join(dir, fmt.Sprintf("n%d-life%d.log", p.host, life[p.host]))
		if err := os.WriteFile(name, []byte(p.n.out.String()), 0o644); err != nil {
			r.t.Logf("CHAOS_LOG_DIR: %v", err)
		}
	}
	b := []byte(r.cl.stderr.String())
	_ = os.WriteFile(filepath.Join(dir, "clients.stderr"), b, 0o644)
	var ev bytes.Buffer
	r.cl.mu.Lock()
	for k, e := range r.cl.events {
		line, _ := json.Marshal(e)
		fmt.Fprintf(&ev, "%d %s\n", k, line)
	}
	r.cl.mu.Unlock()
	_ = os.WriteFile(filepath.Join(dir, "events.txt"), ev.Bytes(), 0o644)
	var model bytes.Buffer
	r.mu.Lock()
	for _, s := range r.order {
		fmt.Fprintf(&model, "sock %s %s n%d gen %d user %q opened %s joined %v left_mark %d dropped %v %s\n",
			s.id, s.kind, s.node, s.gen, s.user, r.rel(s.opened), s.joined, s.leftMark, s.dropped, s.why)
	}
	for _, f := range r.faults {
		fmt.Fprintf(&model, "fault %s start %s end %s leader %s recovered %s %s\n", f, r.rel(f.start), r.rel(f.end), r.rel(f.leaderAt), r.rel(f.recoveredAt), f.note)
	}
	for _, p := range r.pubs {
		fmt.Fprintf(&model, "pub %s via n%d sent %s done %s status %d %s\n", p.id, p.via, r.rel(p.sent), r.rel(p.done), p.status, p.err)
	}
	r.mu.Unlock()
	_ = os.WriteFile(filepath.Join(dir, "model.txt"), model.Bytes(), 0o644)
	r.t.Logf("CHAOS node logs in %s", dir)
}
