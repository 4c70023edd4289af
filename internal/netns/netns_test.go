//go:build netns && linux

package netns

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
)

// listenIn opens a UDP socket inside h bound to addr.
func listenIn(t *testing.T, h *Host, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := h.Do(func() error {
		pc, err := net.ListenPacket("udp4", addr)
		if err == nil {
			c = pc.(*net.UDPConn)
		}
		return err
	})
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, h.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recv returns the next datagram or "" after a deadline.
func recv(c *net.UDPConn, within time.Duration) string {
	buf := make([]byte, 512)
	c.SetReadDeadline(time.Now().Add(within))
	n, _, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}

func TestNetwork_HostsTalkAndCleanUp(t *testing.T) {
	nw := New(t, 3)
	h0, h1, h2 := nw.Hosts[0], nw.Hosts[1], nw.Hosts[2]
	for _, h := range nw.Hosts {
		if len(h.Name) > 15 || len(h.Veth) > 15 || !nw.Subnet.Contains(h.Addr) {
			t.Fatalf("host %+v: bad name or address", h)
		}
	}

	// Commands run inside the namespace.
	out, err := h1.Command(t.Context(), "ip", "-4", "-o", "addr", "show", "dev", "eth0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), h1.Addr.String()+"/24") {
		t.Fatalf("ip addr in %s: %v: %s", h1.Name, err, out)
	}

	// Unicast between namespaces and from the root namespace.
	port := 9000
	server := listenIn(t, h0, ":9000")
	client := listenIn(t, h1, h1.Addr.String()+":0")
	to := netip.AddrPortFrom(h0.Addr, uint16(port))
	if _, err := client.WriteToUDPAddrPort([]byte("from-h1"), to); err != nil {
		t.Fatal(err)
	}
	if got := recv(server, 5*time.Second); got != "from-h1" {
		t.Fatalf("h0 got %q from h1", got)
	}
	root, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(nw.BridgeAddr, 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	root.WriteToUDPAddrPort([]byte("from-root"), to)
	if got := recv(server, 5*time.Second); got != "from-root" {
		t.Fatalf("h0 got %q from the root namespace", got)
	}

	// Limited broadcast from h0 reaches h1 and h2.
	b1, b2 := listenIn(t, h1, ":9001"), listenIn(t, h2, ":9001")
	sender := listenIn(t, h0, h0.Addr.String()+":0")
	if _, err := sender.WriteToUDPAddrPort([]byte("bcast"), netip.MustParseAddrPort("255.255.255.255:9001")); err != nil {
		t.Fatalf("broadcast: %v", err)
	}
	if g1, g2 := recv(b1, 5*time.Second), recv(b2, 5*time.Second); g1 != "bcast" || g2 != "bcast" {
		t.Fatalf("broadcast: h1 got %q, h2 got %q", g1, g2)
	}

	// Multicast from h0 reaches members of the group.
	group := net.IPv4(239, 77, 0, 1)
	m1, m2 := listenIn(t, h1, ":9002"), listenIn(t, h2, ":9002")
	for i, c := range []*net.UDPConn{m1, m2} {
		h := nw.Hosts[i+1]
		if err := h.Do(func() error {
			ifi, err := net.InterfaceByName("eth0")
			if err != nil {
				return err
			}
			return ipv4.NewPacketConn(c).JoinGroup(ifi, &net.UDPAddr{IP: group})
		}); err != nil {
			t.Fatalf("join group in %s: %v", h.Name, err)
		}
	}
	if _, err := sender.WriteToUDP([]byte("mcast"), &net.UDPAddr{IP: group, Port: 9002}); err != nil {
		t.Fatalf("multicast: %v", err)
	}
	if g1, g2 := recv(m1, 5*time.Second), recv(m2, 5*time.Second); g1 != "mcast" || g2 != "mcast" {
		t.Fatalf("multicast: h1 got %q, h2 got %q", g1, g2)
	}

	// A cut link drops traffic; restoring it brings it back.
	if err := h2.Cut(); err != nil {
		t.Fatal(err)
	}
	u2 := listenIn(t, h2, ":9003")
	client.WriteToUDPAddrPort([]byte("while-cut"), netip.AddrPortFrom(h2.Addr, 9003))
	if got := recv(u2, 500*time.Millisecond); got != "" {
		t.Fatalf("h2 received %q through a cut link", got)
	}
	if err := h2.Restore(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for got := ""; got != "restored"; got = recv(u2, 200*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("h2 unreachable after restore")
		}
		client.WriteToUDPAddrPort([]byte("restored"), netip.AddrPortFrom(h2.Addr, 9003))
	}

	// Cleanup removes everything and is idempotent.
	if err := nw.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if nw.Exists() {
		t.Fatal("namespaces or links remain after Cleanup")
	}
	if _, err := os.Stat("/var/run/netns/" + h0.Name); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("namespace file remains: %v", err)
	}
	if err := nw.Cleanup(); err != nil {
		t.Fatal(err)
	}
}

func TestNetwork_ParallelNetworksDoNotCollide(t *testing.T) {
	a, b := New(t, 1), New(t, 1)
	if a.ID == b.ID || a.Subnet == b.Subnet {
		t.Fatalf("two networks share %s / %s", a.ID, a.Subnet)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	// The hosts of a are not reachable from b's namespace: separate bridges.
	out, err := b.Hosts[0].Command(ctx, "ip", "route", "get", a.Hosts[0].Addr.String()).CombinedOutput()
	if err == nil {
		t.Fatalf("b reaches a's subnet: %s", out)
	}
}
