package gossip

import (
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
)

// openMulticast joins the group on the advertise interface and receives on
// the wildcard address (a socket bound to a unicast address would not see
// group traffic). TTL 1 keeps beacons on the local segment; loopback lets
// several processes on one host see each other.
func openMulticast(cfg Config, adv netip.Addr) (*discovery, error) {
	group := netip.MustParseAddr(cfg.MulticastAddress)
	ifi := interfaceFor(adv)

	recv, err := listenShared("0.0.0.0", cfg.DiscoveryPort)
	if err != nil {
		return nil, err
	}
	if err := ipv4.NewPacketConn(recv).JoinGroup(ifi, &net.UDPAddr{IP: group.AsSlice()}); err != nil {
		recv.Close()
		return nil, fmt.Errorf("join group %s: %w", group, err)
	}
	send, err := listenSender(adv)
	if err != nil {
		recv.Close()
		return nil, err
	}
	pc := ipv4.NewPacketConn(send)
	err = pc.SetMulticastTTL(1)
	if err == nil {
		err = pc.SetMulticastLoopback(true)
	}
	if err == nil && ifi != nil {
		err = pc.SetMulticastInterface(ifi)
	}
	if err != nil {
		recv.Close()
		send.Close()
		return nil, fmt.Errorf("configure multicast sender: %w", err)
	}
	to := netip.AddrPortFrom(group, uint16(cfg.DiscoveryPort))
	d := &discovery{mode: ModeMulticast, recv: recv, send: send}
	d.setTargets([]netip.AddrPort{to})
	return d, nil
}
