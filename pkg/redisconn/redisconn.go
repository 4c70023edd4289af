// Package redisconn opens the Redis connection every Redis driver of the
// server uses (adapter, rate limiter, cache), from soketi's database.redis
// settings: one server, a Sentinel group, or Redis Cluster; TLS when asked.
// Every command is bounded by Timeout, and by its context's deadline
// (ContextTimeoutEnabled), so a driver's own shorter bound holds too.
package redisconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Options describe the server and how to reach it.
type Options struct {
	Addr     string // host:port of one server (no Sentinels, no cluster)
	DB       int
	Username string
	Password string
	TLS      bool
	// RootCAs verify the server's certificate; nil: the system's roots.
	RootCAs *x509.CertPool
	// Sentinels, when set, find the master named MasterName.
	Sentinels        []string
	SentinelPassword string
	MasterName       string
	// ClusterNodes, with Cluster set, are Redis Cluster seed nodes.
	Cluster      bool
	ClusterNodes []string
	// Timeout bounds dialing, every read and write, and a pool wait.
	Timeout time.Duration
	// PoolSize bounds the connections; 0 means go-redis's default.
	PoolSize int
}

// quietLogger keeps go-redis's own log lines (one per failed dial while
// Redis is away) out of the server's output: the drivers log outages
// themselves, once.
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

func init() { redis.SetLogger(quietLogger{}) }

// DefaultTimeout is used when Options.Timeout is zero.
const DefaultTimeout = 5 * time.Second

// Open returns a client for o. It does not contact Redis: drivers report
// an unreachable server themselves and recover when it returns.
func Open(o Options) (redis.UniversalClient, error) {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	var tlsCfg *tls.Config
	if o.TLS {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: o.RootCAs}
	}
	switch {
	case o.Cluster:
		if len(o.ClusterNodes) == 0 {
			return nil, fmt.Errorf("redis cluster mode needs at least one node")
		}
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: o.ClusterNodes, Username: o.Username, Password: o.Password, TLSConfig: tlsCfg,
			DialTimeout: o.Timeout, ReadTimeout: o.Timeout, WriteTimeout: o.Timeout, PoolTimeout: o.Timeout,
			PoolSize: o.PoolSize, MaxRetries: 2, ContextTimeoutEnabled: true,
		}), nil
	case len(o.Sentinels) > 0:
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: o.MasterName, SentinelAddrs: o.Sentinels, SentinelPassword: o.SentinelPassword,
			DB: o.DB, Username: o.Username, Password: o.Password, TLSConfig: tlsCfg,
			DialTimeout: o.Timeout, ReadTimeout: o.Timeout, WriteTimeout: o.Timeout, PoolTimeout: o.Timeout,
			PoolSize: o.PoolSize, MaxRetries: 2, ContextTimeoutEnabled: true,
		}), nil
	default:
		return redis.NewClient(&redis.Options{
			Addr: o.Addr, DB: o.DB, Username: o.Username, Password: o.Password, TLSConfig: tlsCfg,
			DialTimeout: o.Timeout, ReadTimeout: o.Timeout, WriteTimeout: o.Timeout, PoolTimeout: o.Timeout,
			PoolSize: o.PoolSize, MaxRetries: 2, ContextTimeoutEnabled: true,
		}), nil
	}
}

// JoinHostPort is net.JoinHostPort for an int port.
func JoinHostPort(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }
