package main

import (
	"context"
	"log/slog"

	"github.com/redis/go-redis/v9"

	"github.com/soketi-go/soketi/internal/config"
	"github.com/soketi-go/soketi/pkg/pusher"
	"github.com/soketi-go/soketi/pkg/redisadapter"
	"github.com/soketi-go/soketi/pkg/redisconn"
)

// openRedis opens the connection of one Redis driver; cluster says whether
// that driver runs on Redis Cluster (its *_REDIS_CLUSTER_MODE).
func openRedis(cfg *config.Config, cluster bool) (redis.UniversalClient, error) {
	r := cfg.Redis
	cas, err := r.CAPool()
	if err != nil {
		return nil, err
	}
	o := redisconn.Options{RootCAs: cas,
		Addr: redisconn.JoinHostPort(r.Host, r.Port), DB: r.DB, Username: r.Username, Password: r.Password,
		TLS: r.TLS, SentinelPassword: r.SentinelPassword, MasterName: r.InstanceName,
		Cluster: cluster, Timeout: cfg.AdapterRedis.RequestsTimeout,
	}
	for _, s := range r.Sentinels {
		o.Sentinels = append(o.Sentinels, redisconn.JoinHostPort(s.Host, s.Port))
	}
	for _, n := range r.ClusterNodes {
		o.ClusterNodes = append(o.ClusterNodes, redisconn.JoinHostPort(n.Host, n.Port))
	}
	c, err := redisconn.Open(o)
	if err != nil {
		return nil, &config.Error{Name: "SOKETI_DB_REDIS_CLUSTER_NODES", Msg: err.Error()}
	}
	return c, nil
}

// startRedisAdapter connects the Redis adapter; Redis need not be up yet.
func startRedisAdapter(ctx context.Context, cfg *config.Config, local *pusher.LocalAdapter, logger *slog.Logger) (*redisadapter.Adapter, redis.UniversalClient, error) {
	rdb, err := openRedis(cfg, cfg.AdapterRedis.ClusterMode)
	if err != nil {
		return nil, nil, err
	}
	a := redisadapter.New(redisadapter.Config{
		Prefix: cfg.AdapterRedis.Prefix, KeyPrefix: cfg.Redis.KeyPrefix,
		Timeout: cfg.AdapterRedis.RequestsTimeout, Logger: logger,
	}, local, rdb)
	a.Start(ctx)
	logger.Info("redis adapter started", "node_id", a.NodeID(), "redis", cfg.Redis.Host, "tls", cfg.Redis.TLS)
	return a, rdb, nil
}
