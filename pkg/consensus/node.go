// Package consensus replicates presence, channel occupancy and node
// incarnations over a hashicorp/raft group. See DESIGN.md.
package consensus

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/soketi-go/soketi/pkg/clusternet"
	"go.etcd.io/bbolt"
)

var (
	// ErrNotLeader is returned by leader-only operations on a follower.
	ErrNotLeader = errors.New("consensus: not leader")
	// ErrNoLeader: no leader was known for the whole wait.
	ErrNoLeader = errors.New("consensus: no leader")
	// ErrDirInUse: another process has the data directory open.
	ErrDirInUse = errors.New("consensus: the data directory is in use")
	// ErrTimeout: the wait ended with the outcome unknown (the command may
	// still commit), or committed but not yet applied on this node.
	ErrTimeout = errors.New("consensus: timeout")
	// ErrShutdown is returned after Shutdown.
	ErrShutdown = errors.New("consensus: shut down")
)

// Node is this process's member of the raft group.
type Node struct {
	cfg     Config
	log     *slog.Logger
	timing  Timing
	fsm     *FSM
	members Membership
	port    *clusternet.Port
	rpcSrv  *rpcServer
	rpc     *rpcClient

	mu    sync.RWMutex
	r     *raft.Raft // nil while being re-created
	store *raftboltdb.BoltStore
	trans *raft.NetworkTransport
	layer *raftLayer
	obs   *raft.Observer

	registerPoke chan struct{}         // cap 1: coalesced "check my registration"
	controlPoke  chan struct{}         // cap 1: coalesced "run a control step now"
	commitPoke   chan struct{}         // cap 1: a forwarded command committed (nudgeLoop)
	resetReq     chan resetRequest     // cap 1: a pending wipe
	leaderObs    chan raft.Observation // raft's leader changes, for the two pokes
	// ready latches Ready: set once this node is registered in a group
	// with a known leader, cleared by a wipe (after its FSM reset, under
	// readyMu, so that a concurrent Ready cannot set it from the old state).
	readyMu sync.Mutex
	ready   bool

	stats    counters
	ctx      context.Context // ends at Shutdown
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	started  atomic.Bool
	shutOnce sync.Once
}

// New opens the stores in cfg.Dir and starts raft on cfg.Port (rejoining
// with the stored log if there is one). Bootstrap, registration and
// membership reconcile start with Run. The port stays the caller's: it is
// not closed at Shutdown.
func New(cfg Config, members Membership) (*Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if members == nil {
		return nil, errors.New("consensus: Membership is required")
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("consensus: data dir: %w", err)
	}
	log := cfg.Logger.With("component", "consensus", "node_id", cfg.NodeID)
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		cfg:          cfg,
		log:          log,
		timing:       DeriveTiming(cfg.MasterTimeout),
		fsm:          NewFSM(cfg.Limits),
		members:      members,
		port:         cfg.Port,
		rpcSrv:       &rpcServer{ln: cfg.Port.Listener(clusternet.KindRPC), conn: make(map[net.Conn]struct{})},
		rpc:          newRPCClient(cfg.Port),
		registerPoke: make(chan struct{}, 1),
		controlPoke:  make(chan struct{}, 1),
		commitPoke:   make(chan struct{}, 1),
		resetReq:     make(chan resetRequest, 1),
		leaderObs:    make(chan raft.Observation, 16),
		ctx:          ctx,
		cancel:       cancel,
	}
	n.fsm.SetObserver(n.observe)
	if err := n.openRaft(); err != nil {
		cancel()
		n.rpcSrv.close()
		return nil, err
	}
	n.rpcSrv.run(func(c net.Conn) { serveRPCConn(c, n) })
	log.Info("raft started", "addr", n.Addr(), "secured", cfg.Port.Secured(), "heartbeat", n.timing.Heartbeat,
		"expected_servers", cfg.ExpectedServers, "discovery_window", cfg.DiscoveryWindow)
	return n, nil
}

func (n *Node) observe(res Result) {
	if res.Node == n.cfg.NodeID && (res.Type == CmdNodeGone || res.Type == CmdNodeUp) {
		n.poke()
	}
	if n.cfg.OnApply != nil {
		n.cfg.OnApply(res)
	}
}

func (n *Node) poke() { notify(n.registerPoke) }

// notify does a non-blocking send on a coalescing channel of capacity 1.
func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (n *Node) raftConfig() *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.NodeID)
	rc.HeartbeatTimeout = n.timing.Heartbeat
	rc.ElectionTimeout = n.timing.Election
	rc.LeaderLeaseTimeout = n.timing.LeaderLease
	rc.CommitTimeout = n.timing.Commit
	// A removed node keeps running so that the leader can add it back
	// (after a long partition, or a merge).
	rc.ShutdownOnRemove = false
	// The state is small (presence and occupancy); snapshot often so a new
	// or wiped node catches up from a snapshot rather than a long log.
	rc.SnapshotThreshold = 4096
	rc.TrailingLogs = 4096
	rc.Logger = newHCLogAdapter(n.log, "raft")
	return rc
}

func (n *Node) openRaft() error {
	path := filepath.Join(n.cfg.Dir, "raft.db")
	store, err := raftboltdb.New(raftboltdb.Options{
		Path: path,
		// bbolt holds an exclusive flock on the file while it is open: a
		// second process on the same directory waits this long, then fails.
		BoltOptions: &bbolt.Options{Timeout: 250 * time.Millisecond},
	})
	if errors.Is(err, bbolt.ErrTimeout) {
		return fmt.Errorf("%w: %s is locked by another process", ErrDirInUse, path)
	}
	if err != nil {
		return fmt.Errorf("consensus: open log store: %w", err)
	}
	hl := newHCLogAdapter(n.log, "raft")
	snaps, err := raft.NewFileSnapshotStoreWithLogger(n.cfg.Dir, 2, hl)
	if err != nil {
		store.Close()
		return fmt.Errorf("consensus: open snapshot store: %w", err)
	}
	logs, err := raft.NewLogCache(512, store)
	if err != nil {
		store.Close()
		return fmt.Errorf("consensus: log cache: %w", err)
	}
	layer := newRaftLayer(n.port, n.cfg.NodeID, n.memberAddr)
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		ServerAddressProvider: addrProvider{n},
		Stream:                layer,
		MaxPool:               3,
		// No pipelining: raft v1.7.3's pipeline replication can deadlock
		// when a follower answers with a newer term or a failure while a
		// response is in flight (its decoder has returned, and the "best
		// effort" send on step-down parks forever). The replication
		// goroutine then never ends: a leader's Shutdown after its
		// leadership transfer hangs, or a follower gets heartbeats but no
		// entries. Synchronous AppendEntries still batch up to 64 entries
		// per round trip, plenty for presence on a LAN.
		MaxRPCsInFlight: 1,
		Timeout:         10 * time.Second,
		Logger:          hl,
	})
	r, err := raft.NewRaft(n.raftConfig(), n.fsm, logs, store, snaps, trans)
	if err != nil {
		trans.Close()
		store.Close()
		return fmt.Errorf("consensus: start raft: %w", err)
	}
	// Leader changes poke registration and the control loop, so that a
	// node that just learnt its leader registers (and a new leader
	// reconciles) without waiting for a tick. Non-blocking: a full channel
	// drops the observation, and the ticks catch up.
	obs := raft.NewObserver(n.leaderObs, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	r.RegisterObserver(obs)
	n.mu.Lock()
	n.r, n.store, n.trans, n.layer, n.obs = r, store, trans, layer, obs
	n.mu.Unlock()
	return nil
}

// closeRaft stops raft (without a leadership transfer) and closes the store.
func (n *Node) closeRaft() {
	n.mu.Lock()
	r, store, layer, obs := n.r, n.store, n.layer, n.obs
	n.r, n.store, n.trans, n.layer, n.obs = nil, nil, nil, nil, nil
	n.mu.Unlock()
	if r != nil {
		r.DeregisterObserver(obs)
		f := r.Shutdown()
		layer.stop() // held dials give up, so raft's goroutines end
		if err := f.Error(); err != nil {
			n.log.Warn("raft shutdown", "err", err)
		}
	}
	if store != nil {
		if err := store.Close(); err != nil {
			n.log.Warn("close log store", "err", err)
		}
	}
}

// wipe replaces this node's raft state by an empty one: used when this node
// is in a group that lost a merge. The FSM is emptied too, since the
// winner's log or snapshot is replayed onto it.
func (n *Node) wipe() error {
	n.closeRaft()
	for _, p := range []string{filepath.Join(n.cfg.Dir, "raft.db"), filepath.Join(n.cfg.Dir, "snapshots")} {
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("consensus: wipe %s: %w", p, err)
		}
	}
	n.fsm.reset()
	n.readyMu.Lock()
	n.ready = false
	n.readyMu.Unlock()
	n.stats.resets.Add(1)
	return n.openRaft()
}

func (n *Node) raft() *raft.Raft {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.r
}

func (n *Node) raftLayer() *raftLayer {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.layer
}

// Run bootstraps when due, keeps this node registered in the FSM and, while
// leader, reconciles the raft configuration with the membership. It returns
// after ctx ends and the node has shut down.
func (n *Node) Run(ctx context.Context) error {
	if !n.started.CompareAndSwap(false, true) {
		return errors.New("consensus: Run called twice")
	}
	n.wg.Add(4)
	go func() {
		defer n.wg.Done()
		n.registerLoop(n.ctx)
	}()
	go func() {
		defer n.wg.Done()
		n.nudgeLoop(n.ctx)
	}()
	go func() {
		defer n.wg.Done()
		n.controlLoop(n.ctx)
	}()
	go func() {
		defer n.wg.Done()
		for {
			select {
			case <-n.ctx.Done():
				return
			case <-n.leaderObs:
				n.poke()
				notify(n.controlPoke)
			}
		}
	}()
	select {
	case <-ctx.Done():
	case <-n.ctx.Done():
	}
	n.Shutdown()
	return nil
}

// Shutdown transfers leadership if this node leads, then stops raft and
// the listener. It is idempotent.
func (n *Node) Shutdown() {
	n.shutdown(true)
}

func (n *Node) shutdown(transfer bool) {
	n.shutOnce.Do(func() {
		if r := n.raft(); transfer && r != nil && r.State() == raft.Leader && n.numServers() > 1 {
			if err := r.LeadershipTransfer().Error(); err != nil {
				n.log.Warn("leadership transfer", "err", err)
			}
		}
		n.cancel()
		n.wg.Wait()
		n.closeRaft()
		n.rpc.close()
		n.rpcSrv.close()
		n.log.Info("raft stopped")
	})
}

func (n *Node) numServers() int {
	servers, _ := n.configuration()
	return len(servers)
}

// configuration returns the latest raft configuration of this node.
func (n *Node) configuration() ([]raft.Server, error) {
	r := n.raft()
	if r == nil {
		return nil, ErrShutdown
	}
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	return f.Configuration().Servers, nil
}

// Addr is the advertised cluster port address (the actual port when bound to 0).
func (n *Node) Addr() string { return n.port.Addr() }

// ID is this node's id.
func (n *Node) ID() string { return n.cfg.NodeID }

// Incarnation is this process's incarnation.
func (n *Node) Incarnation() uint64 { return n.cfg.Incarnation }

// FSM is the local replica, for reads.
func (n *Node) FSM() *FSM { return n.fsm }

// Timing is the raft timing in use.
func (n *Node) Timing() Timing { return n.timing }

// IsLeader reports whether this node currently leads. Only the leader sends
// webhooks for transitions; Result.WebhookID makes a retry by a new leader
// idempotent.
func (n *Node) IsLeader() bool {
	r := n.raft()
	return r != nil && r.State() == raft.Leader
}

// Leader returns the current leader's id and address, empty if unknown.
func (n *Node) Leader() (id, addr string) {
	r := n.raft()
	if r == nil {
		return "", ""
	}
	a, i := r.LeaderWithID()
	return string(i), string(a)
}

// Registered reports whether this node's NodeUp at its incarnation has been
// applied to the local replica.
func (n *Node) Registered() bool {
	inc, ok := n.fsm.Incarnation(n.cfg.NodeID)
	return ok && inc == n.cfg.Incarnation
}

// Ready reports whether this node has joined a raft group for good: it
// became true once the node knew a leader and was Registered, which for
// a node alone happens after the discovery window, when it has
// bootstrapped its own group. It is latched, so an election or a lost
// quorum does not take the node out of a load balancer (Status and
// pkg/cluster's quorum say whether joins can be written now); it is false
// again only while a wipe after a lost merge rejoins the winning group.
// It is what GET /ready should answer: a node that is not ready may still
// be wiped by a merge, or have no group to write presence to.
func (n *Node) Ready() bool {
	n.readyMu.Lock()
	defer n.readyMu.Unlock()
	if !n.ready {
		id, _ := n.Leader()
		n.ready = id != "" && n.Registered()
	}
	return n.ready
}

// Apply commits cmd through the leader (forwarding from a follower) and
// returns its Result once this node's replica has applied it, so a read
// of FSM after Apply sees the write. While there is no leader it retries
// until ctx's deadline (ApplyTimeout if ctx has none). Errors: ErrNoLeader,
// ErrTimeout (outcome unknown, or committed but the local replica is
// behind: Result is then set), ErrShutdown, and for a committed command
// that was not applied, Result.Err (ErrStale, ErrLimit, ErrBadCommand).
func (n *Node) Apply(ctx context.Context, cmd Command) (Result, error) {
	data, err := EncodeCommand(cmd)
	if err != nil {
		return Result{}, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.cfg.ApplyTimeout)
		defer cancel()
	}
	res, err := n.commit(ctx, data)
	if err != nil {
		n.stats.errors.Add(1)
		switch {
		case errors.Is(err, ErrNoLeader):
			n.stats.noLeader.Add(1)
		case errors.Is(err, ErrTimeout):
			n.stats.timeouts.Add(1)
		}
		return Result{}, fmt.Errorf("apply %s: %w", cmd.Type(), err)
	}
	n.stats.applies.Add(1)
	if err := n.fsm.WaitApplied(ctx, res.Index); err != nil {
		n.stats.timeouts.Add(1)
		return res, fmt.Errorf("apply %s: committed at %d: %w: %w", cmd.Type(), res.Index, ErrTimeout, err)
	}
	return res, res.Err()
}

// commit loops until the command is committed, definitely failed, or ctx ends.
func (n *Node) commit(ctx context.Context, data []byte) (Result, error) {
	backoff := 10 * time.Millisecond
	lastErr := ErrNoLeader
	for {
		select {
		case <-n.ctx.Done():
			return Result{}, ErrShutdown
		default:
		}
		r := n.raft()
		var (
			res   Result
			err   error
			retry bool
		)
		switch addr, id := n.leaderOf(r); {
		case r != nil && r.State() == raft.Leader:
			res, err, retry = n.applyLocal(ctx, r, data)
		case addr != "" && id != n.cfg.NodeID:
			n.stats.forwards.Add(1)
			res, err, retry = n.forward(ctx, addr, id, data)
		default:
			err, retry = ErrNoLeader, true
		}
		if !retry {
			return res, err
		}
		lastErr = err
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			if errors.Is(lastErr, ErrNoLeader) {
				return Result{}, fmt.Errorf("%w: %w", ErrNoLeader, ctx.Err())
			}
			return Result{}, fmt.Errorf("%w: %w (last error: %w)", ErrTimeout, ctx.Err(), lastErr)
		case <-n.ctx.Done():
			t.Stop()
			return Result{}, ErrShutdown
		}
		backoff = min(2*backoff, 250*time.Millisecond)
	}
}

func (n *Node) leaderOf(r *raft.Raft) (addr, id string) {
	if r == nil {
		return "", ""
	}
	a, i := r.LeaderWithID()
	return string(a), string(i)
}

// applyLocal applies on this node as leader. retry is true only when the
// command was certainly not appended.
func (n *Node) applyLocal(ctx context.Context, r *raft.Raft, data []byte) (res Result, err error, retry bool) {
	enqueue := time.Second
	if dl, ok := ctx.Deadline(); ok {
		enqueue = max(time.Until(dl), time.Millisecond)
	}
	f := r.Apply(data, enqueue)
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		return Result{}, fmt.Errorf("%w: %w", ErrTimeout, ctx.Err()), false
	}
	switch {
	case err == nil:
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrEnqueueTimeout):
		return Result{}, err, true
	case errors.Is(err, raft.ErrRaftShutdown):
		if n.ctx.Err() != nil {
			return Result{}, ErrShutdown, false
		}
		// Raft is being re-created after a wipe: what it held is gone
		// with the old state, so trying again is safe.
		return Result{}, err, true
	default: // ErrLeadershipLost and the like: it may still commit.
		return Result{}, fmt.Errorf("%w: %w", ErrTimeout, err), false
	}
	res, ok := f.Response().(Result)
	if !ok {
		return Result{}, fmt.Errorf("consensus: FSM returned %T", f.Response()), false
	}
	return res, nil, false
}

// nudgeLoop tells the followers promptly that a forwarded command
// committed. Raft sends its commit index only with AppendEntries that
// carry entries, or on the CommitTimeout tick when there are none, so a
// follower's replica applies an entry up to 2·CommitTimeout after it
// committed, and a join made on a follower waits that long for its
// read-your-writes. A barrier is an entry of its own (the FSM never sees
// it); replicating it carries the new commit index at once. One is in
// flight at a time, so a burst costs a barrier per round trip and a quiet
// group none. Commands made on the leader do not nudge: nobody waits on a
// follower for them, and a barrier would hold up the next round trip.
// A shorter CommitTimeout would do the same at a steady cost: 1 ms made an
// idle three-node group use 65% more CPU.
func (n *Node) nudgeLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.commitPoke:
		}
		r := n.raft()
		if r == nil || r.State() != raft.Leader {
			continue
		}
		if err := r.Barrier(n.timing.Heartbeat).Error(); err != nil {
			n.log.Debug("commit nudge", "err", err)
		}
	}
}

// forward sends the command to the leader id at addr.
func (n *Node) forward(ctx context.Context, addr, id string, data []byte) (Result, error, bool) {
	timeout := n.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	payload := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(data)), uint32(max(timeout.Milliseconds(), 1)))
	payload = append(payload, data...)
	resp, err := n.rpc.call(ctx, addr, id, opApply, payload)
	var re *remoteError
	switch {
	case err == nil:
	case errors.Is(err, errDial):
		return Result{}, fmt.Errorf("forward to %s: %w", addr, err), true
	case errors.As(err, &re) && (re.code == codeNotLeader || re.code == codeRefused):
		return Result{}, fmt.Errorf("forward to %s: %w", addr, err), true
	case errors.As(err, &re) && re.code == codeFailed:
		return Result{}, fmt.Errorf("forward to %s: %w", addr, err), false
	default:
		return Result{}, fmt.Errorf("%w: forward to %s: %w", ErrTimeout, addr, err), false
	}
	var res Result
	if err := json.Unmarshal(resp, &res); err != nil {
		return Result{}, fmt.Errorf("forward to %s: decode result: %w", addr, err), false
	}
	return res, nil, false
}

// serveApply handles a forwarded command. On a secured port only a node
// that is a current member may commit: holding the key is not enough for
// a process that gossip does not know (or has declared dead).
func (n *Node) serveApply(from string, data []byte, timeout time.Duration) (byte, []byte) {
	n.stats.forwardsServed.Add(1)
	if n.port.Secured() && !n.isMember(from) {
		n.stats.refused.Add(1)
		return codeRefused, []byte(fmt.Sprintf("consensus: %q is not a member", from))
	}
	r := n.raft()
	if r == nil || r.State() != raft.Leader {
		return codeNotLeader, []byte(ErrNotLeader.Error())
	}
	if _, err := DecodeCommand(data); err != nil {
		return codeFailed, []byte(err.Error())
	}
	ctx, cancel := context.WithTimeout(n.ctx, min(max(timeout, time.Millisecond), time.Minute))
	defer cancel()
	res, err, retry := n.applyLocal(ctx, r, data)
	switch {
	case err == nil:
		notify(n.commitPoke)
		b, err := json.Marshal(res)
		if err != nil { // applied, but the result cannot be sent
			return codeUnknown, []byte(err.Error())
		}
		return codeOK, b
	case retry:
		return codeNotLeader, []byte(err.Error())
	case errors.Is(err, ErrShutdown):
		return codeFailed, []byte(err.Error())
	default:
		return codeUnknown, []byte(err.Error())
	}
}

func (n *Node) serveStatus() peerStatus {
	st := peerStatus{ID: n.cfg.NodeID}
	if servers, err := n.configuration(); err == nil {
		st.Servers = serverIDs(servers)
		st.HasState = len(servers) > 0
	}
	st.LeaderID, st.LeaderAddr = n.Leader()
	if r := n.raft(); r != nil {
		st.LastIndex = r.LastIndex()
	}
	for _, p := range n.alive() {
		st.Alive = append(st.Alive, p.ID)
	}
	return st
}

func serverIDs(servers []raft.Server) []string {
	ids := make([]string, 0, len(servers))
	for _, s := range servers {
		ids = append(ids, string(s.ID))
	}
	slices.Sort(ids)
	return ids
}

// isMember reports whether id is an alive gossip member other than this node.
func (n *Node) isMember(id string) bool {
	if id == "" || id == n.cfg.NodeID {
		return false
	}
	for _, p := range n.members.Alive() {
		if p.ID == id {
			return true
		}
	}
	return false
}

// serveReset accepts a wipe request only from a current member that leads
// a group that wins the merge rule against this node's own group, so that
// neither a confused or stale leader nor an outsider can wipe a winning
// group. On a secured port the requester is the node its certificate
// proves, not the one the request names.
func (n *Node) serveReset(from string, req resetRequest) error {
	if err := req.validate(); err != nil {
		n.stats.refused.Add(1)
		return err
	}
	if n.port.Secured() && from != req.From {
		n.stats.refused.Add(1)
		return fmt.Errorf("consensus: reset from %q names %q", from, req.From)
	}
	if !n.isMember(req.From) {
		n.stats.refused.Add(1)
		return fmt.Errorf("consensus: reset from %q, which is not a member", req.From)
	}
	servers, err := n.configuration()
	if err != nil {
		return err
	}
	ours := serverIDs(servers)
	if len(ours) == 0 {
		return nil // already fresh
	}
	if slices.Contains(req.Servers, n.cfg.NodeID) || !groupWins(req.Servers, ours) {
		return fmt.Errorf("consensus: group %v does not win against %v", req.Servers, ours)
	}
	select {
	case n.resetReq <- req:
	default: // a reset is already pending
	}
	return nil
}

// groupWins is the merge rule: the group whose lowest server id is lower
// wins; ties (impossible for disjoint groups) compare the full sorted lists.
func groupWins(a, b []string) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) > 0
	}
	if a[0] != b[0] {
		return a[0] < b[0]
	}
	return slices.Compare(a, b) < 0
}
