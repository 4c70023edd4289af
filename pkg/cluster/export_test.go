package cluster

import (
	"context"

	"github.com/soketi-go/soketi/pkg/cluster/stream"
	"github.com/soketi-go/soketi/pkg/consensus"
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

// HoldRemovalForTest has this node apply the removal of a member (as a
// replayed log entry would); it is held back while the user has a local
// socket. It reports whether it was held.
func (a *Adapter) HoldRemovalForTest(app, channel string, userID []byte) bool {
	return a.view.removed(app, channel, consensus.Member{UserID: userID}, ^uint64(0))
}

// UndoJoinForTest takes back a socket's local join, as Subscribe does when
// the replica refuses or does not confirm it.
func (a *Adapter) UndoJoinForTest(socketID, app, channel string) bool {
	for _, c := range a.local.LocalSockets(app) {
		if c.ID == socketID {
			a.undoJoin(context.Background(), c, channel)
			return true
		}
	}
	return false
}

// HeldCountForTest is the number of removals held back.
func (a *Adapter) HeldCountForTest() int { return a.view.heldCount() }
