package testredis

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/soketi-go/soketi/internal/testutil"
)

// StartTLS runs a redis-server that speaks only TLS, with a self-signed
// certificate for 127.0.0.1, and returns it with the certificate's PEM
// file, the CA a client must trust.
func StartTLS(t testing.TB) (*Server, string) {
	t.Helper()
	s := newServer(t)
	dir := t.TempDir()
	certPath, keyPath := testutil.WriteKeyPair(t, dir, "redis", net.ParseIP("127.0.0.1"))
	pem, err := os.ReadFile(certPath)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	s.tls = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	s.args = []string{"--tls-port", strconv.Itoa(s.port), "--tls-cert-file", certPath, "--tls-key-file", keyPath,
		"--tls-ca-cert-file", certPath, "--tls-auth-clients", "no"}
	s.start()
	t.Cleanup(s.Stop)
	return s, certPath
}

// StartSentinel runs a Sentinel watching master under the name name, and
// returns its address once it knows the master.
func StartSentinel(t testing.TB, master *Server, name string) string {
	t.Helper()
	s := newServer(t)
	conf := filepath.Join(t.TempDir(), "sentinel.conf") // Sentinel rewrites it
	host, port, _ := net.SplitHostPort(master.Addr)
	body := fmt.Sprintf("port %d\nbind 127.0.0.1\nsentinel monitor %s %s %s 1\n", s.port, name, host, port)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(s.bin, conf, "--sentinel")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.Addr, DialTimeout: 200 * time.Millisecond})
	defer sc.Close()
	waitFor(t, 10*time.Second, "sentinel knows the master", func(ctx context.Context) bool {
		addr, err := sc.GetMasterAddrByName(ctx, name).Result()
		return err == nil && len(addr) == 2 && addr[1] == port
	})
	return s.Addr
}

// StartCluster runs n redis-server nodes as one Redis Cluster with every
// slot assigned, and returns their addresses.
func StartCluster(t testing.TB, n int) []string {
	t.Helper()
	dir := t.TempDir()
	var addrs []string
	for i := 0; i < n; i++ {
		s := newServer(t)
		s.args = []string{"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", i)),
			"--cluster-node-timeout", "2000", "--dir", dir}
		s.start()
		t.Cleanup(s.Stop)
		addrs = append(addrs, s.Addr)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatal("redis-cli is needed to form a Redis Cluster (package redis-tools)")
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c := redis.NewClient(&redis.Options{Addr: addrs[0]})
	defer c.Close()
	waitFor(t, 15*time.Second, "cluster_state:ok", func(ctx context.Context) bool {
		info, err := c.ClusterInfo(ctx).Result()
		return err == nil && strings.Contains(info, "cluster_state:ok")
	})
	return addrs
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func(context.Context) bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		ok := cond(ctx)
		cancel()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stalled returns the address of a server that accepts connections and
// never answers: a Redis that hangs, for timeouts.
func Stalled(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	return ln.Addr().String()
}
