package validate

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/unit"
)

// maxExposure is the highest `systemd-analyze security` exposure accepted,
// in its 0-100 threshold scale (shown as 0.0-10.0).
const maxExposure = 20

// envFile reads soketi.env: active KEY=value lines, and the commented-out
// examples ("#KEY=value") separately. Values in single or double quotes are
// unquoted as systemd does for an EnvironmentFile.
func envFile(t *testing.T) (active, examples map[string]string) {
	t.Helper()
	f, err := os.Open(repo("deploy", "systemd", "soketi.env"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	active, examples = map[string]string{}, map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		dst := active
		if rest, ok := strings.CutPrefix(line, "#"); ok {
			if k, _, ok := strings.Cut(rest, "="); !ok || strings.ContainsAny(k, " \t") || k == "" {
				continue // prose
			}
			line, dst = rest, examples
		}
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("soketi.env:%d: not KEY=value: %q", n, line)
		}
		if len(v) >= 2 && (v[0] == '\'' || v[0] == '"') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		} else if strings.ContainsAny(v, `"'\`) {
			t.Errorf("soketi.env:%d: %s has quotes or backslashes that systemd would rewrite; wrap the value in single quotes", n, k)
		}
		dst[k] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return active, examples
}

func unitOptions(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open(repo("deploy", "systemd", "soketi.service"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	opts, err := unit.DeserializeOptions(f)
	if err != nil {
		t.Fatalf("soketi.service: %v", err)
	}
	m := map[string][]string{}
	for _, o := range opts {
		m[o.Section+"."+o.Name] = append(m[o.Section+"."+o.Name], o.Value)
	}
	return m
}

func TestSystemdEnvFile(t *testing.T) {
	active, examples := envFile(t)
	for _, set := range []map[string]string{active, examples} {
		names := make([]string, 0, len(set))
		for k := range set {
			names = append(names, k)
		}
		checkEnvNames(t, "soketi.env", names)
	}
	for k, want := range map[string]string{
		"ADAPTER_DRIVER":           "cluster",
		"CLUSTER_EXPECTED_SERVERS": strconv.Itoa(clusterSize),
	} {
		if active[k] != want {
			t.Errorf("%s=%q, want %q", k, active[k], want)
		}
	}
	// The file names every port it needs opened, each at the default.
	checkPortEnv(t, "soketi.env", active)
	for _, d := range codeDefaults {
		if _, ok := active[d.env]; !ok {
			t.Errorf("soketi.env does not list %s=%d: the firewall needs every port", d.env, *d.dst)
		}
	}
	for _, k := range []string{"CLUSTER_TLS_CA", "CLUSTER_TLS_CERT", "CLUSTER_TLS_KEY"} {
		if _, ok := examples[k]; !ok {
			t.Errorf("soketi.env: no commented %s example for an operator's own PKI", k)
		}
	}
	if active["CLUSTER_NODE_ID"] == "" || active["CLUSTER_ADVERTISE_ADDRESS"] == "" {
		t.Error("set CLUSTER_NODE_ID and CLUSTER_ADVERTISE_ADDRESS for the example node")
	}
	key, err := base64.StdEncoding.DecodeString(active["CLUSTER_KEY"])
	if err != nil || (len(key) != 16 && len(key) != 24 && len(key) != 32) {
		t.Errorf("CLUSTER_KEY is not base64 of 16, 24 or 32 bytes")
	}
	if active["CLUSTER_KEY"] != placeholderKey {
		t.Errorf("CLUSTER_KEY is not the documented placeholder (a real key does not belong in the repository)")
	}
	if src, err := os.ReadFile(repo("deploy", "systemd", "soketi.env")); err != nil || !strings.Contains(string(src), "openssl rand -base64 32") {
		t.Errorf("soketi.env does not say how to generate a key (openssl rand -base64 32): %v", err)
	}
	var unicast []string
	if err := json.Unmarshal([]byte(examples["CLUSTER_UNICAST_ADDRESSES"]), &unicast); err != nil || len(unicast) != clusterSize {
		t.Errorf("commented CLUSTER_UNICAST_ADDRESSES example %q: want a JSON array of %d addresses (%v)",
			examples["CLUSTER_UNICAST_ADDRESSES"], clusterSize, err)
	}
	for _, k := range []string{"CLUSTER_UNICAST_ADDRESSES", "CLUSTER_MULTICAST_ADDRESS"} {
		if active[k] != "" {
			t.Errorf("%s is active: the example runs in broadcast mode with the others commented", k)
		}
	}
}

func TestSystemdUnit(t *testing.T) {
	o := unitOptions(t)
	active, _ := envFile(t)
	for key, want := range map[string]string{
		"Service.DynamicUser":     "yes",
		"Service.StateDirectory":  "soketi",
		"Service.ProtectSystem":   "strict",
		"Service.NoNewPrivileges": "yes",
		"Service.Restart":         "on-failure",
		"Service.KillSignal":      "SIGTERM",
		"Service.EnvironmentFile": "/etc/soketi/soketi.env",
		"Service.ExecStart":       "/usr/local/bin/soketi start",
		"Install.WantedBy":        "multi-user.target",
	} {
		if v := o[key]; len(v) != 1 || v[0] != want {
			t.Errorf("%s=%v, want %s", key, v, want)
		}
	}
	if v := o["Service.Environment"]; len(v) != 1 || v[0] != "CLUSTER_DATA_DIR=%S/soketi" {
		t.Errorf("Environment=%v, want the Raft data in the StateDirectory", v)
	}
	if v := o["Service.LimitNOFILE"]; len(v) != 1 {
		t.Error("LimitNOFILE not set")
	} else if n, err := strconv.Atoi(v[0]); err != nil || n < 65536 {
		t.Errorf("LimitNOFILE=%s, want at least 65536", v[0])
	}
	if v := o["Service.TimeoutStopSec"]; len(v) != 1 {
		t.Error("TimeoutStopSec not set")
	} else if d, err := time.ParseDuration(v[0]); err != nil {
		t.Errorf("TimeoutStopSec=%s: write it as Go and systemd both read it, e.g. 20s", v[0])
	} else if need := minStopTime(t, "soketi.env", active["SOKETI_SHUTDOWN_GRACE_PERIOD"]); d <= need {
		t.Errorf("TimeoutStopSec=%s, want more than %s", d, need)
	}
}

// TestSystemdAnalyze runs systemd-analyze verify and security on the unit in
// a scratch root holding the unit, the env file, a stand-in for the binary and
// the host's system units (the targets it orders against).
func TestSystemdAnalyze(t *testing.T) {
	sa := needTool(t, "systemd-analyze", "Debian package systemd")
	var sysUnits string
	for _, d := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		if _, err := os.Stat(filepath.Join(d, "sysinit.target")); err == nil {
			sysUnits = d
			break
		}
	}
	if sysUnits == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("no system units (sysinit.target): CI must install the Debian package systemd")
		}
		t.Skip("no system units (sysinit.target) on this machine: unit not verified")
	}
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"usr/local/bin", "etc/soketi", "etc/systemd/system", "usr/lib/systemd"} {
		must(os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	must(os.WriteFile(filepath.Join(root, "usr/local/bin/soketi"), []byte("#!/bin/sh\n"), 0o755))
	for src, dst := range map[string]string{"soketi.service": "etc/systemd/system/soketi.service", "soketi.env": "etc/soketi/soketi.env"} {
		b, err := os.ReadFile(repo("deploy", "systemd", src))
		must(err)
		must(os.WriteFile(filepath.Join(root, dst), b, 0o644))
	}
	if out, err := exec.Command("cp", "-a", sysUnits, filepath.Join(root, "usr/lib/systemd/system")).CombinedOutput(); err != nil {
		t.Fatalf("copying system units: %v\n%s", err, out)
	}

	// verify exits 0 on directives it ignores, so any output is a failure.
	out, err := exec.Command(sa, "verify", "--man=no", "--root="+root, "soketi.service").CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = exec.Command(sa, "security", "--offline=yes", "--no-pager", "--root="+root,
		"--threshold="+strconv.Itoa(maxExposure), "soketi.service").CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security: exposure above %d/100 or error: %v\n%s", maxExposure, err, out)
	} else if i := strings.LastIndex(string(out), "Overall exposure level"); i >= 0 {
		t.Log(strings.TrimSpace(string(out[i:])))
	}
}
