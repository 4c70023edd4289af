package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

func TestRun_HelpAndVersion(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--help"}, func(string) string { return "" }, &out, &errb); code != 0 || !strings.Contains(out.String(), "soketi start") {
		t.Fatalf("--help: %d %q", code, out.String())
	}
	out.Reset()
	if code := run([]string{"--version"}, func(string) string { return "" }, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "soketi ") {
		t.Fatalf("--version: %d %q", code, out.String())
	}
	if code := run([]string{"frobnicate"}, func(string) string { return "" }, &out, &errb); code != 2 {
		t.Fatalf("unknown command: %d", code)
	}
}

// An invalid variable stops start-up with exit 2 and one line naming it,
// before any port is bound.
func TestRun_InvalidConfigExits2BeforeBinding(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	for name, val := range map[string]string{
		"CLUSTER_UNICAST_ADDRESSES":  "[not json",
		"ADAPTER_DRIVER":             "nats",
		"SOKETI_METRICS_SERVER_PORT": "0",
	} {
		var out, errb bytes.Buffer
		getenv := func(k string) string {
			switch k {
			case name:
				return val
			case "SOKETI_PORT":
				return strconv.Itoa(port)
			}
			return ""
		}
		code := run([]string{"start"}, getenv, &out, &errb)
		lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
		if code != 2 || len(lines) != 1 || !strings.Contains(lines[0], name) {
			t.Errorf("%s=%s: exit %d, stderr %q", name, val, code, errb.String())
		}
		probe, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			t.Fatalf("%s: port was bound: %v", name, err)
		}
		probe.Close()
	}
}

// The cluster's TLS settings are checked before anything is bound: all
// three files or none, a key with them, and files that load.
func TestRun_ClusterTLSErrorsExit2(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	for _, tc := range []struct {
		env  map[string]string
		name string
	}{
		{map[string]string{"CLUSTER_TLS_CA": dir + "/ca.pem"}, "CLUSTER_TLS_CA"},
		{map[string]string{"CLUSTER_TLS_CA": dir + "/ca.pem", "CLUSTER_TLS_CERT": dir + "/n.pem",
			"CLUSTER_TLS_KEY": dir + "/n.key"}, "CLUSTER_TLS_CA"}, // no CLUSTER_KEY
		{map[string]string{"CLUSTER_TLS_CA": dir + "/ca.pem", "CLUSTER_TLS_CERT": dir + "/n.pem",
			"CLUSTER_TLS_KEY": dir + "/n.key", "CLUSTER_KEY": "c29rZXRpLWNtZC10ZXN0LWtleS1vZi0zMi1ieXRlcyE="}, "CLUSTER_TLS_CERT"},
	} {
		var out, errb bytes.Buffer
		getenv := func(k string) string {
			switch k {
			case "ADAPTER_DRIVER":
				return "cluster"
			case "CLUSTER_DATA_DIR":
				return dir
			case "SOKETI_PORT":
				return port
			}
			return tc.env[k]
		}
		code := run([]string{"start"}, getenv, &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), tc.name) {
			t.Errorf("%v: exit %d, stderr %q", tc.env, code, errb.String())
		}
	}
}

// A second process on a node's data directory stops at once, naming the
// variable, instead of failing after bbolt's lock wait with "timeout".
func TestRun_DataDirInUseExits2(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "raft"), 0o750); err != nil {
		t.Fatal(err)
	}
	held, err := bbolt.Open(filepath.Join(dir, "raft", "raft.db"), 0o600, nil) // as a running node holds it
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	ports := freePorts(t, 5)
	env := map[string]string{
		"ADAPTER_DRIVER": "cluster", "CLUSTER_DATA_DIR": dir, "CLUSTER_HOST": "127.0.0.1",
		"CLUSTER_UNICAST_ADDRESSES": `["127.0.0.1"]`, "SOKETI_HOST": "127.0.0.1",
		"SOKETI_PORT": ports[0], "SOKETI_METRICS_SERVER_PORT": ports[1], "CLUSTER_PORT": ports[2],
		"CLUSTER_GOSSIP_PORT": ports[3], "CLUSTER_RAFT_PORT": ports[4],
	}
	var out, errb bytes.Buffer
	start := time.Now()
	code := run([]string{"start"}, func(k string) string { return env[k] }, &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), "CLUSTER_DATA_DIR") || !strings.Contains(errb.String(), "another process") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("took %v to give up", took)
	}
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		out = append(out, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	}
	return out
}
