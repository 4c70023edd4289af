package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/redis/go-redis/v9"

	"github.com/soketi-go/soketi/internal/config"
	"github.com/soketi-go/soketi/pkg/cluster"
	"github.com/soketi-go/soketi/pkg/clusterpage"
	"github.com/soketi-go/soketi/pkg/limiter"
	"github.com/soketi-go/soketi/pkg/metrics"
	"github.com/soketi-go/soketi/pkg/pusher"
	"github.com/soketi-go/soketi/pkg/redisadapter"
	"github.com/soketi-go/soketi/pkg/rediscache"
	"github.com/soketi-go/soketi/pkg/webhook"
	"github.com/soketi-go/soketi/pkg/wstransport"
)

// node is one running server: the protocol engine, its HTTP handlers and,
// in cluster mode, its membership in the cluster.
type node struct {
	server         *pusher.Server
	eventLoop      *wstransport.EventLoop // nil with the goroutine transport
	handler        http.Handler
	metricsHandler http.Handler
	cluster        *cluster.Node
	redis          *redisadapter.Adapter   // with ADAPTER_DRIVER=redis
	redisClients   []redis.UniversalClient // of every Redis driver, closed last
	webhooks       *webhook.Sender
	metrics        *metrics.Metrics    // nil when metrics are disabled
	pages          []*clusterpage.Page // the live cluster pages, one per port
	logger         *slog.Logger
}

func newNode(ctx context.Context, cfg *config.Config, apps *pusher.StaticApps, logger *slog.Logger) (*node, error) {
	n := &node{logger: logger}
	if cfg.Metrics.Enabled {
		m, err := metrics.New(metrics.Config{Prefix: cfg.Metrics.Prefix, Port: cfg.Port})
		if err != nil {
			return nil, &config.Error{Name: "SOKETI_METRICS_PROMETHEUS_PREFIX", Value: cfg.Metrics.Prefix, Msg: err.Error()}
		}
		n.metrics = m
	}
	var ws pusher.WebSocketHandler = wstransport.New()
	if cfg.WSTransport == "eventloop" {
		el, err := wstransport.NewEventLoop(logger, cfg.WSIOUring)
		if err != nil {
			return nil, err
		}
		n.eventLoop, ws = el, el
	}
	local := pusher.NewLocalAdapter()
	var adapter pusher.Adapter = local
	if cfg.AdapterDriver == "cluster" {
		// The cluster outlives ctx, which the first SIGTERM ends: shutdown
		// keeps it up through the grace period, so that what the API still
		// accepts reaches the other nodes, then drains it and leaves.
		cl, err := startCluster(context.WithoutCancel(ctx), cfg, local, logger)
		if err != nil {
			if n.eventLoop != nil {
				n.eventLoop.Stop()
			}
			return nil, err
		}
		n.cluster = cl
		adapter = cl.Adapter()
	}
	if cfg.AdapterDriver == "redis" {
		ra, rdb, err := startRedisAdapter(context.WithoutCancel(ctx), cfg, local, logger)
		if err != nil {
			if n.eventLoop != nil {
				n.eventLoop.Stop()
			}
			return nil, err
		}
		n.redis = ra
		n.redisClients = append(n.redisClients, rdb)
		adapter = ra
	}
	if cfg.QueueDriver == "redis" {
		logger.Warn("SOKETI_QUEUE_DRIVER=redis: webhooks are sent by this node's own sender (bounded queue, retries); no BullMQ queue is used, so webhooks pending at a crash are lost")
	}
	n.webhooks = webhook.New(webhook.Config{
		Batching:    cfg.WebhooksBatching,
		BatchWindow: cfg.WebhooksBatchingDuration,
		Logger:      logger,
	})
	lim, err := n.newLimiter(cfg, logger)
	if err != nil {
		n.close()
		return nil, err
	}
	var cache pusher.ChannelCache // nil: this process's memory
	if cfg.CacheDriver == "redis" {
		rdb, err := n.openRedis(cfg, cfg.CacheRedisClusterMode)
		if err != nil {
			n.close()
			return nil, err
		}
		cache = rediscache.New(rediscache.Options{KeyPrefix: cfg.Redis.KeyPrefix}, rdb)
	}
	var m pusher.Metrics // a nil *metrics.Metrics must not become a non-nil interface
	if n.metrics != nil {
		m = n.metrics
		n.metrics.ObserveWebhooks(n.webhooks.Stats)
		n.metrics.ObserveLimiter(lim.Stats)
		if n.cluster != nil {
			n.metrics.ObserveCluster(func() metrics.ClusterStats { return clusterFigures(n.cluster.Figures()) })
		}
	}
	var ready func() bool
	if n.cluster != nil {
		// Not ready until in a raft group: a load balancer never routes to
		// a node that a merge could still wipe.
		ready = n.cluster.Ready
	}
	if n.redis != nil {
		// Not ready while Redis is away: the node serves the sockets it
		// has, and a load balancer sends new ones elsewhere.
		ready = n.redis.Ready
	}
	n.server = pusher.New(pusher.Options{
		Apps:                      apps,
		Adapter:                   adapter,
		Webhooks:                  n.webhooks,
		Metrics:                   m,
		Limiter:                   lim,
		Logger:                    logger,
		WebSocket:                 ws,
		UserAuthenticationTimeout: cfg.UserAuthenticationTimeout,
		ChannelCacheTTL:           cfg.ChannelCacheTTL,
		ChannelCache:              cache,
		PathPrefix:                cfg.PathPrefix,
		RequestLimitBytes:         int64(cfg.RequestLimitInMB * 1024 * 1024),
		CORSOrigin:                cfg.CORS.Origin,
		CORSMethods:               cfg.CORS.Methods,
		CORSHeaders:               cfg.CORS.AllowedHeaders,
		MemoryThresholdPct:        cfg.AcceptTrafficMemoryThreshold,
		Ready:                     ready,
	})

	api := n.server.Router()
	r := chi.NewRouter()
	if n.cluster != nil {
		// A secured cluster keeps its addresses, ids and incarnations off the
		// public port; an open one is open anyway, and shows them as before.
		cl := n.cluster
		n.mountCluster(r, cfg.PathPrefix, func(context.Context) any {
			if cl.Status().Secured {
				return cl.Summary()
			}
			return cl.Status()
		}, func(ctx context.Context) any {
			if cl.Status().Secured {
				return cl.Summary()
			}
			return cl.Dashboard(ctx)
		})
	}
	if cfg.Mode == "worker" {
		// A worker serves no clients: only the health routes answer.
		r.Get(cfg.PathPrefix+"/", api.ServeHTTP)
		r.Get(cfg.PathPrefix+"/ready", api.ServeHTTP)
		r.NotFound(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNotFound) })
	} else {
		r.Mount("/", api)
	}
	n.handler = r
	n.metricsHandler = n.metricsRouter(cfg)
	return n, nil
}

// mountCluster serves GET {prefix}/cluster: JSON from view, or, to a
// browser, the live page fed by page; both show the same detail.
func (n *node) mountCluster(r chi.Router, prefix string, view, page func(context.Context) any) {
	live := clusterpage.New(clusterpage.Options{Snapshot: page, Logger: n.logger})
	n.pages = append(n.pages, live)
	r.Get(prefix+"/cluster", func(w http.ResponseWriter, req *http.Request) {
		if clusterpage.WantsHTML(req) {
			live.ServeHTML(w, req)
			return
		}
		w.Header().Set("Vary", "Accept")
		writeJSON(w, view(req.Context()))
	})
	for _, a := range clusterpage.Assets() {
		r.Get(prefix+"/cluster"+a, live.Handle)
	}
}

// closePages ends the live pages' streams, so that the HTTP servers'
// shutdown does not wait on open browsers.
func (n *node) closePages() {
	for _, p := range n.pages {
		p.Close()
	}
}

// rateLimiter is what the node needs of a limiter driver.
type rateLimiter interface {
	pusher.RateLimiter
	Stats() limiter.Stats
}

// newLimiter returns the rate limiter for the HTTP API: with
// RATE_LIMITER_DRIVER=cluster and the cluster adapter, an app's limits hold
// for the whole cluster (leases from the Raft leader); with redis, for
// every node sharing the Redis; otherwise each node limits on its own.
func (n *node) newLimiter(cfg *config.Config, logger *slog.Logger) (rateLimiter, error) {
	switch cfg.RateLimiterDriver {
	case "cluster":
		if n.cluster != nil {
			return n.cluster.RateLimiter(limiter.ClusterOptions{Logger: logger}), nil
		}
		logger.Warn("RATE_LIMITER_DRIVER=cluster needs ADAPTER_DRIVER=cluster; limiting on this node only")
	case "redis":
		rdb, err := n.openRedis(cfg, cfg.RateLimiterRedisClusterMode)
		if err != nil {
			return nil, err
		}
		return limiter.NewRedis(limiter.RedisOptions{KeyPrefix: cfg.Redis.KeyPrefix, Logger: logger}, rdb), nil
	}
	return limiter.NewLocal(limiter.Options{}), nil
}

// openRedis opens a Redis driver's connection, closed with the node.
func (n *node) openRedis(cfg *config.Config, cluster bool) (redis.UniversalClient, error) {
	rdb, err := openRedis(cfg, cluster)
	if err == nil {
		n.redisClients = append(n.redisClients, rdb)
	}
	return rdb, err
}

// shutdown tells every client to reconnect elsewhere (4200) and keeps the
// node up, failing /ready and /accept-traffic, for the whole grace period so
// load balancers see it go; meanwhile the departures' webhooks are delivered
// and the API's publishes still go to the other nodes. Then the cluster
// refuses publishes (503), waits until the other nodes have acknowledged
// what it accepted (at most another grace period), and leaves.
func (n *node) shutdown(grace time.Duration) {
	deadline := time.Now().Add(grace)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if err := n.server.Shutdown(ctx); err != nil {
		n.logger.Warn("connections still open after the grace period", "open", n.server.ConnectionCount())
	}
	// Webhooks get at least a second even when the sockets used the whole period.
	hookCtx, hookCancel := context.WithDeadline(context.Background(), later(deadline, time.Now().Add(time.Second)))
	defer hookCancel()
	if err := n.webhooks.Close(hookCtx); err != nil {
		n.logger.Warn("webhooks still pending after the grace period", "dropped_total", n.webhooks.Stats().Dropped)
	}
	time.Sleep(time.Until(deadline))
	if n.cluster != nil {
		drainCtx, drainCancel := context.WithTimeout(context.Background(), max(grace, time.Second))
		defer drainCancel()
		if err := n.cluster.Drain(drainCtx); err != nil {
			n.logger.Warn("leaving with messages the other nodes have not acknowledged", "err", err)
		}
		n.cluster.Leave()
	}
	n.closePages()
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// close stops everything the node started; newNode calls it on a
// failure half way, before the server exists.
func (n *node) close() {
	n.closePages()
	if n.server != nil {
		n.server.Close()
	}
	if n.eventLoop != nil {
		n.eventLoop.Stop()
	}
	// A no-op after shutdown; otherwise pending webhooks are abandoned at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = n.webhooks.Close(ctx)
	if n.cluster != nil {
		n.cluster.Close()
	}
	if n.redis != nil {
		n.redis.Close()
	}
	for _, c := range n.redisClients {
		_ = c.Close()
	}
}

// metricsRouter serves the metrics port: health, usage, /metrics when
// enabled, and the whole cluster view.
func (n *node) metricsRouter(cfg *config.Config) http.Handler {
	r := chi.NewRouter()
	p := cfg.PathPrefix
	r.Get(p+"/", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("OK")) })
	api := n.server.Router()
	r.Get(p+"/ready", api.ServeHTTP)
	r.Get(p+"/usage", api.ServeHTTP)
	if n.metrics != nil {
		r.Get(p+"/metrics", n.metrics.Handler().ServeHTTP)
	}
	if cl := n.cluster; cl != nil {
		n.mountCluster(r, p, func(context.Context) any { return cl.Status() },
			func(ctx context.Context) any { return cl.Dashboard(ctx) })
	}
	return r
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// clusterFigures maps the cluster's counters onto the metrics package's.
func clusterFigures(f cluster.Figures) metrics.ClusterStats {
	lastContact := float64(f.Raft.LastContactMs) / 1000
	if f.Raft.LastContactMs < 0 {
		lastContact = -1
	}
	g := f.Gossip
	return metrics.ClusterStats{
		Members:                f.Members,
		BeaconsSent:            g.BeaconsSent,
		BeaconsReceived:        g.BeaconsReceived,
		BeaconsDropped:         g.Dropped(),
		RaftLeader:             f.Raft.State == "leader",
		RaftTerm:               f.Raft.Term,
		RaftCommitIndex:        f.Raft.CommitIndex,
		RaftAppliedIndex:       f.Raft.AppliedIndex,
		RaftLastContactSeconds: lastContact,
		RaftApplies:            f.Raft.Stats.Applies,
		RaftErrors:             f.Raft.Stats.Errors,
		RaftForwards:           f.Raft.Stats.Forwards,
		StreamsSent:            f.Streams.Sent,
		StreamsDelivered:       f.Streams.Delivered,
		StreamsRetransmitted:   f.Streams.Retransmitted,
		StreamsDropped:         f.Streams.Dropped,
		StreamsLost:            f.Streams.Lost,
		StreamsDuplicates:      f.Streams.Duplicates,
		StreamsBackpressure:    f.Streams.Backpressure,
		StreamsReconnects:      f.Streams.Reconnects,
		StreamsQueuedBytes:     f.StreamsQueued,
	}
}
