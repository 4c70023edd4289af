package redisconn

import (
	"context"
	"crypto/x509"
	"os"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testredis"
)

func ping(t *testing.T, o Options) error {
	t.Helper()
	o.Timeout = 2 * time.Second
	c, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.Set(ctx, "{k}:x", "v", time.Minute).Err(); err != nil {
		return err
	}
	if v, err := c.Get(ctx, "{k}:x").Result(); err != nil || v != "v" {
		t.Fatalf("get: %q %v", v, err)
	}
	return nil
}

// TLS to a server whose certificate the given CAs sign; refused against
// the system's roots, and in plain text.
func TestOpen_TLS(t *testing.T) {
	srv, caPath := testredis.StartTLS(t)
	pemBytes, err := os.ReadFile(caPath)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	if err := ping(t, Options{Addr: srv.Addr, TLS: true, RootCAs: pool}); err != nil {
		t.Fatalf("TLS with the CA: %v", err)
	}
	if err := ping(t, Options{Addr: srv.Addr, TLS: true}); err == nil {
		t.Fatal("TLS against the system roots accepted a self-signed certificate")
	}
	if err := ping(t, Options{Addr: srv.Addr}); err == nil {
		t.Fatal("plain text reached a TLS-only server")
	}
}

// Sentinel finds the master by name.
func TestOpen_Sentinel(t *testing.T) {
	master := testredis.Start(t)
	sentinel := testredis.StartSentinel(t, master, "mymaster")
	if err := ping(t, Options{Sentinels: []string{sentinel}, MasterName: "mymaster"}); err != nil {
		t.Fatalf("through sentinel: %v", err)
	}
	if err := ping(t, Options{Sentinels: []string{sentinel}, MasterName: "nosuch"}); err == nil {
		t.Fatal("an unknown master name was found")
	}
}

// Redis Cluster: commands are routed by slot, from any seed node.
func TestOpen_Cluster(t *testing.T) {
	addrs := testredis.StartCluster(t, 3)
	if err := ping(t, Options{Cluster: true, ClusterNodes: addrs[1:2]}); err != nil {
		t.Fatalf("cluster: %v", err)
	}
	if _, err := Open(Options{Cluster: true}); err == nil {
		t.Fatal("cluster mode without nodes was accepted")
	}
}
