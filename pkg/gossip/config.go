package gossip

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/soketi-go/soketi/internal/text"
)

// Defaults follow soketi's cluster options (CLUSTER_* variables).
const (
	DefaultClusterName       = "soketi"
	DefaultBindHost          = "0.0.0.0"
	DefaultDiscoveryPort     = 11002
	DefaultBroadcastAddress  = "255.255.255.255"
	DefaultKeepaliveInterval = 500 * time.Millisecond
	DefaultCheckInterval     = 500 * time.Millisecond
	DefaultNodeTimeout       = 2000 * time.Millisecond
)

// Limits keep every beacon well under maxBeaconSize and the memberlist node
// meta under memberlist.MetaMaxSize.
const (
	maxClusterNameLen = 64
	maxNodeIDLen      = 128
	maxAdvertisedLen  = 64
)

// Config configures one cluster member. The zero value of every field means
// "use the default"; main fills it from the CLUSTER_* environment variables.
type Config struct {
	// ClusterName isolates clusters sharing a LAN (CLUSTER_PREFIX; "" means "soketi").
	// It is carried in every beacon and used as the memberlist label.
	ClusterName string
	// NodeID must be unique in the cluster; default hostname plus a random suffix.
	NodeID string
	// BindHost is the IPv4 address memberlist binds (CLUSTER_HOST, default 0.0.0.0).
	BindHost string
	// DiscoveryPort is the UDP beacon port (CLUSTER_PORT, default 11002).
	DiscoveryPort int
	// GossipPort is memberlist's TCP+UDP port; 0 picks a free one. main
	// passes CLUSTER_GOSSIP_PORT, whose default (11003) internal/config holds.
	GossipPort int
	// AdvertiseAddr is the IPv4 peers use to reach this node; "" finds one:
	// BindHost when it is specific, else the first non-loopback IPv4 of an up interface.
	AdvertiseAddr string

	// BroadcastAddress is the beacon destination in broadcast mode.
	BroadcastAddress string
	// MulticastAddress switches discovery to this IPv4 group (TTL 1).
	MulticastAddress string
	// UnicastAddresses ("ip" or "ip:port") switches discovery to a static list.
	// Unicast wins over multicast, multicast over broadcast.
	UnicastAddresses []string

	// KeepaliveInterval is the beacon period (CLUSTER_KEEPALIVE_INTERVAL).
	KeepaliveInterval time.Duration
	// CheckInterval is the memberlist probe interval (CLUSTER_CHECK_INTERVAL).
	CheckInterval time.Duration
	// NodeTimeout bounds the time from a node's death to every other node
	// marking it dead, for clusters of up to ten nodes (CLUSTER_NODE_TIMEOUT).
	NodeTimeout time.Duration
	// MasterTimeout is not used here; it is carried for the consensus layer
	// (CLUSTER_MASTER_TIMEOUT, default NodeTimeout, never below it).
	MasterTimeout time.Duration

	// SecretKey (16, 24 or 32 bytes) encrypts and authenticates gossip, and
	// a key derived from it (HKDF-SHA256) authenticates every beacon: with
	// it only beacons with a valid MAC are heard, without it only beacons
	// without one. Beacons are never encrypted and carry nothing secret.
	SecretKey []byte

	// HTTPAddr and RaftAddr (the cluster port: raft, RPC and message
	// streams) are advertised to peers in beacons and node meta. An empty
	// or unspecified host is filled with the advertise address.
	HTTPAddr string
	RaftAddr string

	// Incarnation identifies this process's life; 0 means its start time in
	// Unix nanoseconds. The layers above share it.
	Incarnation uint64

	Logger *slog.Logger
}

// withDefaults returns a copy with defaults applied, or an error describing
// the first invalid field.
func (c Config) withDefaults() (Config, error) {
	if c.ClusterName == "" {
		c.ClusterName = DefaultClusterName
	}
	if c.NodeID == "" {
		id, err := defaultNodeID()
		if err != nil {
			return c, err
		}
		c.NodeID = id
	}
	if c.BindHost == "" {
		c.BindHost = DefaultBindHost
	}
	if c.DiscoveryPort == 0 {
		c.DiscoveryPort = DefaultDiscoveryPort
	}
	if c.BroadcastAddress == "" {
		c.BroadcastAddress = DefaultBroadcastAddress
	}
	if c.KeepaliveInterval == 0 {
		c.KeepaliveInterval = DefaultKeepaliveInterval
	}
	if c.CheckInterval == 0 {
		c.CheckInterval = DefaultCheckInterval
	}
	if c.NodeTimeout == 0 {
		c.NodeTimeout = DefaultNodeTimeout
	}
	if c.MasterTimeout == 0 {
		c.MasterTimeout = c.NodeTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, c.validate()
}

func (c Config) validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf("gossip: "+format, args...))
		}
	}
	check(validName(c.ClusterName, maxClusterNameLen), "cluster name %q: want 1-%d printable bytes", c.ClusterName, maxClusterNameLen)
	check(validName(c.NodeID, maxNodeIDLen), "node id %q: want 1-%d printable bytes", c.NodeID, maxNodeIDLen)
	check(validOptional(c.HTTPAddr), "http addr %q: want at most %d printable bytes", c.HTTPAddr, maxAdvertisedLen)
	check(validOptional(c.RaftAddr), "raft addr %q: want at most %d printable bytes", c.RaftAddr, maxAdvertisedLen)
	bind, err := netip.ParseAddr(c.BindHost)
	check(err == nil && bind.Is4(), "bind host %q: want an IPv4 address", c.BindHost)
	if c.AdvertiseAddr != "" {
		a, err := netip.ParseAddr(c.AdvertiseAddr)
		check(err == nil && a.Is4() && !a.IsUnspecified(), "advertise addr %q: want a specific IPv4 address", c.AdvertiseAddr)
	}
	check(c.DiscoveryPort > 0 && c.DiscoveryPort <= 65535, "discovery port %d out of range", c.DiscoveryPort)
	check(c.GossipPort >= 0 && c.GossipPort <= 65535, "gossip port %d out of range", c.GossipPort)
	check(c.GossipPort == 0 || c.GossipPort != c.DiscoveryPort, "gossip port and discovery port are both %d", c.GossipPort)
	bc, err := netip.ParseAddr(c.BroadcastAddress)
	check(err == nil && bc.Is4(), "broadcast address %q: want an IPv4 address", c.BroadcastAddress)
	if c.MulticastAddress != "" {
		mc, err := netip.ParseAddr(c.MulticastAddress)
		check(err == nil && mc.Is4() && mc.IsMulticast(), "multicast address %q: want an IPv4 multicast group", c.MulticastAddress)
	}
	for _, u := range c.UnicastAddresses {
		_, err := parseUnicast(u, c.DiscoveryPort)
		check(err == nil, "unicast address %q: %v", u, err)
	}
	check(c.KeepaliveInterval > 0, "keepalive interval must be positive")
	check(c.CheckInterval > 0, "check interval must be positive")
	check(c.NodeTimeout >= c.CheckInterval, "node timeout %s is shorter than check interval %s", c.NodeTimeout, c.CheckInterval)
	check(c.MasterTimeout >= c.NodeTimeout, "master timeout %s is shorter than node timeout %s", c.MasterTimeout, c.NodeTimeout)
	switch len(c.SecretKey) {
	case 0, 16, 24, 32:
	default:
		errs = append(errs, fmt.Errorf("gossip: secret key is %d bytes; want 16, 24 or 32", len(c.SecretKey)))
	}
	return errors.Join(errs...)
}

// unicastTarget is one CLUSTER_UNICAST_ADDRESSES entry: a fixed IPv4
// address, or a DNS name resolved again and again (Kubernetes pod names).
type unicastTarget struct {
	addr netip.AddrPort // set for an IP entry
	host string         // set for a name entry
	port uint16
}

// parseUnicast parses "ip", "ip:port", "name" or "name:port"; a missing port
// means defaultPort.
func parseUnicast(s string, defaultPort int) (unicastTarget, error) {
	s = strings.TrimSpace(s)
	host, portText := s, ""
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, portText = h, p
	}
	port := defaultPort
	if portText != "" {
		n, err := strconv.Atoi(portText)
		if err != nil || n <= 0 || n > 65535 {
			return unicastTarget{}, errors.New("want a port 1-65535 after the colon")
		}
		port = n
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if !a.Is4() {
			return unicastTarget{}, errors.New("want an IPv4 address or a host name, optionally with :port")
		}
		return unicastTarget{addr: netip.AddrPortFrom(a, uint16(port)), port: uint16(port)}, nil
	}
	if !validHostName(host) {
		return unicastTarget{}, errors.New("want an IPv4 address or a host name, optionally with :port")
	}
	return unicastTarget{host: host, port: uint16(port)}, nil
}

// validHostName accepts DNS names of letters, digits, hyphens and dots.
func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

func validName(s string, max int) bool {
	return s != "" && len(s) <= max && text.Printable(s)
}

func validOptional(s string) bool {
	return len(s) <= maxAdvertisedLen && text.Printable(s)
}

func defaultNodeID() (string, error) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "soketi"
	}
	if len(host) > maxNodeIDLen-9 {
		host = host[:maxNodeIDLen-9]
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("gossip: node id: %w", err)
	}
	return host + "-" + hex.EncodeToString(b[:]), nil
}

// advertiseAddr picks the address peers should use: AdvertiseAddr if set,
// BindHost if specific, else the first non-loopback IPv4 of an up interface.
// ok is false when it had to fall back to loopback.
func advertiseAddr(c Config) (addr netip.Addr, ok bool) {
	if c.AdvertiseAddr != "" {
		return netip.MustParseAddr(c.AdvertiseAddr), true
	}
	bind := netip.MustParseAddr(c.BindHost)
	if !bind.IsUnspecified() {
		return bind, true
	}
	if a, found := firstInterfaceIPv4(); found {
		return a, true
	}
	return netip.AddrFrom4([4]byte{127, 0, 0, 1}), false
}

func firstInterfaceIPv4() (netip.Addr, bool) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return netip.Addr{}, false
	}
	for _, ifi := range ifaces {
		if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			if ip.Is4() && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() {
				return ip, true
			}
		}
	}
	return netip.Addr{}, false
}

// interfaceFor returns the interface that owns addr, or nil.
func interfaceFor(addr netip.Addr) *net.Interface {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil
	}
	for i := range ifaces {
		addrs, err := ifaces[i].Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap() == addr {
					return &ifaces[i]
				}
			}
		}
	}
	return nil
}

// ValidateUnicastAddress checks one CLUSTER_UNICAST_ADDRESSES entry: an IPv4
// address or a host name, optionally with :port.
func ValidateUnicastAddress(s string) error {
	_, err := parseUnicast(s, 1)
	return err
}

// AdvertiseAddr is the IPv4 address peers will be told to use for cfg, and
// whether it is one other hosts can reach (not loopback).
func AdvertiseAddr(cfg Config) (netip.Addr, bool) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return netip.Addr{}, false
	}
	return advertiseAddr(cfg)
}
