// Package gossip finds cluster peers with UDP beacons and tracks membership
// and liveness with hashicorp/memberlist (SWIM). See DESIGN.md.
package gossip

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

const (
	// joinQueue bounds pending joins; beacons that find it full are dropped
	// and counted, the next beacon from the peer retries.
	joinQueue = 16
	// maxTracked bounds per-peer maps fed by the network.
	maxTracked = 1024
	// aloneRepeat is the interval between repeated "no peers" warnings.
	aloneRepeat = time.Minute
)

// ErrStarted is returned by Start when called twice or after Shutdown.
var ErrStarted = errors.New("gossip: already started or shut down")

// Members is this node's membership in the cluster.
type Members struct {
	cfg         Config
	log         *slog.Logger
	timing      Timing
	incarnation uint64
	meta        []byte
	beaconKey   []byte // HMAC key for beacons, derived from SecretKey; nil without one
	beacon      []byte
	disc        *discovery
	ml          *memberlist.Memberlist
	events      *eventQueue
	stats       stats
	limit       logLimiter

	mu       sync.Mutex
	members  map[string]*Member
	lastJoin map[string]time.Time // per peer, rate-limits joins
	leaving  map[string]time.Time // leave notices received

	joins   chan netip.AddrPort
	started atomic.Bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	stop    sync.Once
}

// New validates cfg, binds the beacon and gossip sockets and starts
// memberlist. Beacons and joins begin with Start.
func New(cfg Config) (*Members, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	adv, advOK := advertiseAddr(cfg)
	cfg.HTTPAddr = fillHost(cfg.HTTPAddr, adv)
	cfg.RaftAddr = fillHost(cfg.RaftAddr, adv)
	if cfg.Incarnation == 0 {
		cfg.Incarnation = uint64(time.Now().UnixNano())
	}
	m := &Members{
		cfg:         cfg,
		log:         cfg.Logger.With("component", "gossip", "node_id", cfg.NodeID),
		timing:      DeriveTiming(cfg.CheckInterval, cfg.NodeTimeout),
		incarnation: cfg.Incarnation,
		events:      newEventQueue(eventsBuffer),
		members:     make(map[string]*Member),
		lastJoin:    make(map[string]time.Time),
		leaving:     make(map[string]time.Time),
		joins:       make(chan netip.AddrPort, joinQueue),
	}
	m.meta, err = json.Marshal(nodeMeta{
		Cluster: cfg.ClusterName, HTTPAddr: cfg.HTTPAddr, RaftAddr: cfg.RaftAddr, Incarnation: m.incarnation,
	})
	if err != nil || len(m.meta) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("gossip: node meta does not fit in %d bytes", memberlist.MetaMaxSize)
	}
	if !advOK {
		m.log.Warn("no non-loopback IPv4 address found; advertising loopback, peers on other hosts cannot reach this node; set CLUSTER_HOST",
			"advertise_addr", adv.String())
	}

	m.disc, err = openDiscovery(cfg, adv)
	if err != nil {
		return nil, err
	}
	m.ml, err = memberlist.Create(m.memberlistConfig(adv))
	if err != nil {
		m.disc.close()
		return nil, fmt.Errorf("gossip: start memberlist on %s:%d: %w", cfg.BindHost, cfg.GossipPort, err)
	}
	local := m.ml.LocalNode()
	if m.beaconKey, err = beaconKey(cfg.SecretKey); err != nil {
		m.ml.Shutdown()
		m.disc.close()
		return nil, fmt.Errorf("gossip: beacon key: %w", err)
	}
	m.beacon, err = encodeBeacon(beacon{
		Cluster:     cfg.ClusterName,
		NodeID:      cfg.NodeID,
		Incarnation: m.incarnation,
		GossipAddr:  netip.AddrPortFrom(adv, local.Port),
		HTTPAddr:    cfg.HTTPAddr,
		RaftAddr:    cfg.RaftAddr,
	}, m.beaconKey)
	if err != nil {
		m.ml.Shutdown()
		m.disc.close()
		return nil, err
	}
	m.log.Info("gossip started", "cluster", cfg.ClusterName, "gossip_addr", local.Address(),
		"discovery_mode", m.disc.mode, "discovery_port", m.disc.port, "discovery_targets", m.disc.targetStrings(),
		"encrypted", len(cfg.SecretKey) > 0, "probe_interval", m.timing.ProbeInterval,
		"suspicion_mult", m.timing.SuspicionMult, "detection_bound", m.timing.DetectionBound)
	return m, nil
}

func (m *Members) memberlistConfig(adv netip.Addr) *memberlist.Config {
	t := m.timing
	c := memberlist.DefaultLANConfig()
	c.Name = m.cfg.NodeID
	c.BindAddr = m.cfg.BindHost
	c.BindPort = m.cfg.GossipPort
	c.AdvertiseAddr = adv.String()
	c.AdvertisePort = m.cfg.GossipPort // memberlist replaces 0 with the bound port
	// The label keeps clusters apart at the gossip layer too, and is
	// authenticated data when encryption is on.
	c.Label = "soketi/" + m.cfg.ClusterName
	c.ProbeInterval = t.ProbeInterval
	c.ProbeTimeout = t.ProbeTimeout
	c.SuspicionMult = t.SuspicionMult
	c.SuspicionMaxTimeoutMult = t.SuspicionMaxTimeoutMult
	c.GossipInterval = t.GossipInterval
	c.GossipToTheDeadTime = t.GossipToTheDeadTime
	// A restarted node keeps its id but may get a new gossip port: let it
	// reclaim its name soon rather than after the dead entry expires.
	c.DeadNodeReclaimTime = t.ProbeInterval
	c.PushPullInterval = t.PushPullInterval
	c.TCPTimeout = t.TCPTimeout
	if len(m.cfg.SecretKey) > 0 {
		c.SecretKey = m.cfg.SecretKey
	}
	d := delegate{m: m}
	c.Delegate = d
	c.Events = d
	c.Ping = d
	c.Logger = log.New(logWriter{m: m}, "", 0)
	return c
}

// Start launches beaconing, joining, the alone-warning and reaping. The
// loops stop when ctx ends or on Leave/Shutdown; memberlist itself keeps
// running until Leave or Shutdown.
func (m *Members) Start(ctx context.Context) error {
	if !m.started.CompareAndSwap(false, true) {
		return ErrStarted
	}
	ctx, m.cancel = context.WithCancel(ctx)
	m.wg.Add(5)
	go func() { defer m.wg.Done(); m.resolveNames(ctx) }()
	go func() { defer m.wg.Done(); m.receiveBeacons() }()
	go func() { defer m.wg.Done(); m.sendBeacons(ctx) }()
	go func() { defer m.wg.Done(); m.joinWorker(ctx) }()
	go func() { defer m.wg.Done(); m.watch(ctx) }()
	return nil
}

// maybeJoin queues a join to a peer heard in a beacon, unless it is already
// a live member or was tried within one join interval.
func (m *Members) maybeJoin(id string, addr netip.AddrPort, now time.Time) {
	m.mu.Lock()
	if mem, ok := m.members[id]; ok && (mem.State == StateAlive || mem.State == StateSuspect) {
		m.mu.Unlock()
		return
	}
	if last, ok := m.lastJoin[id]; ok && now.Sub(last) < m.joinInterval() {
		m.mu.Unlock()
		return
	}
	if len(m.lastJoin) >= maxTracked {
		for k, t := range m.lastJoin {
			if now.Sub(t) >= m.joinInterval() {
				delete(m.lastJoin, k)
			}
		}
		if len(m.lastJoin) >= maxTracked {
			m.mu.Unlock()
			m.stats.joinsDropped.Add(1)
			return
		}
	}
	m.lastJoin[id] = now
	m.mu.Unlock()

	select {
	case m.joins <- addr:
	default:
		m.stats.joinsDropped.Add(1)
	}
}

// joinInterval is the minimum time between join attempts to one peer.
func (m *Members) joinInterval() time.Duration {
	return max(time.Second, 2*m.cfg.KeepaliveInterval)
}

func (m *Members) joinWorker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case addr := <-m.joins:
			m.stats.joinAttempts.Add(1)
			if _, err := m.ml.Join([]string{addr.String()}); err != nil {
				m.stats.joinFailures.Add(1)
				if m.limit.allow("join_failed", time.Minute) {
					m.log.Warn("cannot join peer heard in beacon (different CLUSTER_KEY, or gossip port unreachable?)",
						"gossip_addr", addr.String(), "err", err)
				}
			}
		}
	}
}

// watch warns while the node has no peers and reaps old dead members.
func (m *Members) watch(ctx context.Context) {
	t := time.NewTicker(m.cfg.KeepaliveInterval)
	defer t.Stop()
	threshold := max(10*m.cfg.KeepaliveInterval, 5*time.Second)
	aloneSince := time.Now()
	var warned time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			m.reap(now)
			if len(m.AliveMembers()) > 1 {
				if !warned.IsZero() {
					m.log.Info("found peers", "alive_members", len(m.AliveMembers()))
				}
				aloneSince, warned = now, time.Time{}
				continue
			}
			if now.Sub(aloneSince) >= threshold && (warned.IsZero() || now.Sub(warned) >= aloneRepeat) {
				warned = now
				m.log.Warn("cluster mode but no peers found; check that the network carries the discovery traffic "+
					"(Kubernetes CNIs usually drop broadcast and multicast: set CLUSTER_UNICAST_ADDRESSES)",
					"alone_for", now.Sub(aloneSince).Round(time.Second), "cluster", m.cfg.ClusterName,
					"discovery_mode", m.disc.mode, "discovery_port", m.disc.port,
					"discovery_targets", m.disc.targetStrings(), "beacons_received", m.stats.beaconsReceived.Load(),
					"dropped_cluster", m.stats.droppedCluster.Load(), "dropped_auth", m.stats.droppedAuth.Load(),
					"dropped_keyed", m.stats.droppedKeyed.Load())
			}
		}
	}
}

// Leave tells peers this node is leaving, so they mark it "left" at once
// instead of waiting for the failure detector, then shuts down. Call it on
// SIGTERM. The error reports a leave that did not reach anyone in time;
// the node is shut down either way.
func (m *Members) Leave(timeout time.Duration) error {
	var err error
	m.stop.Do(func() {
		m.stopLoops()
		m.notifyLeaving(timeout)
		err = m.ml.Leave(timeout)
		if serr := m.ml.Shutdown(); serr != nil {
			err = errors.Join(err, serr)
		}
		m.events.close()
		m.log.Info("left cluster")
	})
	if err != nil {
		return fmt.Errorf("gossip: leave: %w", err)
	}
	return nil
}

// notifyLeaving sends the leave notice to every alive peer in parallel.
func (m *Members) notifyLeaving(timeout time.Duration) {
	msg := append(append([]byte{}, leaveNotice...), m.cfg.NodeID...)
	var wg sync.WaitGroup
	for _, n := range m.ml.Members() {
		if n.Name == m.cfg.NodeID {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.ml.SendReliable(n, msg) // best effort: a peer that misses it sees "dead"
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
	}
}

// Shutdown stops without telling peers; they detect the failure within
// NodeTimeout. Safe to call more than once and after Leave.
func (m *Members) Shutdown() {
	m.stop.Do(func() {
		m.stopLoops()
		m.ml.Shutdown()
		m.events.close()
		m.log.Info("gossip stopped")
	})
}

func (m *Members) stopLoops() {
	m.started.Store(true) // a later Start is refused
	if m.cancel != nil {
		m.cancel()
	}
	m.disc.close()
	m.wg.Wait()
}

// Timing returns the memberlist timing in use.
func (m *Members) Timing() Timing { return m.timing }

// MasterTimeout is carried for the consensus layer.
func (m *Members) MasterTimeout() time.Duration { return m.cfg.MasterTimeout }

// fillHost completes an advertised "host:port" whose host is empty or
// unspecified with this node's advertise address.
func fillHost(hostport string, adv netip.Addr) string {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return net.JoinHostPort(adv.String(), port)
	}
	return hostport
}
