package main

import (
	"bytes"
	"net"
	"strconv"
	"strings"
	"testing"
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
