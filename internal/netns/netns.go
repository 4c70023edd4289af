//go:build linux

// Package netns builds throwaway LANs for tests: one Linux bridge and N
// network namespaces ("hosts") joined to it by veth pairs, addressed from a
// /24 of 198.18.0.0/15 (the benchmarking range, never routed). Nothing is
// routed out of the bridge; the root namespace gets the bridge address so
// tests can reach the hosts directly.
//
// Each Network holds an flock on its /24 for its lifetime, so concurrently
// running test packages never pick the same subnet or interface names.
package netns

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// subnets is the number of /24s in 198.18.0.0/15.
const subnets = 512

// BridgeHost is the last octet of the root namespace's address on the bridge.
const BridgeHost = 254

// Network is a bridge plus hosts. Create it with New.
type Network struct {
	ID         string       // short unique id used in every name
	Subnet     netip.Prefix // the /24
	Bridge     string       // bridge interface in the root namespace
	BridgeAddr netip.Addr   // root namespace's address on the bridge (.254)
	Hosts      []*Host

	lock    *os.File
	cleanup sync.Once
	err     error
}

// Host is one network namespace with eth0 on the bridge.
type Host struct {
	Index int        // 0-based
	Name  string     // namespace name, for `ip netns exec`
	Addr  netip.Addr // eth0 address: .Index+1
	Veth  string     // root-namespace end of the veth pair
}

// New builds a network of n hosts, registers its removal with t.Cleanup
// and skips the test when not running as root.
func New(t testing.TB, n int) *Network {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("netns: network namespace tests need root (run: sudo go test -tags netns ...)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("netns: the ip command (iproute2) is not installed")
	}
	if n < 1 || n > 200 {
		t.Fatalf("netns: %d hosts; want 1-200", n)
	}
	nw, err := create(n)
	if nw != nil {
		t.Cleanup(func() {
			if err := nw.Cleanup(); err != nil {
				t.Errorf("netns cleanup: %v", err)
			}
		})
	}
	if err != nil {
		t.Fatalf("netns: %v", err)
	}
	return nw
}

func create(n int) (*Network, error) {
	idx, lock, err := reserveSubnet()
	if err != nil {
		return nil, err
	}
	base := [4]byte{198, 18 + byte(idx/256), byte(idx % 256), 0}
	nw := &Network{
		ID:     fmt.Sprintf("%03x", idx),
		Subnet: netip.PrefixFrom(netip.AddrFrom4(base), 24),
		lock:   lock,
	}
	nw.Bridge = "skn" + nw.ID + "br"
	nw.BridgeAddr = nw.addr(BridgeHost)
	removeStale(nw.prefix())

	steps := [][]string{
		{"link", "add", "name", nw.Bridge, "type", "bridge", "mcast_snooping", "0"},
		{"addr", "add", nw.BridgeAddr.String() + "/24", "dev", nw.Bridge},
		{"link", "set", nw.Bridge, "up"},
	}
	for i := range n {
		h := &Host{
			Index: i,
			Name:  fmt.Sprintf("%sh%d", nw.prefix(), i),
			Addr:  nw.addr(i + 1),
			Veth:  fmt.Sprintf("%sv%d", nw.prefix(), i),
		}
		nw.Hosts = append(nw.Hosts, h)
		peer := fmt.Sprintf("%sp%d", nw.prefix(), i)
		steps = append(steps,
			[]string{"netns", "add", h.Name},
			[]string{"link", "add", h.Veth, "type", "veth", "peer", "name", peer},
			[]string{"link", "set", peer, "netns", h.Name},
			[]string{"link", "set", h.Veth, "master", nw.Bridge, "up"},
			[]string{"-n", h.Name, "link", "set", peer, "name", "eth0"},
			[]string{"-n", h.Name, "addr", "add", h.Addr.String() + "/24", "dev", "eth0"},
			[]string{"-n", h.Name, "link", "set", "eth0", "up"},
			[]string{"-n", h.Name, "link", "set", "lo", "up"},
			// Multicast needs a route; broadcast and unicast stay on the /24.
			// No default route, so nothing can leave the LAN.
			[]string{"-n", h.Name, "route", "add", "224.0.0.0/4", "dev", "eth0"},
		)
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return nw, err
		}
	}
	return nw, nil
}

// prefix starts every interface and namespace name of this network.
func (nw *Network) prefix() string { return "skn" + nw.ID }

func (nw *Network) addr(host int) netip.Addr {
	b := nw.Subnet.Addr().As4()
	b[3] = byte(host)
	return netip.AddrFrom4(b)
}

// reserveSubnet locks a random free /24 index. The lock lives until the
// file is closed, or the process exits.
func reserveSubnet() (int, *os.File, error) {
	start := rand.IntN(subnets)
	for i := range subnets {
		idx := (start + i) % subnets
		path := filepath.Join(os.TempDir(), fmt.Sprintf("soketi-netns-%03x.lock", idx))
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return 0, nil, err
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		return idx, f, nil
	}
	return 0, nil, errors.New("all 512 subnets of 198.18.0.0/15 are in use")
}

// removeStale deletes namespaces and links left by a crashed run that held
// the same subnet; we hold its lock, so nothing live uses them.
func removeStale(prefix string) {
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if name, _, _ := strings.Cut(line, " "); strings.HasPrefix(name, prefix) {
				ip("netns", "del", name)
			}
		}
	}
	if out, err := exec.Command("ip", "-o", "link", "show").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if strings.HasPrefix(name, prefix) {
				ip("link", "del", name)
			}
		}
	}
}

// Cleanup deletes the namespaces (which deletes their veth pairs) and the
// bridge, then releases the subnet. New registers it with t.Cleanup; calling
// it earlier is fine, later calls return the first result.
func (nw *Network) Cleanup() error {
	nw.cleanup.Do(func() {
		var errs []error
		for _, h := range nw.Hosts {
			if exists("netns", h.Name) {
				errs = append(errs, ip("netns", "del", h.Name))
			}
			// Deleting the namespace removes its end of the veth pair, and the
			// kernel removes the host end shortly after: a link that went
			// away in between is not an error.
			if exists("link", h.Veth) {
				if err := ip("link", "del", h.Veth); err != nil && exists("link", h.Veth) {
					errs = append(errs, err)
				}
			}
		}
		if exists("link", nw.Bridge) {
			errs = append(errs, ip("link", "del", nw.Bridge))
		}
		if nw.lock != nil {
			nw.lock.Close()
		}
		nw.err = errors.Join(errs...)
	})
	return nw.err
}

// Exists reports whether any namespace or link of this network remains.
func (nw *Network) Exists() bool {
	if exists("link", nw.Bridge) {
		return true
	}
	for _, h := range nw.Hosts {
		if exists("netns", h.Name) || exists("link", h.Veth) {
			return true
		}
	}
	return false
}

func exists(kind, name string) bool {
	switch kind {
	case "netns":
		_, err := os.Stat(filepath.Join("/var/run/netns", name))
		return err == nil
	default:
		return exec.Command("ip", "link", "show", "dev", name).Run() == nil
	}
}

// Command returns a command that runs name inside the host's namespace.
// `ip netns exec` execs name in place, so cmd.Process is name itself and
// signals reach it directly.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.Name, name}, args...)...)
}

// Cut takes the host's link down at the bridge: the host stays up but can
// reach nobody and nobody can reach it.
func (h *Host) Cut() error { return ip("link", "set", h.Veth, "down") }

// Restore undoes Cut.
func (h *Host) Restore() error { return ip("link", "set", h.Veth, "up") }

// Do runs fn on an OS thread switched into the host's namespace. Sockets
// created by fn stay in the namespace and may be used from any goroutine.
// Goroutines started by fn run in the root namespace.
func (h *Host) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is never unlocked: it exits with this goroutine, so it
		// cannot return to the scheduler in the wrong namespace.
		runtime.LockOSThread()
		f, err := os.Open(filepath.Join("/var/run/netns", h.Name))
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", h.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
