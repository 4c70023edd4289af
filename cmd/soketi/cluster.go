package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/soketi-go/soketi/internal/config"
)

// clusterNode is this node's membership in the cluster.
type clusterNode struct{}

func startCluster(context.Context, *config.Config, *slog.Logger) (*clusterNode, error) {
	return nil, errors.New("invalid ADAPTER_DRIVER=cluster: cluster mode is not available in this build")
}

func (c *clusterNode) View() any { return nil }
func (c *clusterNode) Leave()    {}
func (c *clusterNode) Close()    {}
