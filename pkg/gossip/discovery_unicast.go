package gossip

import "net/netip"

// openUnicast receives on BindHost and sends to every listed address.
//
// Several nodes on one host: give each its own BindHost (127.0.0.x, or one
// address per container) or its own DiscoveryPort and list every ip:port.
// Sharing one port also binds (SO_REUSEPORT), but the kernel then hands each
// sender's beacons to only one of the sharing processes; that still
// converges, because one join spreads through gossip, yet it is not a
// guarantee worth relying on.
func openUnicast(cfg Config, adv netip.Addr) (*discovery, error) {
	targets := make([]netip.AddrPort, 0, len(cfg.UnicastAddresses))
	seen := make(map[netip.AddrPort]bool)
	for _, u := range cfg.UnicastAddresses {
		ap, _ := parseUnicast(u, cfg.DiscoveryPort) // validated in Config.validate
		if !seen[ap] {
			seen[ap] = true
			targets = append(targets, ap)
		}
	}
	recv, err := listenShared(cfg.BindHost, cfg.DiscoveryPort)
	if err != nil {
		return nil, err
	}
	send, err := listenSender(adv)
	if err != nil {
		recv.Close()
		return nil, err
	}
	return &discovery{mode: ModeUnicast, targets: targets, recv: recv, send: send}, nil
}
