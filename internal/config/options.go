package config

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/soketi-go/soketi/internal/text"
	"github.com/soketi-go/soketi/pkg/gossip"
)

// option binds one setting to its config-file dot path and its environment
// name (read as SOKETI_<env>; bare names are also read for the adapter, rate
// limiter and cluster settings that soketi's documentation shows bare).
type option struct {
	path string
	env  string
	bare bool
	set  func(c *Config, v any) error
}

func (o option) fromEnv(getenv func(string) string) (name, value string, ok bool) {
	name = "SOKETI_" + o.env
	if v := getenv(name); v != "" {
		return name, v, true
	}
	if o.bare {
		if v := getenv(o.env); v != "" {
			return o.env, v, true
		}
	}
	return "", "", false
}

func str(dst func(*Config) *string) func(*Config, any) error {
	return func(c *Config, v any) (err error) { *dst(c), err = toString(v); return }
}
func boolean(dst func(*Config) *bool) func(*Config, any) error {
	return func(c *Config, v any) (err error) { *dst(c), err = toBool(v); return }
}
func millis(dst func(*Config) *time.Duration) func(*Config, any) error {
	return func(c *Config, v any) (err error) { *dst(c), err = toMillis(v); return }
}
func positiveMillis(dst func(*Config) *time.Duration) func(*Config, any) error {
	return func(c *Config, v any) (err error) { *dst(c), err = toPositiveMillis(v); return }
}
func positiveInt(dst func(*Config) *int) func(*Config, any) error {
	return func(c *Config, v any) error {
		n, err := toInt(v)
		if err == nil && n <= 0 {
			err = errPositive
		}
		*dst(c) = n
		return err
	}
}
func positiveFloat(dst func(*Config) *float64) func(*Config, any) error {
	return func(c *Config, v any) error {
		f, err := toFloat(v)
		if err == nil && f <= 0 {
			err = errPositive
		}
		*dst(c) = f
		return err
	}
}
func port(dst func(*Config) *int, allowZero bool) func(*Config, any) error {
	return func(c *Config, v any) (err error) { *dst(c), err = toPort(v, allowZero); return }
}
func choice(dst func(*Config) *string, allowed ...string) func(*Config, any) error {
	return func(c *Config, v any) (err error) { *dst(c), err = oneOf(v, allowed...); return }
}

type configError string

func (e configError) Error() string { return string(e) }

const errPositive = configError("want a positive number")

// unsupported rejects soketi drivers this server does not have, naming the
// ones it has.
func unsupported(dst func(*Config) *string, supported []string, external ...string) func(*Config, any) error {
	return func(c *Config, v any) error {
		s, err := toString(v)
		if err != nil {
			return err
		}
		for _, e := range external {
			if s == e {
				return configError("driver " + s + " is not available in this server; use " + strings.Join(supported, " or "))
			}
		}
		*dst(c), err = oneOf(s, supported...)
		return err
	}
}

var options = []option{
	{"host", "HOST", false, func(c *Config, v any) (err error) { c.Host, err = toHost(v); return }},
	{"port", "PORT", false, port(func(c *Config) *int { return &c.Port }, false)},
	{"pathPrefix", "PATH_PREFIX", false, func(c *Config, v any) error {
		s, err := toString(v)
		if err != nil {
			return err
		}
		s = strings.TrimRight(s, "/")
		if s != "" && !strings.HasPrefix(s, "/") {
			return configError("must start with /")
		}
		c.PathPrefix = s
		return nil
	}},
	{"mode", "MODE", false, choice(func(c *Config) *string { return &c.Mode }, "full", "server", "worker")},
	{"debug", "DEBUG", false, boolean(func(c *Config) *bool { return &c.Debug })},
	{"wsTransport", "WS_TRANSPORT", false, choice(func(c *Config) *string { return &c.WSTransport }, "eventloop", "goroutine")},
	{"wsIoUring", "WS_IO_URING", false, boolean(func(c *Config) *bool { return &c.WSIOUring })},
	{"httpApi.acceptTraffic.memoryThreshold", "HTTP_ACCEPT_TRAFFIC_MEMORY_THRESHOLD", false,
		positiveFloat(func(c *Config) *float64 { return &c.AcceptTrafficMemoryThreshold })},
	{"httpApi.requestLimitInMb", "HTTP_REQUEST_LIMIT_IN_MB", false,
		positiveFloat(func(c *Config) *float64 { return &c.RequestLimitInMB })},
	{"shutdownGracePeriod", "SHUTDOWN_GRACE_PERIOD", false, millis(func(c *Config) *time.Duration { return &c.ShutdownGracePeriod })},
	{"userAuthenticationTimeout", "USER_AUTHENTICATION_TIMEOUT", false,
		positiveMillis(func(c *Config) *time.Duration { return &c.UserAuthenticationTimeout })},

	{"ssl.certPath", "SSL_CERT", false, str(func(c *Config) *string { return &c.SSL.CertPath })},
	{"ssl.keyPath", "SSL_KEY", false, str(func(c *Config) *string { return &c.SSL.KeyPath })},
	{"ssl.passphrase", "SSL_PASS", false, func(c *Config, v any) error {
		s, err := toString(v)
		if err == nil && s != "" {
			err = configError("encrypted keys are not supported: want it unset, and SOKETI_SSL_KEY decrypted (openssl pkey -in enc.pem -out key.pem)")
		}
		c.SSL.Passphrase = s
		return err
	}},
	{"ssl.caPath", "SSL_CA", false, str(func(c *Config) *string { return &c.SSL.CAPath })},

	{"appManager.driver", "APP_MANAGER_DRIVER", false, unsupported(func(c *Config) *string { return &c.AppManagerDriver },
		[]string{"array"}, "mysql", "postgres", "dynamodb")},

	{"adapter.driver", "ADAPTER_DRIVER", true, unsupported(func(c *Config) *string { return &c.AdapterDriver },
		[]string{"local", "cluster", "redis"}, "nats")},
	{"adapter.redis.prefix", "ADAPTER_REDIS_PREFIX", false, printableName(func(c *Config) *string { return &c.AdapterRedis.Prefix }, 256)},
	{"adapter.redis.clusterMode", "ADAPTER_REDIS_CLUSTER_MODE", false, boolean(func(c *Config) *bool { return &c.AdapterRedis.ClusterMode })},
	{"adapter.redis.requestsTimeout", "ADAPTER_REDIS_REQUESTS_TIMEOUT", false,
		positiveMillis(func(c *Config) *time.Duration { return &c.AdapterRedis.RequestsTimeout })},
	{"adapter.cluster.requestsTimeout", "ADAPTER_CLUSTER_REQUESTS_TIMEOUT", true,
		positiveMillis(func(c *Config) *time.Duration { return &c.ClusterRequestsTimeout })},
	{"rateLimiter.driver", "RATE_LIMITER_DRIVER", true, choice(func(c *Config) *string { return &c.RateLimiterDriver },
		"local", "cluster", "redis")},
	{"rateLimiter.redis.clusterMode", "RATE_LIMITER_REDIS_CLUSTER_MODE", false,
		boolean(func(c *Config) *bool { return &c.RateLimiterRedisClusterMode })},
	{"queue.driver", "QUEUE_DRIVER", false, unsupported(func(c *Config) *string { return &c.QueueDriver },
		[]string{"sync", "redis"}, "sqs")},
	{"cache.driver", "CACHE_DRIVER", false, choice(func(c *Config) *string { return &c.CacheDriver }, "memory", "redis")},
	{"cache.redis.clusterMode", "CACHE_REDIS_CLUSTER_MODE", false, boolean(func(c *Config) *bool { return &c.CacheRedisClusterMode })},

	{"database.redis.host", "DB_REDIS_HOST", false, func(c *Config, v any) error {
		s, err := toString(v)
		if err != nil {
			return err
		}
		// A rediss:// (or redis://) address carries the port and TLS.
		if rest, ok := strings.CutPrefix(s, "rediss://"); ok {
			c.Redis.TLS, s = true, rest
		} else if rest, ok := strings.CutPrefix(s, "redis://"); ok {
			s = rest
		}
		if h, p, splitErr := net.SplitHostPort(s); splitErr == nil {
			n, perr := toPort(p, false)
			if perr != nil {
				return configError("the port in " + s + ": " + perr.Error())
			}
			s, c.Redis.Port = h, n
		}
		if s == "" || strings.ContainsAny(s, "/ ") {
			return configError("want a host name or address, optionally rediss://host:port")
		}
		c.Redis.Host = s
		return nil
	}},
	{"database.redis.port", "DB_REDIS_PORT", false, port(func(c *Config) *int { return &c.Redis.Port }, false)},
	{"database.redis.db", "DB_REDIS_DB", false, func(c *Config, v any) error {
		n, err := toInt(v)
		if err == nil && (n < 0 || n > 1<<20) {
			err = configError("want a database number, 0 or more")
		}
		c.Redis.DB = n
		return err
	}},
	{"database.redis.username", "DB_REDIS_USERNAME", false, str(func(c *Config) *string { return &c.Redis.Username })},
	{"database.redis.password", "DB_REDIS_PASSWORD", false, str(func(c *Config) *string { return &c.Redis.Password })},
	{"database.redis.keyPrefix", "DB_REDIS_KEY_PREFIX", false, printableName(func(c *Config) *string { return &c.Redis.KeyPrefix }, 256)},
	{"database.redis.tls", "DB_REDIS_TLS", false, func(c *Config, v any) error {
		if _, ok := v.(map[string]any); ok { // ioredis's tls: {} turns it on
			c.Redis.TLS = true
			return nil
		}
		b, err := toBool(v)
		c.Redis.TLS = c.Redis.TLS || b
		return err
	}},
	{"database.redis.tlsCa", "DB_REDIS_TLS_CA", false, func(c *Config, v any) error {
		s, err := toString(v)
		if err != nil || s == "" {
			return err
		}
		c.Redis.TLSCA, c.Redis.TLS = s, true
		if _, err := c.Redis.CAPool(); err != nil {
			var e *Error
			if errors.As(err, &e) {
				return configError(e.Msg)
			}
			return err
		}
		return nil
	}},
	{"database.redis.sentinels", "DB_REDIS_SENTINELS", false, func(c *Config, v any) (err error) {
		c.Redis.Sentinels, err = toHostPorts(v)
		return
	}},
	{"database.redis.sentinelPassword", "DB_REDIS_SENTINEL_PASSWORD", false, str(func(c *Config) *string { return &c.Redis.SentinelPassword })},
	{"database.redis.name", "DB_REDIS_INSTANCE_NAME", false, printableName(func(c *Config) *string { return &c.Redis.InstanceName }, 256)},
	{"database.redis.clusterNodes", "DB_REDIS_CLUSTER_NODES", false, func(c *Config, v any) (err error) {
		c.Redis.ClusterNodes, err = toHostPorts(v)
		return
	}},
	{"channelLimits.cacheTtl", "CHANNEL_CACHE_TTL", false, func(c *Config, v any) (err error) {
		c.ChannelCacheTTL, err = toCacheTTL(v)
		return
	}},

	{"cluster.hostname", "CLUSTER_HOST", true, func(c *Config, v any) (err error) { c.Cluster.Host, err = toIPv4(v, false); return }},
	{"cluster.port", "CLUSTER_PORT", true, port(func(c *Config) *int { return &c.Cluster.Port }, false)},
	{"cluster.prefix", "CLUSTER_PREFIX", true, printableName(func(c *Config) *string { return &c.Cluster.Prefix }, maxClusterNameLen)},
	{"cluster.helloInterval", "CLUSTER_KEEPALIVE_INTERVAL", true,
		positiveMillis(func(c *Config) *time.Duration { return &c.Cluster.KeepaliveInterval })},
	{"cluster.checkInterval", "CLUSTER_CHECK_INTERVAL", true,
		positiveMillis(func(c *Config) *time.Duration { return &c.Cluster.CheckInterval })},
	{"cluster.nodeTimeout", "CLUSTER_NODE_TIMEOUT", true,
		positiveMillis(func(c *Config) *time.Duration { return &c.Cluster.NodeTimeout })},
	{"cluster.masterTimeout", "CLUSTER_MASTER_TIMEOUT", true,
		positiveMillis(func(c *Config) *time.Duration { return &c.Cluster.MasterTimeout })},
	{"cluster.ignoreProcess", "CLUSTER_IGNORE_PROCESS", true, boolean(func(c *Config) *bool { return &c.Cluster.IgnoreProcess })},
	{"cluster.broadcast", "CLUSTER_BROADCAST_ADDRESS", true,
		func(c *Config, v any) (err error) { c.Cluster.BroadcastAddress, err = toIPv4(v, false); return }},
	{"cluster.multicast", "CLUSTER_MULTICAST_ADDRESS", true, func(c *Config, v any) error {
		s, err := toIPv4(v, true)
		if err == nil && s != "" && !isMulticast(s) {
			err = configError("want an IPv4 multicast group address (224.0.0.0/4)")
		}
		c.Cluster.MulticastAddress = s
		return err
	}},
	{"cluster.unicast", "CLUSTER_UNICAST_ADDRESSES", true, func(c *Config, v any) (err error) {
		c.Cluster.UnicastAddresses, err = toStringList(v)
		for _, a := range c.Cluster.UnicastAddresses {
			if err == nil {
				if verr := gossip.ValidateUnicastAddress(a); verr != nil {
					err = configError(fmt.Sprintf("entry %q: %v", a, verr))
				}
			}
		}
		return
	}},
	{"cluster.nodeId", "CLUSTER_NODE_ID", true, printableName(func(c *Config) *string { return &c.Cluster.NodeID }, maxNodeIDLen)},
	{"cluster.advertiseAddress", "CLUSTER_ADVERTISE_ADDRESS", true, func(c *Config, v any) error {
		s, err := toIPv4(v, true)
		if err == nil && s != "" && net.ParseIP(s).IsUnspecified() {
			err = configError("want a specific IPv4 address that peers can reach, not " + s)
		}
		c.Cluster.AdvertiseAddress = s
		return err
	}},
	{"cluster.gossipPort", "CLUSTER_GOSSIP_PORT", true, port(func(c *Config) *int { return &c.Cluster.GossipPort }, true)},
	{"cluster.raftPort", "CLUSTER_RAFT_PORT", true, port(func(c *Config) *int { return &c.Cluster.RaftPort }, true)},
	{"cluster.key", "CLUSTER_KEY", true, func(c *Config, v any) (err error) { c.Cluster.SecretKey, err = toKey(v); return }},
	{"cluster.tls.ca", "CLUSTER_TLS_CA", true, str(func(c *Config) *string { return &c.Cluster.TLS.CAPath })},
	{"cluster.tls.cert", "CLUSTER_TLS_CERT", true, str(func(c *Config) *string { return &c.Cluster.TLS.CertPath })},
	{"cluster.tls.key", "CLUSTER_TLS_KEY", true, str(func(c *Config) *string { return &c.Cluster.TLS.KeyPath })},
	{"cluster.dataDir", "CLUSTER_DATA_DIR", true, str(func(c *Config) *string { return &c.Cluster.DataDir })},
	{"cluster.expectedServers", "CLUSTER_EXPECTED_SERVERS", true,
		positiveInt(func(c *Config) *int { return &c.Cluster.ExpectedServers })},
	{"cluster.reapDelay", "CLUSTER_REAP_DELAY", true,
		positiveMillis(func(c *Config) *time.Duration { return &c.Cluster.ReapDelay })},

	{"metrics.enabled", "METRICS_ENABLED", false, boolean(func(c *Config) *bool { return &c.Metrics.Enabled })},
	{"metrics.driver", "METRICS_DRIVER", false, choice(func(c *Config) *string { return &c.Metrics.Driver }, "prometheus")},
	{"metrics.host", "METRICS_HOST", false, func(c *Config, v any) (err error) { c.Metrics.Host, err = toHost(v); return }},
	{"metrics.port", "METRICS_SERVER_PORT", false, port(func(c *Config) *int { return &c.Metrics.Port }, false)},
	{"metrics.prometheus.prefix", "METRICS_PROMETHEUS_PREFIX", false, func(c *Config, v any) error {
		s, err := toString(v)
		if err == nil && s != "" && !metricPrefix.MatchString(s) {
			err = configError("want letters, digits, _ and : only, not starting with a digit (a Prometheus metric name prefix, like soketi_)")
		}
		c.Metrics.Prefix = s
		return err
	}},

	{"channelLimits.maxNameLength", "CHANNEL_LIMITS_MAX_NAME_LENGTH", false,
		positiveInt(func(c *Config) *int { return &c.Limits.MaxChannelNameLength })},
	{"eventLimits.maxChannelsAtOnce", "EVENT_MAX_CHANNELS_AT_ONCE", false,
		positiveInt(func(c *Config) *int { return &c.Limits.MaxEventChannelsAtOnce })},
	{"eventLimits.maxNameLength", "EVENT_MAX_NAME_LENGTH", false,
		positiveInt(func(c *Config) *int { return &c.Limits.MaxEventNameLength })},
	{"eventLimits.maxPayloadInKb", "EVENT_MAX_SIZE_IN_KB", false,
		positiveFloat(func(c *Config) *float64 { return &c.Limits.MaxEventPayloadInKB })},
	{"eventLimits.maxBatchSize", "EVENT_MAX_BATCH_SIZE", false,
		positiveInt(func(c *Config) *int { return &c.Limits.MaxEventBatchSize })},
	{"presence.maxMembersPerChannel", "PRESENCE_MAX_MEMBERS", false,
		positiveInt(func(c *Config) *int { return &c.Limits.MaxPresenceMembersPerChannel })},
	{"presence.maxMemberSizeInKb", "PRESENCE_MAX_MEMBER_SIZE", false,
		positiveFloat(func(c *Config) *float64 { return &c.Limits.MaxPresenceMemberSizeInKB })},

	{"webhooks.batching.enabled", "WEBHOOKS_BATCHING", false, boolean(func(c *Config) *bool { return &c.WebhooksBatching })},
	{"webhooks.batching.duration", "WEBHOOKS_BATCHING_DURATION", false,
		positiveMillis(func(c *Config) *time.Duration { return &c.WebhooksBatchingDuration })},

	{"cors.origin", "CORS_ORIGIN", false, func(c *Config, v any) (err error) { c.CORS.Origin, err = toStringList(v); return }},
	{"cors.methods", "CORS_METHODS", false, func(c *Config, v any) (err error) { c.CORS.Methods, err = toStringList(v); return }},
	{"cors.allowedHeaders", "CORS_ALLOWED_HEADERS", false,
		func(c *Config, v any) (err error) { c.CORS.AllowedHeaders, err = toStringList(v); return }},
}

func isMulticast(s string) bool {
	ip := net.ParseIP(s)
	return ip != nil && ip.IsMulticast()
}

// metricPrefix is what a Prometheus metric name may start with.
var metricPrefix = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)

// The gossip layer's bounds on names carried in every beacon.
const (
	maxClusterNameLen = 64
	maxNodeIDLen      = 128
)

// printableName accepts up to max bytes of printable text ("" keeps the default).
func printableName(dst func(*Config) *string, max int) func(*Config, any) error {
	return func(c *Config, v any) error {
		s, err := toString(v)
		if err == nil && (len(s) > max || !text.Printable(s)) {
			err = configError(fmt.Sprintf("want at most %d bytes of printable text", max))
		}
		*dst(c) = s
		return err
	}
}
