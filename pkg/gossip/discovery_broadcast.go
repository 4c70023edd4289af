package gossip

import "net/netip"

// openBroadcast receives on the wildcard address: on Linux a socket bound
// to a unicast address never sees broadcast datagrams.
func openBroadcast(cfg Config, adv netip.Addr) (*discovery, error) {
	recv, err := listenShared("0.0.0.0", cfg.DiscoveryPort)
	if err != nil {
		return nil, err
	}
	send, err := listenSender(adv)
	if err != nil {
		recv.Close()
		return nil, err
	}
	to := netip.AddrPortFrom(netip.MustParseAddr(cfg.BroadcastAddress), uint16(cfg.DiscoveryPort))
	d := &discovery{mode: ModeBroadcast, recv: recv, send: send}
	d.setTargets([]netip.AddrPort{to})
	return d, nil
}
