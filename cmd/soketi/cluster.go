package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/soketi-go/soketi/internal/config"
	"github.com/soketi-go/soketi/pkg/gossip"
)

// clusterLeaveTimeout bounds the graceful leave on shutdown.
const clusterLeaveTimeout = 3 * time.Second

// clusterNode is this node's membership in the cluster.
type clusterNode struct {
	members *gossip.Members
	logger  *slog.Logger
}

// startCluster joins the cluster described by cfg.Cluster: it binds the
// discovery and gossip sockets and starts finding peers.
func startCluster(ctx context.Context, cfg *config.Config, logger *slog.Logger) (*clusterNode, error) {
	c := cfg.Cluster
	gcfg := gossip.Config{
		ClusterName:       c.Prefix,
		NodeID:            c.NodeID,
		BindHost:          c.Host,
		DiscoveryPort:     c.Port,
		GossipPort:        c.GossipPort,
		AdvertiseAddr:     c.AdvertiseAddress,
		BroadcastAddress:  c.BroadcastAddress,
		MulticastAddress:  c.MulticastAddress,
		UnicastAddresses:  c.UnicastAddresses,
		KeepaliveInterval: c.KeepaliveInterval,
		CheckInterval:     c.CheckInterval,
		NodeTimeout:       c.NodeTimeout,
		MasterTimeout:     c.MasterTimeout,
		SecretKey:         c.SecretKey,
		HTTPAddr:          advertisedHTTP(cfg),
		Logger:            logger,
	}
	m, err := gossip.New(gcfg)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if err := m.Start(ctx); err != nil {
		m.Shutdown()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	self := m.LocalNode()
	logger.Info("cluster membership started", "node_id", self.ID, "gossip_address", self.GossipAddr,
		"discovery", m.View().Discovery.Mode)
	return &clusterNode{members: m, logger: logger}, nil
}

// advertisedHTTP is the HTTP address peers are told: the bind host when it is
// specific, else the cluster advertise address; an empty host is filled in
// by peers from the gossip address.
func advertisedHTTP(cfg *config.Config) string {
	host := cfg.Host
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = cfg.Cluster.AdvertiseAddress
	}
	return net.JoinHostPort(host, strconv.Itoa(cfg.Port))
}

// View is what GET /cluster shows.
func (c *clusterNode) View() any { return c.members.View() }

// Leave announces a graceful departure so that peers mark this node "left" at once.
func (c *clusterNode) Leave() {
	if err := c.members.Leave(clusterLeaveTimeout); err != nil {
		c.logger.Warn("cluster leave incomplete", "err", err)
	}
}

// Close stops gossip without a leave notice.
func (c *clusterNode) Close() { c.members.Shutdown() }
