package consensus

import (
	"strings"

	"github.com/hashicorp/raft"
)

// Raft dials servers through addrProvider (raft's ServerAddressProvider):
// a server's current address comes from the membership, where a restarted
// node announces its new address at once, and only then from the raft
// configuration, which only a leader can change. So a follower whose peer
// came back at a new address (a new pod IP) still reaches it for votes,
// and the group can elect the leader that then updates the configuration.
//
// The provider returns "id@host:port": the raft transport pools
// connections by that string, so connections to two servers are never
// shared even if both are known at one address (an address reused by
// another node), and raftLayer.Dial knows which node's certificate to
// require. This node's own address stays plain, because raft also uses
// the provider to encode the leader and candidate addresses it sends.

// addrProvider resolves raft server ids for the transport.
type addrProvider struct{ n *Node }

var _ raft.ServerAddressProvider = addrProvider{}

// ServerAddr returns the tagged address raft dials for id.
func (p addrProvider) ServerAddr(id raft.ServerID) (raft.ServerAddress, error) {
	if string(id) == p.n.cfg.NodeID {
		return raft.ServerAddress(p.n.Addr()), nil
	}
	addr := p.n.memberAddr(string(id))
	if addr == "" {
		addr = p.n.configuredAddr(id)
	}
	// With no address (a server just removed, which raft still tries to
	// reach once) the dial fails: an error here would only make raft log
	// a warning and dial the address it has, unchecked.
	return raft.ServerAddress(tagAddr(string(id), addr)), nil
}

// tagAddr names the server expected at addr.
func tagAddr(id, addr string) string { return id + "@" + addr }

// untagAddr splits a tagged address at its last '@' (a host:port has
// none; a node id may); addr is empty for a server with no known address.
// ok is false for a plain address.
func untagAddr(s string) (id, addr string, ok bool) {
	i := strings.LastIndexByte(s, '@')
	if i <= 0 {
		return "", s, false
	}
	return s[:i], s[i+1:], true
}

// memberAddr is the cluster address the membership gives an alive peer,
// "" if it is not alive there.
func (n *Node) memberAddr(id string) string {
	for _, p := range n.members.Alive() {
		if p.ID == id {
			return p.RaftAddr
		}
	}
	return ""
}

// configuredAddr is the address of id in the latest raft configuration,
// "" if it is not there.
func (n *Node) configuredAddr(id raft.ServerID) string {
	r := n.raft()
	if r == nil {
		return ""
	}
	f := r.GetConfiguration() // reads a copy; never waits on raft's loop
	if f.Error() != nil {
		return ""
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == id {
			return string(s.Address)
		}
	}
	return ""
}
