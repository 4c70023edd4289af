package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
		"SOKETI_PORT":                               "7001",
		"SOKETI_DEFAULT_APP_ID":                     "123",
		"SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES": "true",
		"SOKETI_DEFAULT_APP_MAX_CONNS":              "5",
		"SOKETI_DEFAULT_APP_WEBHOOKS":               `[{"url":"http://127.0.0.1:3001","event_types":["channel_occupied"]}]`,
		"ADAPTER_DRIVER":                            "cluster",
		"SOKETI_RATE_LIMITER_DRIVER":                "cluster",
		"CLUSTER_UNICAST_ADDRESSES":                 `["198.18.0.2","198.18.0.3:11002","soketi-2.soketi"]`,
		"CLUSTER_NODE_TIMEOUT":                      "3000",
		"CLUSTER_REAP_DELAY":                        "1500",
		"SOKETI_CLUSTER_PORT":                       "12000",
		"CLUSTER_PORT":                              "13000", // the SOKETI_ name wins
		"SOKETI_PRESENCE_MAX_MEMBERS":               "7",
		"SOKETI_EVENT_MAX_SIZE_IN_KB":               "0.5",
		"SOKETI_SHUTDOWN_GRACE_PERIOD":              "100",
	}))
	if err != nil {
		t.Fatal(err)
	}
	a := c.Apps[0]
	if c.Port != 7001 || a.ID != "123" || !a.EnableClientMessages || a.MaxConnections != 5 || len(a.Webhooks) != 1 {
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
		"ADAPTER_DRIVER":              "redis",
		"SOKETI_ADAPTER_DRIVER":       "bogus",
		"CLUSTER_UNICAST_ADDRESSES":   "10.0.0.1,10.0.0.2",
		"CLUSTER_MULTICAST_ADDRESS":   "10.0.0.1",
		"SOKETI_METRICS_ENABLED":      "perhaps",
		"CLUSTER_NODE_TIMEOUT":        "-5",
		"SOKETI_MODE":                 "both",
		"CLUSTER_KEY":                 "short",
		"SOKETI_PATH_PREFIX":          "nope",
		"SOKETI_DEFAULT_APP_WEBHOOKS": `{"url":"x"}`,
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
