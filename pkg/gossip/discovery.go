package gossip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"
)

// Discovery modes, in order of precedence.
const (
	ModeUnicast   = "unicast"
	ModeMulticast = "multicast"
	ModeBroadcast = "broadcast"
)

// discovery owns the beacon sockets. recv is bound to the beacon port and
// shared with other processes on the host; send is bound to the advertise
// address so that broadcast and multicast leave through its interface even
// without a default route.
type discovery struct {
	mode    string
	port    int
	unicast []unicastTarget                  // the configured unicast list
	targets atomic.Pointer[[]netip.AddrPort] // where beacons go now
	recv    *net.UDPConn
	send    *net.UDPConn
}

func (d *discovery) setTargets(t []netip.AddrPort) { d.targets.Store(&t) }

func (d *discovery) currentTargets() []netip.AddrPort {
	if p := d.targets.Load(); p != nil {
		return *p
	}
	return nil
}

// openDiscovery picks the mode (unicast > multicast > broadcast) and binds.
func openDiscovery(cfg Config, adv netip.Addr) (*discovery, error) {
	var (
		d   *discovery
		err error
	)
	switch {
	case len(cfg.UnicastAddresses) > 0:
		d, err = openUnicast(cfg, adv)
	case cfg.MulticastAddress != "":
		d, err = openMulticast(cfg, adv)
	default:
		d, err = openBroadcast(cfg, adv)
	}
	if err != nil {
		return nil, fmt.Errorf("gossip: %s discovery on port %d: %w", modeOf(cfg), cfg.DiscoveryPort, err)
	}
	d.port = cfg.DiscoveryPort
	return d, nil
}

func modeOf(cfg Config) string {
	switch {
	case len(cfg.UnicastAddresses) > 0:
		return ModeUnicast
	case cfg.MulticastAddress != "":
		return ModeMulticast
	default:
		return ModeBroadcast
	}
}

// listenShared binds a UDP socket that other processes may bind too.
func listenShared(host string, port int) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: reusePort}
	pc, err := lc.ListenPacket(context.Background(), "udp4", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

// listenSender binds an ephemeral port on adv, or on any address when adv is
// not local (an advertise address behind NAT). Go enables SO_BROADCAST on
// every UDP socket.
func listenSender(adv netip.Addr) (*net.UDPConn, error) {
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(adv, 0)))
	if err == nil {
		return c, nil
	}
	return net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero})
}

func (d *discovery) targetStrings() []string {
	targets := d.currentTargets()
	out := make([]string, len(targets))
	for i, t := range targets {
		out[i] = t.String()
	}
	return out
}

func (d *discovery) close() {
	d.recv.Close()
	d.send.Close()
}

// sendBeacons sends one beacon per KeepaliveInterval to every target until ctx ends.
func (m *Members) sendBeacons(ctx context.Context) {
	t := time.NewTicker(m.cfg.KeepaliveInterval)
	defer t.Stop()
	for {
		for _, to := range m.disc.currentTargets() {
			if _, err := m.disc.send.WriteToUDPAddrPort(m.beacon, to); err != nil {
				if ctx.Err() != nil {
					return
				}
				m.stats.beaconSendErrors.Add(1)
				if m.limit.allow("send_error", time.Minute) {
					m.log.Warn("cannot send discovery beacon", "mode", m.disc.mode, "target", to.String(), "err", err)
				}
				continue
			}
			m.stats.beaconsSent.Add(1)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// receiveBeacons reads beacons until the socket is closed. It never blocks
// on a join: joins are queued for joinWorker.
func (m *Members) receiveBeacons() {
	// One byte more than the cap so an oversized datagram is seen as such
	// rather than silently truncated into something parseable.
	buf := make([]byte, maxBeaconSize+1)
	for {
		n, from, err := m.disc.recv.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// Unexpected and possibly persistent: pause so it cannot spin.
			m.log.Debug("beacon read failed", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		m.handleBeacon(buf[:n], from)
	}
}

// authLogEvery spaces the debug lines about unauthenticated beacons: a
// spoofer or a node with another key must not flood the log.
const authLogEvery = 10 * time.Second

func (m *Members) handleBeacon(p []byte, from netip.AddrPort) {
	b, err := decodeBeacon(p, m.beaconKey)
	switch {
	case errors.Is(err, errBeaconTooLarge):
		m.stats.droppedOversized.Add(1)
		return
	case errors.Is(err, errBeaconVersion):
		m.stats.droppedVersion.Add(1)
		return
	case errors.Is(err, errBeaconAuth), errors.Is(err, errBeaconKeyed):
		c := &m.stats.droppedAuth
		if errors.Is(err, errBeaconKeyed) {
			c = &m.stats.droppedKeyed
		}
		n := c.Add(1)
		if m.limit.allow("beacon_auth", authLogEvery) {
			m.log.Debug("dropped unauthenticated beacon (CLUSTER_KEY differs, or is set on only some nodes)",
				"peer_addr", from.String(), "reason", err, "dropped", n)
		}
		return
	case err != nil:
		m.stats.droppedMalformed.Add(1)
		return
	}
	if b.Cluster != m.cfg.ClusterName {
		m.stats.droppedCluster.Add(1)
		return
	}
	m.stats.beaconsReceived.Add(1)
	if b.NodeID == m.cfg.NodeID {
		if b.Incarnation != m.incarnation && m.limit.allow("duplicate_id", time.Minute) {
			m.log.Warn("another node uses this node id", "peer_addr", from.Addr().String())
		}
		return
	}
	addr := b.GossipAddr
	if addr.Addr().IsUnspecified() {
		addr = netip.AddrPortFrom(from.Addr().Unmap(), addr.Port())
	}
	m.maybeJoin(b.NodeID, addr, time.Now())
}
