package config

import (
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testutil"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoad_Defaults(t *testing.T) {
	c, err := Load("", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 6001 || c.Host != "0.0.0.0" || c.AdapterDriver != "local" || c.Cluster.Port != 11002 ||
		c.Metrics.Port != 9601 || c.Limits.MaxPresenceMembersPerChannel != 100 || c.ShutdownGracePeriod != 3*time.Second {
		t.Fatalf("defaults = %+v", c)
	}
	if len(c.Apps) != 1 || c.Apps[0].ID != "app-id" || c.Apps[0].Key != "app-key" || c.Apps[0].Secret != "app-secret" ||
		!c.Apps[0].Enabled || c.Apps[0].EnableClientMessages || c.Apps[0].MaxConnections != -1 {
		t.Fatalf("default app = %+v", c.Apps[0])
	}
}

func TestLoad_Environment(t *testing.T) {
	c, err := Load("", env(map[string]string{
		"SOKETI_PORT":                                  "7001",
		"SOKETI_DEFAULT_APP_ID":                        "123",
		"SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES":    "true",
		"SOKETI_DEFAULT_APP_ENABLE_SUBSCRIPTION_COUNT": "true",
		"SOKETI_DEFAULT_APP_MAX_CONNS":                 "5",
		"SOKETI_DEFAULT_APP_WEBHOOKS":                  `[{"url":"http://127.0.0.1:3001","event_types":["channel_occupied"]}]`,
		"ADAPTER_DRIVER":                               "cluster",
		"SOKETI_RATE_LIMITER_DRIVER":                   "cluster",
		"CLUSTER_UNICAST_ADDRESSES":                    `["198.18.0.2","198.18.0.3:11002","soketi-2.soketi"]`,
		"CLUSTER_NODE_TIMEOUT":                         "3000",
		"CLUSTER_REAP_DELAY":                           "1500",
		"SOKETI_CLUSTER_PORT":                          "12000",
		"CLUSTER_PORT":                                 "13000", // the SOKETI_ name wins
		"SOKETI_PRESENCE_MAX_MEMBERS":                  "7",
		"SOKETI_EVENT_MAX_SIZE_IN_KB":                  "0.5",
		"SOKETI_SHUTDOWN_GRACE_PERIOD":                 "100",
	}))
	if err != nil {
		t.Fatal(err)
	}
	a := c.Apps[0]
	if c.Port != 7001 || a.ID != "123" || !a.EnableClientMessages || !a.EnableSubscriptionCount || a.MaxConnections != 5 || len(a.Webhooks) != 1 {
		t.Fatalf("env not applied: %+v %+v", c, a)
	}
	if c.AdapterDriver != "cluster" || c.RateLimiterDriver != "cluster" || c.Cluster.Port != 12000 ||
		len(c.Cluster.UnicastAddresses) != 3 || c.Cluster.NodeTimeout != 3*time.Second ||
		c.Cluster.ReapDelay != 1500*time.Millisecond {
		t.Fatalf("cluster env not applied: %+v", c.Cluster)
	}
	if a.MaxPresenceMembersPerChannel != 7 || a.MaxEventPayloadInKB != 0.5 || c.ShutdownGracePeriod != 100*time.Millisecond {
		t.Fatalf("limits not inherited: %+v", a)
	}
}

func TestLoad_InvalidValuesNameTheVariable(t *testing.T) {
	for name, val := range map[string]string{
		"SOKETI_PORT":                 "70000",
		"ADAPTER_DRIVER":              "nats",
		"SOKETI_ADAPTER_DRIVER":       "bogus",
		"CLUSTER_UNICAST_ADDRESSES":   "10.0.0.1,10.0.0.2",
		"CLUSTER_MULTICAST_ADDRESS":   "10.0.0.1",
		"SOKETI_METRICS_ENABLED":      "perhaps",
		"CLUSTER_NODE_TIMEOUT":        "-5",
		"SOKETI_MODE":                 "both",
		"CLUSTER_KEY":                 "short",
		"SOKETI_PATH_PREFIX":          "nope",
		"SOKETI_DEFAULT_APP_WEBHOOKS": `{"url":"x"}`,
		// Refused here since the environment was checked field by field.
		"SOKETI_DEFAULT_APP_ID":                         "a/b",
		"SOKETI_DEFAULT_APP_KEY":                        "k?x",
		"SOKETI_DEFAULT_APP_SECRET":                     "s\n",
		"SOKETI_DEFAULT_APP_MAX_CONNS":                  "many",
		"SOKETI_DEFAULT_APP_MAX_READ_REQ_PER_SEC":       "true",
		"SOKETI_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC":  "2.5",
		"SOKETI_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC": "fast",
		"SOKETI_DEFAULT_APP_ENABLED":                    "maybe",
		"SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES":     "perhaps",
		"SOKETI_DEFAULT_APP_USER_AUTHENTICATION":        "required",
		"SOKETI_SSL_PASS":                               "hunter2",
		"SOKETI_METRICS_PROMETHEUS_PREFIX":              "soketi-",
		"SOKETI_CHANNEL_CACHE_TTL":                      "-2",
		"CLUSTER_HOST":                                  "::",
		"CLUSTER_BROADCAST_ADDRESS":                     "ff02::1",
		"CLUSTER_ADVERTISE_ADDRESS":                     "0.0.0.0",
		"CLUSTER_PREFIX":                                strings.Repeat("p", 65),
		"CLUSTER_NODE_ID":                               "node\x00",
	} {
		_, err := Load("", env(map[string]string{name: val}))
		var ce *Error
		if !errors.As(err, &ce) || ce.Name != name {
			t.Errorf("%s=%s: err = %v, want a config error naming it", name, val, err)
		}
	}
}

func TestLoad_FileWithDotPathsAndAliases(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	err := os.WriteFile(path, []byte(`{
		"port": 6002,
		"debug": true,
		"cluster.port": 11005,
		"presence.maxMembersPerChannel": 50,
		"appManager.array.apps": [
			{"id": "a1", "key": "k1", "secret": "s1", "max_connections": "10", "enable_client_messages": 1,
			 "MaxPresenceMembersPerChannel": 3, "webhooks": "[{\"url\":\"http://127.0.0.1:1\",\"event_types\":[\"client_event\"]}]"},
			{"AppId": 2, "AppKey": "k2", "AppSecret": "s2", "enabled": false}
		],
		"appManager.array.apps.1.maxEventBatchSize": 4
	}`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load(path, env(map[string]string{"SOKETI_PORT": "6003", "SOKETI_DEFAULT_APP_SECRET": "env-secret"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 6003 || !c.Debug || c.Cluster.Port != 11005 {
		t.Fatalf("file/env order wrong: %+v", c)
	}
	a1, a2 := c.Apps[0], c.Apps[1]
	if a1.ID != "a1" || a1.Secret != "env-secret" || a1.MaxConnections != 10 || !a1.EnableClientMessages ||
		a1.MaxPresenceMembersPerChannel != 3 || len(a1.Webhooks) != 1 {
		t.Fatalf("app 1 = %+v", a1)
	}
	if a2.ID != "2" || a2.Key != "k2" || a2.Enabled || a2.MaxPresenceMembersPerChannel != 50 || a2.MaxEventBatchSize != 4 {
		t.Fatalf("app 2 = %+v", a2)
	}
}

func TestLoad_BadFile(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	_ = os.WriteFile(bad, []byte(`{"port":`), 0o600)
	for _, p := range []string{bad, filepath.Join(dir, "missing.json")} {
		if _, err := Load(p, env(nil)); err == nil || !strings.Contains(err.Error(), "--config") {
			t.Errorf("%s: err = %v", p, err)
		}
	}
	dup := filepath.Join(dir, "dup.json")
	_ = os.WriteFile(dup, []byte(`{"appManager.array.apps":[{"id":"a","key":"k","secret":"s"},{"id":"a","key":"k2","secret":"s"}]}`), 0o600)
	if _, err := Load(dup, env(nil)); err == nil || !strings.Contains(err.Error(), "duplicate") {
		t.Errorf("duplicate ids: err = %v", err)
	}
}

// The default app's variables keep soketi's meanings: -1 (and 0 for
// connections) is no limit, booleans are the usual spellings.
func TestLoad_DefaultAppEnvValues(t *testing.T) {
	c, err := Load("", env(map[string]string{
		"SOKETI_DEFAULT_APP_ID":                         "123",
		"SOKETI_DEFAULT_APP_MAX_CONNS":                  "0",
		"SOKETI_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC": "-1",
		"SOKETI_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC":  "-5",
		"SOKETI_DEFAULT_APP_MAX_READ_REQ_PER_SEC":       "20",
		"SOKETI_DEFAULT_APP_ENABLED":                    "no",
		"SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES":     "1",
		"SOKETI_DEFAULT_APP_USER_AUTHENTICATION":        "true",
		"SOKETI_DEFAULT_APP_WEBHOOKS":                   `[{"url":"https://example.com/h","event_types":["cache_miss","client_event"]}]`,
	}))
	if err != nil {
		t.Fatal(err)
	}
	a := c.Apps[0]
	if a.ID != "123" || a.MaxConnections != 0 || a.MaxBackendEventsPerSecond != -1 || a.MaxClientEventsPerSecond != -5 ||
		a.MaxReadRequestsPerSecond != 20 || a.Enabled || !a.EnableClientMessages || !a.EnableUserAuthentication ||
		len(a.Webhooks) != 1 {
		t.Fatalf("app = %+v", a)
	}
}

// A refusal of a secret does not print it.
func TestLoad_RefusalsDoNotRepeatSecrets(t *testing.T) {
	for name, val := range map[string]string{
		"SOKETI_SSL_PASS":           "hunter2",
		"CLUSTER_KEY":               "c2hvcnQtc2VjcmV0",
		"SOKETI_DEFAULT_APP_SECRET": "top-secret\r\n",
	} {
		_, err := Load("", env(map[string]string{name: val}))
		if err == nil || !strings.Contains(err.Error(), name) || strings.Contains(err.Error(), strings.TrimSpace(val)) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

// soketi's -1 and 0 keep a cache channel's event until the next one.
func TestLoad_ChannelCacheTTL(t *testing.T) {
	for val, want := range map[string]time.Duration{"-1": NeverExpires, "0": NeverExpires, "60": time.Minute, "0.5": 500 * time.Millisecond} {
		c, err := Load("", env(map[string]string{"SOKETI_CHANNEL_CACHE_TTL": val}))
		if err != nil || c.ChannelCacheTTL != want {
			t.Errorf("%s: %v, %v; want %v", val, c, err, want)
		}
	}
}

// Two of the node's sockets on one port are refused before binding; the
// cluster's count only with the cluster adapter.
func TestLoad_PortCollisions(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		name string // "" when accepted
	}{
		{map[string]string{"SOKETI_METRICS_SERVER_PORT": "6001"}, "SOKETI_METRICS_SERVER_PORT"}, // metrics off: still served
		{map[string]string{"SOKETI_METRICS_SERVER_PORT": "6001", "SOKETI_METRICS_HOST": "127.0.0.1"}, "SOKETI_METRICS_SERVER_PORT"},
		{map[string]string{"SOKETI_METRICS_SERVER_PORT": "6001", "SOKETI_METRICS_HOST": "127.0.0.1", "SOKETI_HOST": "127.0.0.2"}, ""},
		{map[string]string{"CLUSTER_GOSSIP_PORT": "11002"}, ""},
		{map[string]string{"ADAPTER_DRIVER": "cluster", "CLUSTER_GOSSIP_PORT": "11002"}, "CLUSTER_GOSSIP_PORT"},
		{map[string]string{"ADAPTER_DRIVER": "cluster", "CLUSTER_RAFT_PORT": "11003"}, "CLUSTER_RAFT_PORT"},
		{map[string]string{"ADAPTER_DRIVER": "cluster", "CLUSTER_RAFT_PORT": "6001"}, "CLUSTER_RAFT_PORT"},
		{map[string]string{"ADAPTER_DRIVER": "cluster", "CLUSTER_RAFT_PORT": "11002"}, ""}, // UDP and TCP
		{map[string]string{"ADAPTER_DRIVER": "cluster", "CLUSTER_RAFT_PORT": "0", "CLUSTER_GOSSIP_PORT": "0"}, ""},
	} {
		tc.env["CLUSTER_DATA_DIR"] = t.TempDir()
		_, err := Load("", env(tc.env))
		var ce *Error
		if (tc.name == "") != (err == nil) || (err != nil && (!errors.As(err, &ce) || ce.Name != tc.name)) {
			t.Errorf("%v: err = %v, want one naming %q", tc.env, err, tc.name)
		}
	}
}

func TestLoad_ClusterChecksNeedTheClusterAdapter(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	bad := map[string]string{"CLUSTER_NODE_TIMEOUT": "100", "CLUSTER_DATA_DIR": file}
	if _, err := Load("", env(bad)); err != nil {
		t.Fatalf("local adapter: %v", err)
	}
	for _, tc := range []struct{ name, val string }{
		{"CLUSTER_NODE_TIMEOUT", "100"},
		{"CLUSTER_DATA_DIR", file},
		{"CLUSTER_DATA_DIR", filepath.Join(file, "sub", "dir")},
	} {
		e := map[string]string{"ADAPTER_DRIVER": "cluster", "CLUSTER_DATA_DIR": dir, tc.name: tc.val}
		_, err := Load("", env(e))
		var ce *Error
		if !errors.As(err, &ce) || ce.Name != tc.name {
			t.Errorf("%s=%s: err = %v", tc.name, tc.val, err)
		}
	}
	for _, ok := range []string{dir, filepath.Join(dir, "not", "yet")} {
		if _, err := Load("", env(map[string]string{"ADAPTER_DRIVER": "cluster", "CLUSTER_DATA_DIR": ok})); err != nil {
			t.Errorf("CLUSTER_DATA_DIR=%s: %v", ok, err)
		}
	}
}

// The TLS files are read at load time, and a refusal names the one at fault.
func TestLoad_TLSFiles(t *testing.T) {
	dir := t.TempDir()
	cert, key := testutil.WriteKeyPair(t, dir, "a")
	_, other := testutil.WriteKeyPair(t, dir, "b")
	enc := filepath.Join(dir, "enc.key")
	_ = os.WriteFile(enc, pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), 0o600)
	missing := filepath.Join(dir, "missing.pem")
	if _, err := Load("", env(map[string]string{"SOKETI_SSL_CERT": cert, "SOKETI_SSL_KEY": key})); err != nil {
		t.Fatalf("good pair: %v", err)
	}
	ck := "c29rZXRpLWNtZC10ZXN0LWtleS1vZi0zMi1ieXRlcyE="
	for _, tc := range []struct {
		env  map[string]string
		name string
	}{
		{map[string]string{"SOKETI_SSL_CERT": missing, "SOKETI_SSL_KEY": key}, "SOKETI_SSL_CERT"},
		{map[string]string{"SOKETI_SSL_CERT": key, "SOKETI_SSL_KEY": key}, "SOKETI_SSL_CERT"},
		{map[string]string{"SOKETI_SSL_CERT": cert, "SOKETI_SSL_KEY": cert}, "SOKETI_SSL_KEY"},
		{map[string]string{"SOKETI_SSL_CERT": cert, "SOKETI_SSL_KEY": other}, "SOKETI_SSL_KEY"},
		{map[string]string{"SOKETI_SSL_CERT": cert, "SOKETI_SSL_KEY": enc}, "SOKETI_SSL_KEY"},
		{map[string]string{"CLUSTER_TLS_CA": missing, "CLUSTER_TLS_CERT": cert, "CLUSTER_TLS_KEY": key, "CLUSTER_KEY": ck}, "CLUSTER_TLS_CA"},
		{map[string]string{"CLUSTER_TLS_CA": cert, "CLUSTER_TLS_CERT": missing, "CLUSTER_TLS_KEY": key, "CLUSTER_KEY": ck}, "CLUSTER_TLS_CERT"},
		{map[string]string{"CLUSTER_TLS_CA": cert, "CLUSTER_TLS_CERT": cert, "CLUSTER_TLS_KEY": other, "CLUSTER_KEY": ck}, "CLUSTER_TLS_KEY"},
	} {
		_, err := Load("", env(tc.env))
		var ce *Error
		if !errors.As(err, &ce) || ce.Name != tc.name {
			t.Errorf("%v: err = %v, want one naming %s", tc.env, err, tc.name)
		}
	}
	good := map[string]string{"CLUSTER_TLS_CA": cert, "CLUSTER_TLS_CERT": cert, "CLUSTER_TLS_KEY": key, "CLUSTER_KEY": ck}
	if _, err := Load("", env(good)); err != nil {
		t.Fatalf("good cluster files: %v", err)
	}
}

// The config file's apps get the rules of the default app's variables,
// named by their key.
func TestLoad_FileAppsChecked(t *testing.T) {
	dir := t.TempDir()
	for body, name := range map[string]string{
		`{"appManager.array.apps":[{"id":"a b","key":"k","secret":"s"}]}`:                                   "appManager.array.apps.0.id",
		`{"appManager.array.apps":[{"id":"a","key":"k","secret":"s"},{"id":"b","key":"k/2","secret":"s"}]}`: "appManager.array.apps.1.key",
		`{"appManager.array.apps":[{"id":"a","key":"k","secret":"s\n"}]}`:                                   "appManager.array.apps.0.secret",
		`{"appManager.array.apps":[{"id":"a","key":"k","secret":"s","webhooks":[{"url":"ftp://x/"}]}]}`:     "appManager.array.apps.0.webhooks",
	} {
		path := filepath.Join(dir, "c.json")
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path, env(nil))
		var ce *Error
		if !errors.As(err, &ce) || ce.Name != name {
			t.Errorf("%s: err = %v, want one naming %s", body, err, name)
		}
	}
}
