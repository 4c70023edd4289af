package cluster

import (
	"github.com/soketi-go/soketi/pkg/cluster/stream"
	"github.com/soketi-go/soketi/pkg/gossip"
)

// StreamsForTest is the node's streams, for tests that break them.
func (n *Node) StreamsForTest() *stream.Streams { return n.streams }

// SetViewForTest makes membership see gossip's members through f (nil: as
// gossip has them) and applies it at once, to fake a partition: what f
// marks dead is routed as dead, at the address f gives.
func (n *Node) SetViewForTest(f func([]gossip.Member) []gossip.Member) {
	if f == nil {
		n.rewriteView.Store(nil)
	} else {
		n.rewriteView.Store(&f)
	}
	select {
	case n.poke <- struct{}{}:
	default:
	}
}
