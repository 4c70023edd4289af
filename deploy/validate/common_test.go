package validate

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Paths and sizes every deployment must agree on. The ports are the
// server's own defaults, read from its code by TestMain (defaults_test.go).
const (
	dataDir     = "/var/lib/soketi"
	clusterSize = 3
	// clusterLeave bounds the cluster leave after the grace periods (cmd/soketi).
	clusterLeave = 3 * time.Second
	// placeholderKey is the example CLUSTER_KEY of the Kubernetes Secret and
	// soketi.env, base64 of "soketi-go-example-key-replace-me": valid, so a
	// try-out runs secured, and public, so it must be replaced.
	placeholderKey = "c29rZXRpLWdvLWV4YW1wbGUta2V5LXJlcGxhY2UtbWU="
)

// needTool returns the path of a tool a check runs. Where it is missing the
// check is skipped with a message, except under CI (CI set), which must
// install it: a check that always skips there hides regressions.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not installed (%s); CI must run this check", name, pkg)
	}
	t.Skipf("%s not installed (%s): not checked", name, pkg)
	return ""
}

// repo returns a path inside the repository (this module is deploy/validate).
func repo(parts ...string) string {
	return filepath.Join(append([]string{"..", ".."}, parts...)...)
}

var (
	knownOnce sync.Once
	known     map[string]bool
	knownErr  error
)

var (
	envToken  = regexp.MustCompile("`(_?[A-Z][A-Z0-9_]*)`")
	bareGroup = regexp.MustCompile(`^(ADAPTER|RATE_LIMITER|CLUSTER)_`)
)

// knownEnv is every variable the server reads, taken from the Configuration
// table of the top-level README: first-column names, with "`_KEY`" after
// "`SOKETI_DEFAULT_APP_ID`" meaning SOKETI_DEFAULT_APP_KEY, and the bare
// adapter, rate-limiter and cluster names also read with the SOKETI_ prefix.
func knownEnv(t *testing.T) map[string]bool {
	t.Helper()
	knownOnce.Do(func() {
		f, err := os.Open(repo("README.md"))
		if err != nil {
			knownErr = err
			return
		}
		defer f.Close()
		known = map[string]bool{}
		inConfig := false
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "## ") {
				inConfig = line == "## Configuration"
				continue
			}
			if !inConfig || !strings.HasPrefix(line, "| `") {
				continue
			}
			first := strings.SplitN(line[1:], "|", 2)[0]
			prev := ""
			for _, m := range envToken.FindAllStringSubmatch(first, -1) {
				name := m[1]
				if strings.HasPrefix(name, "_") && prev != "" {
					name = prev[:strings.LastIndex(prev, "_")] + name
				} else {
					prev = name
				}
				known[name] = true
				if bareGroup.MatchString(name) {
					known["SOKETI_"+name] = true
				}
			}
		}
		knownErr = sc.Err()
	})
	if knownErr != nil {
		t.Fatalf("reading the README configuration table: %v", knownErr)
	}
	for _, must := range []string{"SOKETI_PORT", "SOKETI_DEFAULT_APP_SECRET", "ADAPTER_DRIVER", "CLUSTER_KEY", "CLUSTER_DATA_DIR"} {
		if !known[must] {
			t.Fatalf("README configuration table parsed to %d names without %s", len(known), must)
		}
	}
	return known
}

// checkEnvNames fails for every name the server does not read.
func checkEnvNames(t *testing.T, where string, names []string) {
	t.Helper()
	k := knownEnv(t)
	for _, n := range names {
		if !k[n] {
			t.Errorf("%s: %s is not a variable the server reads (README.md, Configuration)", where, n)
		}
	}
}

// minStopTime is what a graceful stop can take: the socket grace period, the
// webhook grace period, then the cluster leave.
func minStopTime(t *testing.T, where, graceMillis string) time.Duration {
	t.Helper()
	ms := 3000
	if graceMillis != "" {
		var err error
		if ms, err = strconv.Atoi(graceMillis); err != nil {
			t.Fatalf("%s: SOKETI_SHUTDOWN_GRACE_PERIOD=%q: %v", where, graceMillis, err)
		}
	}
	return 2*time.Duration(ms)*time.Millisecond + clusterLeave
}
