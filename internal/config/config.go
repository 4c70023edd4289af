// Package config loads the server's configuration the way soketi does:
// built-in defaults, then a JSON file of dot-path keys, then the environment.
package config

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/soketi-go/soketi/pkg/pusher"
)

// Config is the whole server configuration.
type Config struct {
	Host       string
	Port       int
	PathPrefix string
	Mode       string // full, server or worker
	Debug      bool
	// WSTransport serves WebSocket connections: "eventloop" (epoll
	// pollers, no goroutine per idle connection) or "goroutine" (one
	// read goroutine per connection). TLS connections always use the
	// goroutine transport.
	WSTransport string
	// WSIOUring lets the event loop send a fan-out's frames through an
	// io_uring, one system call for many sockets, where the kernel permits.
	WSIOUring bool

	AcceptTrafficMemoryThreshold float64
	ShutdownGracePeriod          time.Duration
	UserAuthenticationTimeout    time.Duration
	RequestLimitInMB             float64

	SSL SSL

	AppManagerDriver string
	Apps             []*pusher.App
	Limits           pusher.AppLimits

	AdapterDriver          string // local, cluster or redis
	ClusterRequestsTimeout time.Duration
	RateLimiterDriver      string // local, cluster or redis
	// QueueDriver is sync or redis; both send webhooks from the node's own
	// bounded, retrying sender (redis is accepted so that soketi env files
	// start, and the node says so at start).
	QueueDriver     string
	CacheDriver     string // memory or redis
	ChannelCacheTTL time.Duration

	// Redis is the server every Redis driver uses (SOKETI_DB_REDIS_*).
	Redis        Redis
	AdapterRedis AdapterRedis
	// RateLimiterRedisClusterMode and CacheRedisClusterMode use Redis
	// Cluster (Redis.ClusterNodes) for those drivers.
	RateLimiterRedisClusterMode bool
	CacheRedisClusterMode       bool

	Cluster Cluster
	Metrics Metrics
	CORS    CORS

	WebhooksBatching         bool
	WebhooksBatchingDuration time.Duration
}

// Redis is soketi's database.redis: one server, a Sentinel group
// (Sentinels set) or, for a driver in cluster mode, Redis Cluster nodes.
type Redis struct {
	Host      string
	Port      int
	DB        int
	Username  string
	Password  string
	KeyPrefix string // prepended to every key this server writes
	// TLS: SOKETI_DB_REDIS_TLS, database.redis.tls, or a rediss:// host.
	TLS bool
	// TLSCA is a PEM file of the CAs that sign the server's certificate
	// (SOKETI_DB_REDIS_TLS_CA); unset, the system's roots. Setting it turns
	// TLS on.
	TLSCA            string
	Sentinels        []HostPort
	SentinelPassword string
	InstanceName     string // the Sentinel master name
	ClusterNodes     []HostPort
}

// HostPort is one entry of SOKETI_DB_REDIS_SENTINELS or _CLUSTER_NODES.
type HostPort struct {
	Host string `json:"host"`
	Port int    `json:"port"`
}

// AdapterRedis configures the Redis adapter (SOKETI_ADAPTER_REDIS_*).
type AdapterRedis struct {
	Prefix          string // pub/sub channel prefix: "<prefix>#redis-adapter"
	ClusterMode     bool
	RequestsTimeout time.Duration
}

// SSL holds the TLS files of the main server; TLS is on when a cert or key is set.
type SSL struct {
	CertPath, KeyPath, Passphrase, CAPath string
}

// Enabled reports whether the main server should speak TLS.
func (s SSL) Enabled() bool { return s.CertPath != "" || s.KeyPath != "" }

// Cluster configures discovery, gossip and consensus.
type Cluster struct {
	Host              string
	Port              int // UDP discovery port
	Prefix            string
	KeepaliveInterval time.Duration
	CheckInterval     time.Duration
	NodeTimeout       time.Duration
	MasterTimeout     time.Duration
	IgnoreProcess     bool
	BroadcastAddress  string
	MulticastAddress  string
	UnicastAddresses  []string

	NodeID           string
	AdvertiseAddress string
	GossipPort       int    // memberlist (TCP and UDP); 0 picks a free port
	RaftPort         int    // the cluster TCP port: raft, RPC and streams; 0 picks a free port
	SecretKey        []byte // CLUSTER_KEY: gossip encryption, beacon MACs, mutual TLS
	// TLS names an operator's own PKI for the cluster port; without it and
	// with a key, the certificates are derived from the key.
	TLS             ClusterTLS
	DataDir         string
	ExpectedServers int
	// ReapDelay is how long a dead node keeps its presence members and
	// occupancy before the leader purges them.
	ReapDelay time.Duration
}

// ClusterTLS are PEM files of an operator's PKI (CLUSTER_TLS_CA, _CERT, _KEY).
type ClusterTLS struct {
	CAPath, CertPath, KeyPath string
}

// Enabled reports whether any of the files is set.
func (t ClusterTLS) Enabled() bool { return t.CAPath != "" || t.CertPath != "" || t.KeyPath != "" }

// ExampleClusterKey is the placeholder CLUSTER_KEY that deploy/ ships so
// that a cluster is keyed from its first start; being public, it protects
// nothing, and a node started with it says so.
const ExampleClusterKey = "c29rZXRpLWdvLWV4YW1wbGUta2V5LXJlcGxhY2UtbWU="

// The ports a node binds by default. They are fixed so that a restarted
// node comes back at the address its peers know; deploy/ lists exactly
// these.
const (
	DefaultPort          = 6001  // WebSocket and HTTP API
	DefaultMetricsPort   = 9601  // metrics, /ready, /usage and the cluster detail
	DefaultDiscoveryPort = 11002 // UDP beacons (CLUSTER_PORT)
	DefaultGossipPort    = 11003 // memberlist, TCP and UDP (CLUSTER_GOSSIP_PORT)
	DefaultClusterPort   = 11004 // raft, RPC and streams, TCP (CLUSTER_RAFT_PORT)
)

// Metrics configures the Prometheus server.
type Metrics struct {
	Enabled bool
	Driver  string
	Host    string
	Port    int
	Prefix  string
}

// CORS configures the headers of HTTP responses.
type CORS struct {
	Origin         []string
	Methods        []string
	AllowedHeaders []string
}

// Default returns soketi's defaults, with one default app.
func Default() *Config {
	return &Config{
		Host: "0.0.0.0", Port: DefaultPort, Mode: "full", WSTransport: "eventloop", WSIOUring: true,
		AcceptTrafficMemoryThreshold: 85,
		ShutdownGracePeriod:          3 * time.Second,
		UserAuthenticationTimeout:    30 * time.Second,
		RequestLimitInMB:             100,
		AppManagerDriver:             "array",
		Limits:                       pusher.DefaultAppLimits,
		AdapterDriver:                "local",
		ClusterRequestsTimeout:       5 * time.Second,
		RateLimiterDriver:            "local",
		QueueDriver:                  "sync",
		CacheDriver:                  "memory",
		Redis:                        Redis{Host: "127.0.0.1", Port: 6379, InstanceName: "mymaster"},
		AdapterRedis:                 AdapterRedis{RequestsTimeout: 5 * time.Second},
		ChannelCacheTTL:              time.Hour,
		Cluster: Cluster{
			Host: "0.0.0.0", Port: DefaultDiscoveryPort, GossipPort: DefaultGossipPort, RaftPort: DefaultClusterPort,
			KeepaliveInterval: 500 * time.Millisecond, CheckInterval: 500 * time.Millisecond,
			NodeTimeout: 2 * time.Second, MasterTimeout: 2 * time.Second,
			IgnoreProcess: true, BroadcastAddress: "255.255.255.255",
			DataDir: "./soketi-data", ExpectedServers: 1, ReapDelay: 10 * time.Second,
		},
		Metrics: Metrics{Driver: "prometheus", Host: "0.0.0.0", Port: DefaultMetricsPort, Prefix: "soketi_"},
		CORS: CORS{
			Origin:  []string{"*"},
			Methods: []string{"GET", "POST", "PUT", "DELETE", "OPTIONS"},
			AllowedHeaders: []string{"Origin", "Content-Type", "X-Auth-Token", "X-Requested-With", "Accept",
				"Authorization", "X-CSRF-TOKEN", "XSRF-TOKEN", "X-Socket-Id"},
		},
		WebhooksBatchingDuration: 50 * time.Millisecond,
	}
}

// Error is a configuration error naming the variable or key at fault.
type Error struct {
	Name  string
	Value string
	Msg   string
}

func (e *Error) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("invalid %s: %s", e.Name, e.Msg)
	}
	return fmt.Sprintf("invalid %s=%q: %s", e.Name, e.Value, e.Msg)
}

// Load builds the configuration from defaults, the JSON file at path (if
// non-empty) and the environment read through getenv.
func Load(path string, getenv func(string) string) (*Config, error) {
	cfg := Default()
	apps := []map[string]any{defaultAppFields()}

	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, &Error{Name: "--config", Value: path, Msg: err.Error()}
		}
		tree, err := parseFile(b)
		if err != nil {
			return nil, &Error{Name: "--config", Value: path, Msg: err.Error()}
		}
		for _, o := range options {
			if v, ok := tree.get(o.path); ok {
				if err := o.set(cfg, v); err != nil {
					return nil, &Error{Name: o.path, Value: short(v), Msg: err.Error()}
				}
			}
		}
		if v, ok := tree.get("appManager.array.apps"); ok {
			list, ok := v.([]any)
			if !ok {
				return nil, &Error{Name: "appManager.array.apps", Msg: "must be an array of apps"}
			}
			apps = apps[:0]
			for i, item := range list {
				m, ok := item.(map[string]any)
				if !ok {
					return nil, &Error{Name: fmt.Sprintf("appManager.array.apps.%d", i), Msg: "must be an object"}
				}
				apps = append(apps, m)
			}
		}
	}

	for _, o := range options {
		name, raw, ok := o.fromEnv(getenv)
		if !ok {
			continue
		}
		if err := o.set(cfg, parseEnvValue(raw)); err != nil {
			if secretOptions[o.path] {
				raw = ""
			}
			return nil, &Error{Name: name, Value: raw, Msg: err.Error()}
		}
	}
	for _, f := range defaultAppEnv {
		raw := getenv(f.env)
		if raw == "" {
			continue
		}
		if len(apps) == 0 {
			apps = append(apps, map[string]any{})
		}
		v, err := f.parse(raw)
		if err != nil {
			if f.field == "secret" {
				raw = ""
			}
			return nil, &Error{Name: f.env, Value: raw, Msg: err.Error()}
		}
		if f.field == "webhooks" { // the rest of ParseApp's rules, named after the variable
			if _, err := pusher.ParseApp(map[string]any{"webhooks": v}, cfg.Limits); err != nil {
				return nil, &Error{Name: f.env, Value: raw, Msg: err.Error()}
			}
		}
		apps[0][f.field] = v
	}

	for i, raw := range apps {
		a, err := pusher.ParseApp(raw, cfg.Limits)
		if err != nil {
			return nil, &Error{Name: fmt.Sprintf("appManager.array.apps.%d", i), Msg: err.Error()}
		}
		// Values from the environment passed these checks above; these
		// are the file's.
		if field, err := checkApp(a); err != nil {
			return nil, &Error{Name: fmt.Sprintf("appManager.array.apps.%d.%s", i, field), Msg: err.Error()}
		}
		cfg.Apps = append(cfg.Apps, a)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func defaultAppFields() map[string]any {
	return map[string]any{"id": "app-id", "key": "app-key", "secret": "app-secret"}
}

// secretOptions are options whose value a refusal must not repeat.
var secretOptions = map[string]bool{"ssl.passphrase": true, "cluster.key": true}

// defaultAppEnv are the variables of app 0, each with the parser that
// turns its raw value into what ParseApp reads (or refuses it).
var defaultAppEnv = []struct {
	env, field string
	parse      func(raw string) (any, error)
}{
	{"SOKETI_DEFAULT_APP_ID", "id", appString(checkPathSegment("/apps/{id}/..."))}, // ids such as 123 stay strings
	{"SOKETI_DEFAULT_APP_KEY", "key", appString(checkPathSegment("/app/{key}"))},
	{"SOKETI_DEFAULT_APP_SECRET", "secret", appString(checkSecret)},
	{"SOKETI_DEFAULT_APP_MAX_CONNS", "maxConnections", appLimit("-1 or 0 for no limit")},
	{"SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES", "enableClientMessages", appBool},
	{"SOKETI_DEFAULT_APP_ENABLE_SUBSCRIPTION_COUNT", "enableSubscriptionCount", appBool},
	{"SOKETI_DEFAULT_APP_ENABLED", "enabled", appBool},
	{"SOKETI_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC", "maxBackendEventsPerSecond", appLimit("-1 for no limit")},
	{"SOKETI_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC", "maxClientEventsPerSecond", appLimit("-1 for no limit")},
	{"SOKETI_DEFAULT_APP_MAX_READ_REQ_PER_SEC", "maxReadRequestsPerSecond", appLimit("-1 for no limit")},
	{"SOKETI_DEFAULT_APP_USER_AUTHENTICATION", "enableUserAuthentication", appBool},
	{"SOKETI_DEFAULT_APP_WEBHOOKS", "webhooks", appWebhooks},
}

// Validate checks cross-field rules that single setters cannot.
func (c *Config) Validate() error {
	if _, err := pusher.NewStaticApps(c.Apps); err != nil {
		return &Error{Name: "appManager.array.apps", Msg: err.Error()}
	}
	if err := c.checkPorts(); err != nil {
		return err
	}
	if c.SSL.Enabled() {
		if c.SSL.CertPath == "" || c.SSL.KeyPath == "" {
			return &Error{Name: "SOKETI_SSL_CERT", Msg: "SOKETI_SSL_CERT and SOKETI_SSL_KEY must be set together"}
		}
		if _, err := c.SSL.Certificate(); err != nil {
			return err
		}
	}
	if t := c.Cluster.TLS; t.Enabled() {
		switch {
		case t.CAPath == "" || t.CertPath == "" || t.KeyPath == "":
			return &Error{Name: "CLUSTER_TLS_CA", Msg: "CLUSTER_TLS_CA, CLUSTER_TLS_CERT and CLUSTER_TLS_KEY must be set together"}
		case c.Cluster.SecretKey == nil:
			return &Error{Name: "CLUSTER_TLS_CA", Msg: "needs CLUSTER_KEY too: the key encrypts gossip and signs beacons"}
		}
		if _, err := loadKeyPair("CLUSTER_TLS_CERT", t.CertPath, "CLUSTER_TLS_KEY", t.KeyPath); err != nil {
			return err
		}
		if _, err := readPEM("CLUSTER_TLS_CA", t.CAPath, isCertBlock, "a PEM file of CA certificates"); err != nil {
			return err
		}
	}
	if c.AdapterDriver == "cluster" {
		cl := c.Cluster
		if cl.NodeTimeout < cl.CheckInterval {
			return &Error{Name: "CLUSTER_NODE_TIMEOUT", Value: millisString(cl.NodeTimeout),
				Msg: "want at least CLUSTER_CHECK_INTERVAL (" + millisString(cl.CheckInterval) + " ms): a node is probed once per interval"}
		}
		if err := checkDataDir(cl.DataDir); err != nil {
			return err
		}
	}
	return nil
}

// parseEnvValue mirrors soketi: a value that parses as JSON is used parsed,
// anything else as the plain string.
func parseEnvValue(raw string) any {
	var v any
	if err := json.Unmarshal([]byte(raw), &v); err == nil {
		return v
	}
	return raw
}

func short(v any) string {
	b, _ := json.Marshal(v)
	if len(b) > 80 {
		return string(b[:80]) + "…"
	}
	return string(b)
}

// tree is a JSON object addressed by dot paths ("cluster.port", "appManager.array.apps.0.key").
type tree map[string]any

// parseFile applies the file's keys in the order they are written, as soketi
// does, so "appManager.array.apps" followed by "appManager.array.apps.0.key"
// overrides one field of the list it has just set.
func parseFile(b []byte) (tree, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object")
	}
	t := tree{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("not a JSON object: %w", err)
		}
		key, _ := tok.(string)
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("not a JSON object: %w", err)
		}
		t.set(strings.Split(key, "."), v)
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, fmt.Errorf("not a JSON object")
	}
	return t, nil
}

func (t tree) set(path []string, v any) {
	var cur any = map[string]any(t)
	for i, seg := range path {
		last := i == len(path)-1
		switch node := cur.(type) {
		case map[string]any:
			if last {
				node[seg] = v
				return
			}
			next, ok := node[seg]
			if !ok || next == nil {
				if _, err := strconv.Atoi(path[i+1]); err == nil {
					next = []any{}
				} else {
					next = map[string]any{}
				}
				node[seg] = next
			}
			if arr, ok := next.([]any); ok {
				n, err := strconv.Atoi(path[i+1])
				if err == nil && n >= len(arr) && n < 1024 {
					grown := make([]any, n+1)
					copy(grown, arr)
					node[seg] = grown
					next = grown
				}
			}
			cur = next
		case []any:
			n, err := strconv.Atoi(seg)
			if err != nil || n < 0 || n >= len(node) {
				return
			}
			if last {
				node[n] = v
				return
			}
			if node[n] == nil {
				node[n] = map[string]any{}
			}
			cur = node[n]
		default:
			return
		}
	}
}

func (t tree) get(path string) (any, bool) {
	var cur any = map[string]any(t)
	for _, seg := range strings.Split(path, ".") {
		switch node := cur.(type) {
		case map[string]any:
			v, ok := node[seg]
			if !ok {
				return nil, false
			}
			cur = v
		case []any:
			n, err := strconv.Atoi(seg)
			if err != nil || n < 0 || n >= len(node) {
				return nil, false
			}
			cur = node[n]
		default:
			return nil, false
		}
	}
	return cur, true
}

// Helpers shared by the option setters.

func toString(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case bool:
		return strconv.FormatBool(x), nil
	case nil:
		return "", nil
	}
	return "", fmt.Errorf("want a string")
}

func toFloat(v any) (float64, error) {
	switch x := v.(type) {
	case float64:
		return x, nil
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		if err != nil {
			return 0, fmt.Errorf("want a number")
		}
		return f, nil
	}
	return 0, fmt.Errorf("want a number")
}

func toInt(v any) (int, error) {
	f, err := toFloat(v)
	if err != nil {
		return 0, err
	}
	if f != float64(int64(f)) {
		return 0, fmt.Errorf("want a whole number")
	}
	return int(f), nil
}

func toBool(v any) (bool, error) {
	switch x := v.(type) {
	case bool:
		return x, nil
	case float64:
		return x != 0, nil
	case string:
		switch strings.ToLower(strings.TrimSpace(x)) {
		case "true", "1", "yes", "on":
			return true, nil
		case "false", "0", "no", "off", "":
			return false, nil
		}
	}
	return false, fmt.Errorf("want true or false")
}

func toPort(v any, allowZero bool) (int, error) {
	n, err := toInt(v)
	if err != nil || n > 65535 || n < 0 || (n == 0 && !allowZero) {
		if allowZero {
			return 0, fmt.Errorf("want a port number 0-65535 (0 picks a free port)")
		}
		return 0, fmt.Errorf("want a port number 1-65535")
	}
	return n, nil
}

func toMillis(v any) (time.Duration, error) {
	f, err := toFloat(v)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("want a non-negative number of milliseconds")
	}
	return time.Duration(f * float64(time.Millisecond)), nil
}

func toPositiveMillis(v any) (time.Duration, error) {
	d, err := toMillis(v)
	if err == nil && d <= 0 {
		err = fmt.Errorf("want a positive number of milliseconds")
	}
	return d, err
}

// NeverExpires is the channel cache TTL that soketi's -1 and 0 stand for:
// a cached event stays until the next one replaces it.
const NeverExpires = 100 * 365 * 24 * time.Hour

func toCacheTTL(v any) (time.Duration, error) {
	f, err := toFloat(v)
	if err != nil || (f < 0 && f != -1) || f > NeverExpires.Seconds() {
		return 0, fmt.Errorf("want a number of seconds, or -1 or 0 to keep the event until the next one")
	}
	if f <= 0 {
		return NeverExpires, nil
	}
	return time.Duration(f * float64(time.Second)), nil
}

// toIPv4 accepts what the cluster sockets can use: the gossip layer binds
// and sends over IPv4 only.
func toIPv4(v any, allowEmpty bool) (string, error) {
	s, err := toString(v)
	if err != nil {
		return "", err
	}
	if s == "" && allowEmpty {
		return "", nil
	}
	if a, err := netip.ParseAddr(s); err != nil || !a.Is4() {
		return "", fmt.Errorf("want an IPv4 address")
	}
	return s, nil
}

func toHost(v any) (string, error) {
	s, err := toString(v)
	if err != nil || s == "" || strings.ContainsAny(s, " /") {
		return "", fmt.Errorf("want a host name or IP address")
	}
	return s, nil
}

func toStringList(v any) ([]string, error) {
	switch x := v.(type) {
	case []any:
		out := make([]string, 0, len(x))
		for _, item := range x {
			s, ok := item.(string)
			if !ok {
				return nil, fmt.Errorf("want a JSON array of strings")
			}
			out = append(out, s)
		}
		return out, nil
	case string:
		if strings.TrimSpace(x) == "" {
			return nil, nil
		}
		return nil, fmt.Errorf("want a JSON array of strings, like [\"10.0.0.2\",\"10.0.0.3:11002\"]")
	case nil:
		return nil, nil
	}
	return nil, fmt.Errorf("want a JSON array of strings")
}

func oneOf(v any, allowed ...string) (string, error) {
	s, err := toString(v)
	if err != nil {
		return "", err
	}
	for _, a := range allowed {
		if s == a {
			return s, nil
		}
	}
	return "", fmt.Errorf("want one of %s", strings.Join(allowed, ", "))
}

func toKey(v any) ([]byte, error) {
	s, err := toString(v)
	if err != nil || s == "" {
		return nil, err
	}
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil || (len(k) != 16 && len(k) != 24 && len(k) != 32) {
		return nil, fmt.Errorf("want a base64-encoded key of 16, 24 or 32 bytes")
	}
	return k, nil
}

// toHostPorts reads soketi's JSON array of {host, port} (also "host:port"
// strings), as SOKETI_DB_REDIS_SENTINELS and _CLUSTER_NODES take.
func toHostPorts(v any) ([]HostPort, error) {
	const want = `want a JSON array of {"host":...,"port":...}, like [{"host":"10.0.0.2","port":26379}]`
	switch x := v.(type) {
	case nil:
		return nil, nil
	case string:
		if strings.TrimSpace(x) == "" {
			return nil, nil
		}
		return nil, configError(want)
	case []any:
		out := make([]HostPort, 0, len(x))
		for _, item := range x {
			var hp HostPort
			switch e := item.(type) {
			case map[string]any:
				h, _ := e["host"].(string)
				p, err := toPort(e["port"], false)
				if h == "" || err != nil {
					return nil, configError(want)
				}
				hp = HostPort{Host: h, Port: p}
			case string:
				h, ps, err := net.SplitHostPort(e)
				if err != nil || h == "" {
					return nil, configError(want)
				}
				p, err := toPort(ps, false)
				if err != nil {
					return nil, configError(want)
				}
				hp = HostPort{Host: h, Port: p}
			default:
				return nil, configError(want)
			}
			out = append(out, hp)
		}
		return out, nil
	}
	return nil, configError(want)
}
