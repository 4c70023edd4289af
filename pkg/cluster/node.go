package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/soketi-go/soketi/pkg/cluster/stream"
	"github.com/soketi-go/soketi/pkg/clusternet"
	"github.com/soketi-go/soketi/pkg/consensus"
	"github.com/soketi-go/soketi/pkg/gossip"
	"github.com/soketi-go/soketi/pkg/pusher"
)

// leaveTimeout bounds the graceful leave on shutdown.
const leaveTimeout = 3 * time.Second

// NodeConfig configures this process's part of a cluster.
type NodeConfig struct {
	// Gossip configures discovery and membership; Incarnation and RaftAddr
	// are filled in by Start.
	Gossip gossip.Config
	// DataDir holds the Raft data (CLUSTER_DATA_DIR).
	DataDir string
	// RaftPort is the cluster TCP port on Gossip.BindHost (raft, RPC and
	// streams); 0 picks one.
	RaftPort int
	// Credentials put the cluster port behind mutual TLS (from CLUSTER_KEY
	// or an operator's PKI); nil leaves it open to the LAN.
	Credentials     *clusternet.Credentials
	ExpectedServers int
	MasterTimeout   time.Duration
	// ReapDelay is how long a dead node keeps its entries; 0 means the default.
	ReapDelay      time.Duration
	RequestTimeout time.Duration
	Logger         *slog.Logger
}

// Node is this process's part of the cluster: membership (gossip), the
// replicated state (Raft), the message streams, and the adapter over them.
type Node struct {
	members *gossip.Members
	port    *clusternet.Port
	raft    *consensus.Node
	streams *stream.Streams
	adapter *Adapter
	reports reportCache // for the cluster page (report.go)
	logger  *slog.Logger
	ctx     context.Context // ends when the node stops
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	once    sync.Once

	// masterTimeout is how long a follower may go without hearing from
	// the leader and still report a quorum.
	masterTimeout time.Duration

	// rewriteView is a test seam (export_test.go): when set, membership
	// sees gossip's members through it, to fake a partition. poke makes
	// membership apply it now.
	rewriteView atomic.Pointer[func([]gossip.Member) []gossip.Member]
	poke        chan struct{}
}

// View is what GET /cluster shows: gossip's view, the Raft status and the streams.
type View struct {
	// Secured says whether the cluster has a key: gossip encrypted,
	// beacons authenticated and the cluster port behind mutual TLS.
	Secured bool `json:"secured"`
	gossip.View
	// Quorum says whether this node can change the replicated state now:
	// it leads, or it heard from a leader within the master timeout.
	// Without it the node serves its clients and the presence it has, and
	// refuses presence joins (4302).
	Quorum  bool                 `json:"quorum"`
	Raft    consensus.NodeStatus `json:"raft"`
	Streams StreamView           `json:"streams"`
	// Port counts the cluster port's refused connections: failed TLS
	// handshakes (no key, a wrong key) and connections over its bounds.
	Port clusternet.Stats `json:"cluster_port"`
	// RateLimiter is set with RATE_LIMITER_DRIVER=cluster.
	RateLimiter *RateLimiterView `json:"rate_limiter,omitempty"`
}

// StreamView summarises the inter-node streams.
type StreamView struct {
	Delivered uint64 `json:"delivered"`
	Lost      uint64 `json:"lost"`
	Dropped   uint64 `json:"dropped"`
}

// Start joins the cluster: it binds the cluster port and the gossip sockets,
// then runs them until ctx ends or Leave/Close is called. local delivers to
// this process's connections.
func Start(ctx context.Context, cfg NodeConfig, local *pusher.LocalAdapter) (*Node, error) {
	g := cfg.Gossip
	if g.NodeID == "" {
		return nil, fmt.Errorf("cluster: a node id is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if g.Logger == nil {
		g.Logger = cfg.Logger
	}
	if g.Incarnation == 0 {
		g.Incarnation = uint64(time.Now().UnixNano())
	}
	logger := cfg.Logger
	adv, _ := gossip.AdvertiseAddr(g)
	n := &Node{logger: logger, masterTimeout: cfg.MasterTimeout, poke: make(chan struct{}, 1)}
	if n.masterTimeout <= 0 {
		n.masterTimeout = consensus.DefaultMasterTimeout
	}

	var adapter *Adapter
	var err error
	n.port, err = clusternet.Listen(clusternet.Config{
		BindAddr:      net.JoinHostPort(hostOr(g.BindHost), strconv.Itoa(cfg.RaftPort)),
		AdvertiseAddr: net.JoinHostPort(adv.String(), strconv.Itoa(cfg.RaftPort)),
		Credentials:   cfg.Credentials,
		Logger:        logger,
	})
	if err != nil {
		return nil, fmt.Errorf("cluster port: %w", err)
	}
	n.streams, err = stream.New(stream.Config{
		NodeID: g.NodeID, Incarnation: g.Incarnation, Logger: logger,
		Listener: n.port.Listener(clusternet.KindStream),
		Dial: func(ctx context.Context, addr, peerID string) (net.Conn, error) {
			return n.port.Dial(ctx, addr, clusternet.KindStream, peerID)
		},
		PeerID: clusternet.PeerID,
	}, func(from string, m stream.Message) { adapter.Deliver(from, m) })
	if err != nil {
		n.port.Close()
		return nil, fmt.Errorf("cluster streams: %w", err)
	}
	membership := newMembership()
	n.raft, err = consensus.New(consensus.Config{
		NodeID:          g.NodeID,
		Incarnation:     g.Incarnation,
		Dir:             filepath.Join(cfg.DataDir, "raft"),
		Port:            n.port,
		ExpectedServers: cfg.ExpectedServers,
		DiscoveryWindow: discoveryWindow(g.KeepaliveInterval),
		MasterTimeout:   cfg.MasterTimeout,
		ReapDelay:       cfg.ReapDelay,
		OnApply:         func(r consensus.Result) { adapter.OnApply(r) },
		OnRegistered:    func(ctx context.Context) { adapter.Reannounce(ctx) },
		Logger:          logger,
	}, membership)
	if err != nil {
		n.streams.Close()
		n.port.Close()
		return nil, fmt.Errorf("cluster raft: %w", err)
	}
	adapter = New(Config{
		NodeID: g.NodeID, Incarnation: g.Incarnation, RequestTimeout: cfg.RequestTimeout, Logger: logger,
	}, local, n.raft, n.streams)
	adapter.reporter = n.report
	n.adapter = adapter

	g.RaftAddr = n.port.Addr()
	n.members, err = gossip.New(g)
	if err != nil {
		n.raft.Shutdown()
		n.streams.Close()
		n.port.Close()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	membership.members = n.members

	ctx, n.cancel = context.WithCancel(ctx)
	n.ctx = ctx
	n.port.Start()
	if err := n.streams.Start(ctx); err != nil {
		n.members.Shutdown()
		n.close()
		return nil, fmt.Errorf("cluster streams: %w", err)
	}
	if err := n.members.Start(ctx); err != nil {
		n.members.Shutdown()
		n.close()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	n.wg.Add(3)
	go func() { defer n.wg.Done(); membership.run(ctx, n) }()
	go func() { defer n.wg.Done(); _ = n.raft.Run(ctx) }()
	go func() { defer n.wg.Done(); adapter.Run(ctx) }()

	self := n.members.LocalNode()
	logger.Info("cluster started", "node_id", self.ID, "gossip_address", self.GossipAddr,
		"cluster_address", n.port.Addr(), "secured", n.port.Secured(),
		"discovery", n.members.View().Discovery.Mode, "expected_servers", cfg.ExpectedServers)
	if !n.port.Secured() {
		logger.Warn("CLUSTER_KEY is not set: the cluster is open to its LAN. Any host that reaches the gossip, " +
			"discovery and cluster ports can join, read presence data, publish to subscribers and change the " +
			"replicated state. Set CLUSTER_KEY (e.g. `openssl rand -base64 32`) on every node.")
	}
	return n, nil
}

// discoveryWindow is how long a node with no raft state listens for peers
// before it bootstraps without them: four beacon intervals
// (CLUSTER_KEEPALIVE_INTERVAL), at least 1 s.
func discoveryWindow(keepalive time.Duration) time.Duration {
	if keepalive <= 0 {
		keepalive = gossip.DefaultKeepaliveInterval
	}
	return max(4*keepalive, time.Second)
}

func hostOr(h string) string {
	if h == "" {
		return "0.0.0.0"
	}
	return h
}

// Adapter is the pusher.Adapter of the cluster.
func (n *Node) Adapter() *Adapter { return n.adapter }

// ID is this node's id.
func (n *Node) ID() string { return n.raft.ID() }

// Ready reports whether this node has joined a raft group for good (see
// consensus.Node.Ready): it knows a leader and is registered, or it is
// alone and bootstrapped itself after the discovery window. It is latched
// (an election does not clear it), so it is what GET /ready should answer:
// a load balancer then never routes to a node that may still be wiped by a
// merge of groups that formed apart. Quorum, on /cluster, says whether
// presence joins can be written right now.
func (n *Node) Ready() bool { return n.raft.Ready() }

// Raft is the consensus node (for status and tests).
func (n *Node) Raft() *consensus.Node { return n.raft }

// Members is the gossip membership (for status and tests).
func (n *Node) Members() *gossip.Members { return n.members }

// Status is what GET /cluster shows.
func (n *Node) Status() View {
	st := n.streams.Stats()
	rs := n.raft.Status()
	v := View{
		Secured: n.port.Secured(),
		View:    n.members.View(),
		Quorum:  hasQuorum(rs, n.masterTimeout),
		Raft:    rs,
		Streams: StreamView{Delivered: st.Delivered, Lost: st.Lost, Dropped: st.Dropped},
		Port:    n.port.Stats(),
	}
	if l := n.adapter.leases.Load(); l != nil {
		v.RateLimiter = l.view()
	}
	return v
}

// Summary is what GET /cluster shows on the public port of a secured
// cluster: whether it is healthy, and nothing an outsider could use to
// join or forge (no id, address or incarnation). The detail is on the
// metrics port.
type Summary struct {
	Secured   bool           `json:"secured"`
	Quorum    bool           `json:"quorum"`
	HasMaster bool           `json:"has_master"`
	Members   map[string]int `json:"members"` // by state: alive, suspect, dead, left
	Detail    string         `json:"detail"`
}

// Summary reads the public summary.
func (n *Node) Summary() Summary {
	rs := n.raft.Status()
	s := Summary{Secured: n.port.Secured(), Quorum: hasQuorum(rs, n.masterTimeout), HasMaster: rs.LeaderID != "",
		Members: map[string]int{}, Detail: "GET /cluster on the metrics port"}
	for _, m := range n.members.View().Members {
		s.Members[string(m.State)]++
	}
	return s
}

// hasQuorum reads a quorum from the raft status: a leader steps down once
// it cannot reach a majority, and a follower forgets its leader after a
// heartbeat timeout.
func hasQuorum(rs consensus.NodeStatus, masterTimeout time.Duration) bool {
	if rs.State == "leader" {
		return true
	}
	return rs.LeaderID != "" && rs.LastContactMs >= 0 && time.Duration(rs.LastContactMs)*time.Millisecond < masterTimeout
}

// Drain is the first step of a graceful stop: from now on every publish
// through this node is refused (the adapter's error wraps
// pusher.ErrUnavailable: 503), and Drain waits until the other nodes that
// are alive have acknowledged everything queued to them, or ctx ends. Call
// Leave after it.
func (n *Node) Drain(ctx context.Context) error {
	if err := n.streams.Drain(ctx); err != nil {
		return fmt.Errorf("cluster: drain: %w", err)
	}
	return nil
}

// Leave announces a graceful departure, so that peers mark this node "left"
// at once, and hands Raft leadership over; then it stops.
func (n *Node) Leave() {
	if err := n.members.Leave(leaveTimeout); err != nil {
		n.logger.Warn("cluster leave incomplete", "err", err)
	}
	n.close()
}

// Close stops everything without a leave notice, as a crash would look.
func (n *Node) Close() {
	n.members.Shutdown()
	n.close()
}

func (n *Node) close() {
	n.once.Do(func() {
		if n.cancel != nil {
			n.cancel()
		}
		n.raft.Shutdown()
		n.wg.Wait()
		_ = n.streams.Close()
		n.port.Close()
	})
}

// membership adapts gossip to what consensus and the streams need: the
// alive peers, their addresses, and changes as events.
type membership struct {
	members *gossip.Members
	events  chan consensus.MemberEvent
}

// membershipEvents bounds the events waiting for the consensus layer; when
// full the oldest is dropped: the leader reconciles against Alive anyway.
const membershipEvents = 256

func newMembership() *membership {
	return &membership{events: make(chan consensus.MemberEvent, membershipEvents)}
}

func (m *membership) Alive() []consensus.Peer {
	if m.members == nil {
		return nil
	}
	alive := m.members.AliveMembers()
	out := make([]consensus.Peer, 0, len(alive))
	for _, mem := range alive {
		out = append(out, consensus.Peer{ID: mem.ID, RaftAddr: mem.RaftAddr, Incarnation: mem.Incarnation})
	}
	return out
}

func (m *membership) Events() <-chan consensus.MemberEvent { return m.events }

// run forwards gossip events to consensus and keeps the stream peers and the
// adapter's routing in step with the alive members.
func (m *membership) run(ctx context.Context, cn *Node) {
	refresh := time.NewTicker(time.Second)
	defer refresh.Stop()
	defer close(m.events)
	gossipEvents := m.members.Events()
	m.refresh(cn)
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-gossipEvents:
			if !ok {
				return
			}
			if t, ok := eventType(ev.Type); ok {
				m.push(consensus.MemberEvent{Type: t, Peer: consensus.Peer{
					ID: ev.Member.ID, RaftAddr: ev.Member.RaftAddr, Incarnation: ev.Member.Incarnation}})
			}
			m.refresh(cn)
		case <-refresh.C:
			m.refresh(cn)
		case <-cn.poke:
			m.refresh(cn)
		}
	}
}

func (m *membership) push(ev consensus.MemberEvent) {
	for {
		select {
		case m.events <- ev:
			return
		default:
		}
		select {
		case <-m.events:
		default:
		}
	}
}

// refresh gives the streams and the adapter the peers: the alive (and
// suspect) members, and the dead ones, which linger. A dead verdict may be a
// partition that heals: the dead member's stream keeps its queue (bounded,
// the oldest evicted) and keeps redialling, and the adapter goes on sending
// to it, so that once reachable it resumes the same stream and gets what
// was published meanwhile; a publish through this node just after the heal,
// before gossip has caught up, is not lost. A member is dropped once it has
// left, or once gossip forgets it (5 minutes after its death); a new
// incarnation of it gets a new stream.
func (m *membership) refresh(cn *Node) {
	members := m.members.View().Members
	if f := cn.rewriteView.Load(); f != nil {
		members = (*f)(members)
	}
	peers := make(map[string]stream.Peer, len(members))
	var alive, lingering []string
	for _, mem := range members {
		if mem.Self || mem.RaftAddr == "" {
			continue
		}
		switch mem.State {
		case gossip.StateAlive, gossip.StateSuspect:
			alive = append(alive, mem.ID)
		case gossip.StateDead:
			lingering = append(lingering, mem.ID)
		default: // left
			continue
		}
		peers[mem.ID] = stream.Peer{Addr: mem.RaftAddr, Incarnation: mem.Incarnation, Lingering: mem.State == gossip.StateDead}
	}
	cn.streams.SetPeers(peers)
	cn.adapter.SetPeers(alive, lingering)
}

func eventType(t gossip.EventType) (consensus.MemberEventType, bool) {
	switch t {
	case gossip.EventJoin:
		return consensus.PeerJoin, true
	case gossip.EventUpdate:
		return consensus.PeerUpdate, true
	case gossip.EventLeave:
		return consensus.PeerLeft, true
	case gossip.EventDead:
		return consensus.PeerDead, true
	}
	return 0, false
}

// Figures are the counters of membership, Raft and the streams, for metrics.
type Figures struct {
	Members       map[string]int
	Gossip        gossip.Stats
	Raft          consensus.NodeStatus
	Streams       stream.Stats
	StreamsQueued int
}

// Figures reads the node's counters.
func (n *Node) Figures() Figures {
	f := Figures{Members: map[string]int{}, Gossip: n.members.Stats(), Raft: n.raft.Status(), Streams: n.streams.Stats()}
	for _, m := range n.members.View().Members {
		f.Members[string(m.State)]++
	}
	for _, p := range f.Streams.Peers {
		f.StreamsQueued += p.QueuedBytes
	}
	return f
}
