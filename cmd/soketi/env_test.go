package main

import (
	"bytes"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testutil"
)

// badValue is one value of a variable that must stop start-up.
type badValue struct {
	name, value string
	env         map[string]string // other variables the case needs
	want        string            // the part of the refusal that says what is wanted
	secret      bool              // the refusal must not repeat the value
}

// exemptFromBadValues lists the README's variables that no value of makes
// start-up fail, each with the reason.
var exemptFromBadValues = map[string]string{
	"GOGC":                              "read by the Go runtime, not by config.Load: the runtime takes any value it cannot parse as its default, 100",
	"SOKETI_DB_REDIS_USERNAME":          "any text is a user name; a wrong one is Redis's to refuse, at connection time",
	"SOKETI_DB_REDIS_PASSWORD":          "any text is a password; a wrong one is Redis's to refuse, at connection time",
	"SOKETI_DB_REDIS_SENTINEL_PASSWORD": "any text is a password; a wrong one is the Sentinels' to refuse",
}

// envFixtures are what the bad values refer to: free ports and files.
type envFixtures struct {
	port, metricsPort, clusterPort, gossipPort, raftPort string
	dataDir, missing, aFile                              string
	cert, key, otherKey, clusterKey                      string
}

// badValues gives every variable of the README's table at least one value
// that must be refused.
func badValues(fx envFixtures) []badValue {
	ssl := map[string]string{"SOKETI_SSL_CERT": fx.cert, "SOKETI_SSL_KEY": fx.key}
	ctls := map[string]string{"CLUSTER_TLS_CA": fx.cert, "CLUSTER_TLS_CERT": fx.cert, "CLUSTER_TLS_KEY": fx.key,
		"CLUSTER_KEY": fx.clusterKey}
	cluster := map[string]string{"ADAPTER_DRIVER": "cluster"}
	const limit = "want a whole number, -1 for no limit"
	return []badValue{
		{name: "SOKETI_HOST", value: "no such host", want: "want a host name or IP address"},
		{name: "SOKETI_PORT", value: "99999", want: "want a port number 1-65535"},
		{name: "SOKETI_PORT", value: "http", want: "want a port number 1-65535"},
		{name: "SOKETI_PATH_PREFIX", value: "api", want: "must start with /"},
		{name: "SOKETI_MODE", value: "both", want: "want one of full, server, worker"},
		{name: "SOKETI_DEBUG", value: "perhaps", want: "want true or false"},
		{name: "SOKETI_WS_TRANSPORT", value: "threads", want: "want one of eventloop, goroutine"},
		{name: "SOKETI_WS_IO_URING", value: "sometimes", want: "want true or false"},
		{name: "SOKETI_SHUTDOWN_GRACE_PERIOD", value: "-1", want: "want a non-negative number of milliseconds"},
		{name: "SOKETI_SHUTDOWN_GRACE_PERIOD", value: "3s", want: "want a non-negative number of milliseconds"},
		{name: "SOKETI_USER_AUTHENTICATION_TIMEOUT", value: "0", want: "want a positive number of milliseconds"},
		{name: "SOKETI_HTTP_ACCEPT_TRAFFIC_MEMORY_THRESHOLD", value: "0", want: "want a positive number"},
		{name: "SOKETI_HTTP_ACCEPT_TRAFFIC_MEMORY_THRESHOLD", value: "85%", want: "want a number"},
		{name: "SOKETI_HTTP_REQUEST_LIMIT_IN_MB", value: "-1", want: "want a positive number"},

		{name: "SOKETI_SSL_CERT", value: fx.missing, env: ssl, want: "want a PEM certificate file: no such file"},
		{name: "SOKETI_SSL_CERT", value: fx.key, env: ssl, want: "want a PEM certificate file: no such PEM block"},
		{name: "SOKETI_SSL_KEY", value: fx.missing, env: ssl, want: "want a PEM private key file: no such file"},
		{name: "SOKETI_SSL_KEY", value: fx.otherKey, env: ssl, want: "want the private key of SOKETI_SSL_CERT"},
		{name: "SOKETI_SSL_KEY", value: fx.key, want: "SOKETI_SSL_CERT and SOKETI_SSL_KEY must be set together"},
		{name: "SOKETI_SSL_PASS", value: "hunter2", env: ssl, want: "encrypted keys are not supported", secret: true},

		{name: "SOKETI_DEFAULT_APP_ID", value: "my/app", want: "want no /, ?, #, spaces or control characters"},
		{name: "SOKETI_DEFAULT_APP_KEY", value: "app key", want: "want no /, ?, #, spaces or control characters"},
		{name: "SOKETI_DEFAULT_APP_SECRET", value: "app-secret\n", want: "want printable text", secret: true},
		{name: "SOKETI_DEFAULT_APP_MAX_CONNS", value: "many", want: "want a whole number, -1 or 0 for no limit"},
		{name: "SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES", value: "perhaps", want: "want true or false"},
		{name: "SOKETI_DEFAULT_APP_ENABLE_SUBSCRIPTION_COUNT", value: "often", want: "want true or false"},
		{name: "SOKETI_DEFAULT_APP_ENABLED", value: "maybe", want: "want true or false"},
		{name: "SOKETI_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC", value: "fast", want: limit},
		{name: "SOKETI_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC", value: "2.5", want: limit},
		{name: "SOKETI_DEFAULT_APP_MAX_READ_REQ_PER_SEC", value: "true", want: limit},
		{name: "SOKETI_DEFAULT_APP_USER_AUTHENTICATION", value: "required", want: "want true or false"},
		{name: "SOKETI_DEFAULT_APP_WEBHOOKS", value: `{"url":"http://127.0.0.1:3001"}`, want: "want a JSON array of webhook objects"},
		{name: "SOKETI_DEFAULT_APP_WEBHOOKS", value: `[{"event_types":["channel_occupied"]}]`, want: "needs a url"},
		{name: "SOKETI_DEFAULT_APP_WEBHOOKS", value: `[{"url":"localhost:3001","event_types":["channel_occupied"]}]`,
			want: "want an absolute http:// or https:// URL"},
		{name: "SOKETI_DEFAULT_APP_WEBHOOKS", value: `[{"url":"http://127.0.0.1:3001","event_types":["channel_created"]}]`,
			want: "want one of channel_occupied"},
		{name: "SOKETI_APP_MANAGER_DRIVER", value: "mysql", want: "use array"},

		{name: "SOKETI_CHANNEL_LIMITS_MAX_NAME_LENGTH", value: "0", want: "want a positive number"},
		{name: "SOKETI_EVENT_MAX_CHANNELS_AT_ONCE", value: "-1", want: "want a positive number"},
		{name: "SOKETI_EVENT_MAX_NAME_LENGTH", value: "long", want: "want a number"},
		{name: "SOKETI_EVENT_MAX_SIZE_IN_KB", value: "0", want: "want a positive number"},
		{name: "SOKETI_EVENT_MAX_BATCH_SIZE", value: "1.5", want: "want a whole number"},
		{name: "SOKETI_PRESENCE_MAX_MEMBERS", value: "0", want: "want a positive number"},
		{name: "SOKETI_PRESENCE_MAX_MEMBER_SIZE", value: "2KB", want: "want a number"},
		{name: "SOKETI_CHANNEL_CACHE_TTL", value: "-2", want: "want a number of seconds, or -1 or 0"},
		{name: "SOKETI_CHANNEL_CACHE_TTL", value: "1h", want: "want a number of seconds, or -1 or 0"},
		{name: "SOKETI_WEBHOOKS_BATCHING", value: "sometimes", want: "want true or false"},
		{name: "SOKETI_WEBHOOKS_BATCHING_DURATION", value: "0", want: "want a positive number of milliseconds"},

		{name: "SOKETI_METRICS_ENABLED", value: "perhaps", want: "want true or false"},
		{name: "SOKETI_METRICS_HOST", value: "not a host", want: "want a host name or IP address"},
		{name: "SOKETI_METRICS_SERVER_PORT", value: "0", want: "want a port number 1-65535"},
		{name: "SOKETI_METRICS_SERVER_PORT", value: fx.port, want: "must differ from SOKETI_PORT"}, // served even with metrics off
		{name: "SOKETI_METRICS_PROMETHEUS_PREFIX", value: "soketi-", want: "Prometheus metric name prefix"},
		{name: "SOKETI_QUEUE_DRIVER", value: "sqs", want: "use sync or redis"},
		{name: "SOKETI_QUEUE_DRIVER", value: "bull", want: "want one of sync, redis"},
		{name: "SOKETI_CACHE_DRIVER", value: "memcached", want: "want one of memory, redis"},

		{name: "ADAPTER_DRIVER", value: "nats", want: "use local or cluster or redis"},
		{name: "SOKETI_DB_REDIS_HOST", value: "redis host", want: "want a host name or address"},
		{name: "SOKETI_DB_REDIS_HOST", value: "rediss://cache:99999", want: "the port in"},
		{name: "SOKETI_DB_REDIS_PORT", value: "0", want: "want a port number 1-65535"},
		{name: "SOKETI_DB_REDIS_DB", value: "-1", want: "want a database number"},
		{name: "SOKETI_DB_REDIS_KEY_PREFIX", value: "a\x01", want: "printable text"},
		{name: "SOKETI_DB_REDIS_TLS", value: "perhaps", want: "want true or false"},
		{name: "SOKETI_DB_REDIS_TLS_CA", value: fx.missing, want: "want a PEM file of CA certificates: no such file"},
		{name: "SOKETI_DB_REDIS_TLS_CA", value: fx.key, want: "want a PEM file of CA certificates: no such PEM block"},
		{name: "SOKETI_DB_REDIS_SENTINELS", value: `[{"host":"s1"}]`, want: "want a JSON array of"},
		{name: "SOKETI_DB_REDIS_SENTINELS", value: "s1:26379", want: "want a JSON array of"},
		{name: "SOKETI_DB_REDIS_INSTANCE_NAME", value: strings.Repeat("m", 300), want: "printable text"},
		{name: "SOKETI_DB_REDIS_CLUSTER_NODES", value: `["n1"]`, want: "want a JSON array of"},
		{name: "SOKETI_ADAPTER_REDIS_PREFIX", value: "p\n", want: "printable text"},
		{name: "SOKETI_ADAPTER_REDIS_CLUSTER_MODE", value: "sometimes", want: "want true or false"},
		{name: "SOKETI_RATE_LIMITER_REDIS_CLUSTER_MODE", value: "sometimes", want: "want true or false"},
		{name: "SOKETI_CACHE_REDIS_CLUSTER_MODE", value: "sometimes", want: "want true or false"},
		{name: "SOKETI_ADAPTER_REDIS_REQUESTS_TIMEOUT", value: "0", want: "want a positive number of milliseconds"},
		{name: "ADAPTER_DRIVER", value: "kafka", want: "want one of local, cluster"},
		{name: "RATE_LIMITER_DRIVER", value: "memcached", want: "want one of local, cluster, redis"},
		{name: "CLUSTER_HOST", value: "::1", want: "want an IPv4 address"},
		{name: "CLUSTER_HOST", value: "localhost", want: "want an IPv4 address"},
		{name: "CLUSTER_PORT", value: "0", want: "want a port number 1-65535"},
		{name: "CLUSTER_PREFIX", value: strings.Repeat("a", 65), want: "want at most 64 bytes of printable text"},
		{name: "CLUSTER_KEEPALIVE_INTERVAL", value: "0", want: "want a positive number of milliseconds"},
		{name: "CLUSTER_CHECK_INTERVAL", value: "-500", want: "want a non-negative number of milliseconds"},
		{name: "CLUSTER_NODE_TIMEOUT", value: "soon", want: "want a non-negative number of milliseconds"},
		{name: "CLUSTER_NODE_TIMEOUT", value: "100", env: cluster, want: "want at least CLUSTER_CHECK_INTERVAL"},
		{name: "CLUSTER_MASTER_TIMEOUT", value: "0", want: "want a positive number of milliseconds"},
		{name: "CLUSTER_BROADCAST_ADDRESS", value: "255.255.255", want: "want an IPv4 address"},
		{name: "CLUSTER_MULTICAST_ADDRESS", value: "10.0.0.1", want: "want an IPv4 multicast group address"},
		{name: "CLUSTER_MULTICAST_ADDRESS", value: "ff02::1", want: "want an IPv4 address"},
		{name: "CLUSTER_UNICAST_ADDRESSES", value: "[not json", want: "want a JSON array of strings"},
		{name: "CLUSTER_UNICAST_ADDRESSES", value: "10.0.0.1,10.0.0.2", want: "want a JSON array of strings"},
		{name: "CLUSTER_ADVERTISE_ADDRESS", value: "0.0.0.0", want: "want a specific IPv4 address"},
		{name: "CLUSTER_ADVERTISE_ADDRESS", value: "node-1", want: "want an IPv4 address"},
		{name: "CLUSTER_GOSSIP_PORT", value: "65536", want: "want a port number 0-65535"},
		{name: "CLUSTER_GOSSIP_PORT", value: fx.clusterPort, env: cluster, want: "must differ from CLUSTER_PORT"},
		{name: "CLUSTER_NODE_ID", value: strings.Repeat("n", 129), want: "want at most 128 bytes of printable text"},
		{name: "CLUSTER_NODE_ID", value: "node\t1", want: "want at most 128 bytes of printable text"},
		{name: "CLUSTER_KEY", value: "c2hvcnQ=", want: "want a base64-encoded key of 16, 24 or 32 bytes", secret: true},
		{name: "CLUSTER_TLS_CA", value: fx.cert, want: "must be set together"},
		{name: "CLUSTER_TLS_CA", value: fx.missing, env: ctls, want: "want a PEM file of CA certificates: no such file"},
		{name: "CLUSTER_TLS_CA", value: fx.key, env: ctls, want: "want a PEM file of CA certificates: no such PEM block"},
		{name: "CLUSTER_TLS_CERT", value: fx.missing, env: ctls, want: "want a PEM certificate file: no such file"},
		{name: "CLUSTER_TLS_KEY", value: fx.missing, env: ctls, want: "want a PEM private key file: no such file"},
		{name: "CLUSTER_TLS_KEY", value: fx.otherKey, env: ctls, want: "want the private key of CLUSTER_TLS_CERT"},
		{name: "CLUSTER_RAFT_PORT", value: "-1", want: "want a port number 0-65535"},
		{name: "CLUSTER_RAFT_PORT", value: fx.gossipPort, env: cluster, want: "must differ from CLUSTER_GOSSIP_PORT"},
		{name: "CLUSTER_DATA_DIR", value: fx.aFile, env: cluster, want: "is a file"},
		{name: "CLUSTER_DATA_DIR", value: filepath.Join(fx.aFile, "soketi-data"), env: cluster, want: "is a file"},
		{name: "CLUSTER_EXPECTED_SERVERS", value: "0", want: "want a positive number"},
		{name: "CLUSTER_REAP_DELAY", value: "0", want: "want a positive number of milliseconds"},
		{name: "ADAPTER_CLUSTER_REQUESTS_TIMEOUT", value: "0", want: "want a positive number of milliseconds"},
	}
}

// Every variable of the README's table has a bad value that stops start-up
// with exit 2 and one line naming the variable and what it wants, before any
// port is bound.
func TestRun_EveryREADMEVariableRefusesABadValue(t *testing.T) {
	dir := t.TempDir()
	ports := freePorts(t, 5)
	fx := envFixtures{
		port: ports[0], metricsPort: ports[1], clusterPort: ports[2], gossipPort: ports[3], raftPort: ports[4],
		dataDir: filepath.Join(dir, "data"), missing: filepath.Join(dir, "missing.pem"), aFile: filepath.Join(dir, "a-file"),
		clusterKey: "c29rZXRpLWNtZC10ZXN0LWtleS1vZi0zMi1ieXRlcyE=",
	}
	if err := os.WriteFile(fx.aFile, []byte("not a directory\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fx.cert, fx.key = testutil.WriteKeyPair(t, dir, "node-1")
	_, fx.otherKey = testutil.WriteKeyPair(t, dir, "node-2")

	// A value wrongly accepted starts the server; the test stops it with
	// SIGINT, which it catches itself so that the signal cannot end the
	// test binary.
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT)
	defer signal.Stop(sigc)

	for _, tc := range badValues(fx) {
		env := map[string]string{ // everything a wrongly started node would bind, on loopback and free ports
			"SOKETI_HOST": "127.0.0.1", "SOKETI_PORT": fx.port,
			"SOKETI_METRICS_HOST": "127.0.0.1", "SOKETI_METRICS_SERVER_PORT": fx.metricsPort,
			"CLUSTER_HOST": "127.0.0.1", "CLUSTER_PORT": fx.clusterPort, "CLUSTER_GOSSIP_PORT": fx.gossipPort,
			"CLUSTER_RAFT_PORT": fx.raftPort, "CLUSTER_DATA_DIR": fx.dataDir,
		}
		for k, v := range tc.env {
			env[k] = v
		}
		env[tc.name] = tc.value

		var out, errb bytes.Buffer
		done := make(chan int, 1)
		go func() { done <- run([]string{"start"}, func(k string) string { return env[k] }, &out, &errb) }()
		var code int
		select {
		case code = <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s=%q: accepted, the server started", tc.name, tc.value)
			_ = syscall.Kill(os.Getpid(), syscall.SIGINT)
			code = <-done
			continue
		}
		lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
		t.Logf("%s", lines[0])
		switch {
		case code != 2 || len(lines) != 1 || !strings.Contains(lines[0], tc.name):
			t.Errorf("%s=%q: exit %d, stderr %q; want exit 2 and one line naming %s", tc.name, tc.value, code, errb.String(), tc.name)
		case !strings.Contains(lines[0], tc.want):
			t.Errorf("%s=%q: stderr %q does not say %q", tc.name, tc.value, lines[0], tc.want)
		case tc.secret && strings.Contains(lines[0], strings.TrimSpace(tc.value)):
			t.Errorf("%s: the refusal repeats the secret value: %q", tc.name, lines[0])
		}
		for _, p := range []string{fx.port, fx.metricsPort} {
			probe, err := net.Listen("tcp", "127.0.0.1:"+p)
			if err != nil {
				t.Fatalf("%s=%q: port %s was bound: %v", tc.name, tc.value, p, err)
			}
			probe.Close()
		}
	}
}

// A variable added to the README's table needs a bad value above, or an
// exemption saying why it has none.
func TestREADMEVariablesAllHaveABadValueTest(t *testing.T) {
	names := readmeVariables(t)
	if len(names) < 50 {
		t.Fatalf("found only %d variables in README.md's table: %v", len(names), names)
	}
	tested := map[string]bool{}
	for _, tc := range badValues(envFixtures{}) {
		tested[tc.name] = true
	}
	inREADME := map[string]bool{}
	for _, n := range names {
		inREADME[n] = true
		reason, exempt := exemptFromBadValues[n]
		switch {
		case tested[n] && exempt:
			t.Errorf("%s has bad values and an exemption; drop one", n)
		case exempt && strings.TrimSpace(reason) == "":
			t.Errorf("%s is exempt without a reason", n)
		case !tested[n] && !exempt:
			t.Errorf("README variable %s has no bad value in badValues and no reason in exemptFromBadValues", n)
		}
	}
	for n := range exemptFromBadValues {
		if !inREADME[n] {
			t.Errorf("exemption for %s, which README.md's table no longer lists", n)
		}
	}
}

// readmeVariables returns the variables of README.md's configuration table,
// expanding rows such as "`SOKETI_DEFAULT_APP_ID`, `_KEY`, `_SECRET`".
func readmeVariables(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	code := regexp.MustCompile("`([^`]+)`")
	envName := regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)
	var names []string
	inTable := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "| Variable |") {
			inTable = true
			continue
		}
		if !inTable {
			continue
		}
		if !strings.HasPrefix(line, "|") {
			break
		}
		cells := strings.Split(line, "|")
		if len(cells) < 3 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue // the |---| row
		}
		prefix := ""
		for _, m := range code.FindAllStringSubmatch(cells[1], -1) {
			n := m[1]
			switch {
			case envName.MatchString(n):
				names = append(names, n)
				if i := strings.LastIndex(n, "_"); prefix == "" && i > 0 {
					prefix = n[:i]
				}
			case strings.HasPrefix(n, "_") && prefix != "":
				names = append(names, prefix+n)
			} // anything else is a file key, like `wsTransport`
		}
	}
	return names
}
