package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/soketi-go/soketi/internal/config"
	"github.com/soketi-go/soketi/pkg/cluster"
	"github.com/soketi-go/soketi/pkg/clusternet"
	"github.com/soketi-go/soketi/pkg/consensus"
	"github.com/soketi-go/soketi/pkg/gossip"
	"github.com/soketi-go/soketi/pkg/pusher"
)

// startCluster joins the cluster described by cfg.Cluster.
func startCluster(ctx context.Context, cfg *config.Config, local *pusher.LocalAdapter, logger *slog.Logger) (*cluster.Node, error) {
	c := cfg.Cluster
	var creds *clusternet.Credentials
	if c.TLS.Enabled() {
		// An operator's PKI: the certificate's common name is the node id.
		var err error
		if creds, err = clusternet.LoadCredentials(c.TLS.CAPath, c.TLS.CertPath, c.TLS.KeyPath, c.NodeID); err != nil {
			return nil, &config.Error{Name: "CLUSTER_TLS_CERT", Value: c.TLS.CertPath, Msg: err.Error()}
		}
		c.NodeID = creds.NodeID()
	}
	nodeID, err := loadNodeID(c)
	if err != nil {
		return nil, err
	}
	if base64.StdEncoding.EncodeToString(c.SecretKey) == config.ExampleClusterKey {
		logger.Warn("CLUSTER_KEY is the example key from deploy/: anyone can derive the cluster's certificates " +
			"from it. Replace it on every node (openssl rand -base64 32).")
	}
	if creds == nil && c.SecretKey != nil {
		if creds, err = clusternet.DeriveCredentials(c.SecretKey, nodeID); err != nil {
			return nil, &config.Error{Name: "CLUSTER_KEY", Msg: err.Error()}
		}
	}
	node, err := cluster.Start(ctx, cluster.NodeConfig{
		Gossip: gossip.Config{
			ClusterName:       c.Prefix,
			NodeID:            nodeID,
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
			MasterTimeout:     max(c.MasterTimeout, c.NodeTimeout),
			SecretKey:         c.SecretKey,
			HTTPAddr:          advertisedHTTP(cfg),
		},
		DataDir:         c.DataDir,
		RaftPort:        c.RaftPort,
		Credentials:     creds,
		ExpectedServers: c.ExpectedServers,
		MasterTimeout:   c.MasterTimeout,
		ReapDelay:       c.ReapDelay,
		RequestTimeout:  cfg.ClusterRequestsTimeout,
		Logger:          logger,
	}, local)
	if errors.Is(err, consensus.ErrDirInUse) {
		return nil, &config.Error{Name: "CLUSTER_DATA_DIR", Value: c.DataDir,
			Msg: "another process has this directory open (" + err.Error() + "); give each node its own"}
	}
	return node, err
}

// loadNodeID returns CLUSTER_NODE_ID, or the id kept in the data directory so
// that a restarted node rejoins Raft under the same name; a new one is made
// and kept on first start.
func loadNodeID(c config.Cluster) (string, error) {
	if c.NodeID != "" {
		return c.NodeID, nil
	}
	path := filepath.Join(c.DataDir, "node-id")
	if b, err := os.ReadFile(path); err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id, nil
		}
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "soketi"
	}
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	id := host + "-" + hex.EncodeToString(suffix[:])
	// Unwritable is the operator's to fix: exit 2 naming the variable.
	if err := os.MkdirAll(c.DataDir, 0o750); err != nil {
		return "", &config.Error{Name: "CLUSTER_DATA_DIR", Value: c.DataDir, Msg: err.Error()}
	}
	if err := os.WriteFile(path, []byte(id+"\n"), 0o640); err != nil {
		return "", &config.Error{Name: "CLUSTER_DATA_DIR", Value: c.DataDir, Msg: err.Error()}
	}
	return id, nil
}

// advertisedHTTP is the HTTP address peers are told: the bind host when it is
// specific; an unspecified host is filled in from the advertise address.
func advertisedHTTP(cfg *config.Config) string {
	host := cfg.Host
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = cfg.Cluster.AdvertiseAddress
	}
	return net.JoinHostPort(host, strconv.Itoa(cfg.Port))
}
