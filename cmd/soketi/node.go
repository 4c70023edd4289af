package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/soketi-go/soketi/internal/config"
	"github.com/soketi-go/soketi/pkg/pusher"
)

// node is one running server: the protocol engine, its HTTP handlers and,
// in cluster mode, its membership in the cluster.
type node struct {
	server         *pusher.Server
	handler        http.Handler
	metricsHandler http.Handler
	cluster        *clusterNode
	logger         *slog.Logger
}

func newNode(ctx context.Context, cfg *config.Config, apps *pusher.StaticApps, logger *slog.Logger) (*node, error) {
	n := &node{logger: logger}
	var adapter pusher.Adapter = pusher.NewLocalAdapter()
	if cfg.AdapterDriver == "cluster" {
		cl, err := startCluster(ctx, cfg, logger)
		if err != nil {
			return nil, err
		}
		n.cluster = cl
	}
	n.server = pusher.New(pusher.Options{
		Apps:                      apps,
		Adapter:                   adapter,
		Logger:                    logger,
		UserAuthenticationTimeout: cfg.UserAuthenticationTimeout,
		ChannelCacheTTL:           cfg.ChannelCacheTTL,
		PathPrefix:                cfg.PathPrefix,
		RequestLimitBytes:         int64(cfg.RequestLimitInMB * 1024 * 1024),
		CORSOrigin:                cfg.CORS.Origin,
		CORSMethods:               cfg.CORS.Methods,
		CORSHeaders:               cfg.CORS.AllowedHeaders,
		MemoryThresholdPct:        cfg.AcceptTrafficMemoryThreshold,
	})

	api := n.server.Router()
	r := chi.NewRouter()
	if n.cluster != nil {
		r.Get(cfg.PathPrefix+"/cluster", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(n.cluster.View())
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
	n.metricsHandler = metricsRouter(cfg, n.server)
	return n, nil
}

// shutdown tells every client to reconnect elsewhere (4200) and waits for them
// to go, at most the grace period; then it leaves the cluster.
func (n *node) shutdown(grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := n.server.Shutdown(ctx); err != nil {
		n.logger.Warn("connections still open after the grace period", "open", n.server.ConnectionCount())
	}
	if n.cluster != nil {
		n.cluster.Leave()
	}
}

func (n *node) close() {
	n.server.Close()
	if n.cluster != nil {
		n.cluster.Close()
	}
}

// metricsRouter serves the metrics port: health, usage and, when enabled, /metrics.
func metricsRouter(cfg *config.Config, srv *pusher.Server) http.Handler {
	r := chi.NewRouter()
	p := cfg.PathPrefix
	r.Get(p+"/", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("OK")) })
	api := srv.Router()
	r.Get(p+"/ready", api.ServeHTTP)
	r.Get(p+"/usage", api.ServeHTTP)
	return r
}
