package gossip

import (
	"context"
	"net"
	"net/netip"
	"time"
)

// Names in the unicast list are resolved at start and then every
// resolveEvery, so pods that come and go under stable names are found.
const (
	resolveEvery   = 5 * time.Second
	resolveTimeout = 2 * time.Second
)

// openUnicast receives on BindHost and sends to every listed address.
//
// Several nodes on one host: give each its own BindHost (127.0.0.x, or one
// address per container) or its own DiscoveryPort and list every ip:port.
// Sharing one port also binds (SO_REUSEPORT), but the kernel then hands each
// sender's beacons to only one of the sharing processes; that still
// converges, because one join spreads through gossip, yet it is not a
// guarantee worth relying on.
func openUnicast(cfg Config, adv netip.Addr) (*discovery, error) {
	d := &discovery{mode: ModeUnicast}
	for _, u := range cfg.UnicastAddresses {
		t, _ := parseUnicast(u, cfg.DiscoveryPort) // validated in Config.validate
		d.unicast = append(d.unicast, t)
	}
	d.setTargets(d.resolve(context.Background(), nil))
	recv, err := listenShared(cfg.BindHost, cfg.DiscoveryPort)
	if err != nil {
		return nil, err
	}
	send, err := listenSender(adv)
	if err != nil {
		recv.Close()
		return nil, err
	}
	d.recv, d.send = recv, send
	return d, nil
}

// resolve turns the unicast list into addresses: IP entries as they are,
// names through DNS (every IPv4 record). A name that does not resolve is
// skipped this round and reported through onError.
func (d *discovery) resolve(ctx context.Context, onError func(host string, err error)) []netip.AddrPort {
	seen := make(map[netip.AddrPort]bool)
	var out []netip.AddrPort
	add := func(ap netip.AddrPort) {
		if !seen[ap] {
			seen[ap] = true
			out = append(out, ap)
		}
	}
	for _, t := range d.unicast {
		if t.host == "" {
			add(t.addr)
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, resolveTimeout)
		addrs, err := net.DefaultResolver.LookupNetIP(rctx, "ip4", t.host)
		cancel()
		if err != nil {
			if onError != nil {
				onError(t.host, err)
			}
			continue
		}
		for _, a := range addrs {
			add(netip.AddrPortFrom(a.Unmap(), t.port))
		}
	}
	return out
}

// resolveNames refreshes the targets of a unicast list that has names.
func (m *Members) resolveNames(ctx context.Context) {
	if !m.disc.hasNames() {
		return
	}
	t := time.NewTicker(resolveEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.disc.setTargets(m.disc.resolve(ctx, func(host string, err error) {
			if m.limit.allow("resolve:"+host, time.Minute) {
				m.log.Warn("cannot resolve unicast discovery name", "host", host, "err", err)
			}
		}))
	}
}

func (d *discovery) hasNames() bool {
	for _, t := range d.unicast {
		if t.host != "" {
			return true
		}
	}
	return false
}
