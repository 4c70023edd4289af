package cluster

import (
	"sync"

	"github.com/soketi-go/soketi/pkg/consensus"
	"github.com/soketi-go/soketi/pkg/pusher"
)

// memberView orders what each local socket of a presence channel is told,
// so that its list plus the events that follow it always equal the
// channel's members:
//   - a socket gets no member event before its subscription_succeeded, and
//     then only the changes committed after the log index its list was
//     built at (a node catching up does not replay what the list reflects);
//   - its list always contains itself;
//   - a user that still has a socket on this node is never announced as
//     removed here: a purge made while this node was cut off is held back,
//     the user is proposed again, and its return is not announced either.
//
// Its lock is taken by the raft apply goroutine (OnApply) and by a
// subscriber sending its list, which is what orders the two.
type memberView struct {
	local *pusher.LocalAdapter

	mu   sync.Mutex
	base map[*pusher.Conn]map[chanKey]uint64     // sockets that have their list, and its index
	held map[chanKey]map[string]consensus.Member // removals held back, by member key
}

type chanKey struct{ app, channel string }

func newMemberView(local *pusher.LocalAdapter) *memberView {
	return &memberView{local: local, base: map[*pusher.Conn]map[chanKey]uint64{},
		held: map[chanKey]map[string]consensus.Member{}}
}

// succeed sends c its subscription_succeeded from the replica and starts
// its member events after the index the list reflects.
func (v *memberView) succeed(c *pusher.Conn, fsm *consensus.FSM, app, channel string, self pusher.Member) {
	key := chanKey{app, channel}
	v.mu.Lock()
	defer v.mu.Unlock()
	ms, index := fsm.MembersAt(app, channel)
	members := toMembers(ms)
	members = withMember(members, self)
	for _, h := range v.held[key] {
		members = withMember(members, pusher.Member(h))
	}
	c.Send(pusher.TextFrame(pusher.SubscriptionSucceededJSON(channel, members)))
	bases := v.base[c]
	if bases == nil {
		bases = map[chanKey]uint64{}
		v.base[c] = bases
	}
	bases[key] = index
}

func withMember(ms []pusher.Member, m pusher.Member) []pusher.Member {
	for _, x := range ms {
		if x.Key() == m.Key() {
			return ms
		}
	}
	return append(ms, m)
}

// forget drops c's state for channel (it left) or for every channel.
func (v *memberView) forget(c *pusher.Conn, app, channel string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if channel == "" {
		delete(v.base, c)
		return
	}
	if bases := v.base[c]; bases != nil {
		delete(bases, chanKey{app, channel})
		if len(bases) == 0 {
			delete(v.base, c)
		}
	}
}

// added tells the local sockets that have their list of a member added at
// index; a user whose removal was held back comes back unannounced.
func (v *memberView) added(app, channel string, m consensus.Member, index uint64) {
	key := chanKey{app, channel}
	pm := pusher.Member(m)
	v.mu.Lock()
	defer v.mu.Unlock()
	if h := v.held[key]; h != nil {
		if _, ok := h[pm.Key()]; ok {
			v.unhold(key, pm.Key())
			return
		}
	}
	f := pusher.TextFrame(pusher.MemberAddedJSON(channel, pm))
	v.local.PublishWhere(app, channel, f, func(c *pusher.Conn, memberKey string) bool {
		return memberKey != pm.Key() && v.after(c, key, index)
	})
}

// removed tells the local sockets of a member removed at index, unless the
// user still has a socket here: then the removal is held back and hold
// reports true, so the caller proposes the user again.
func (v *memberView) removed(app, channel string, m consensus.Member, index uint64) (hold bool) {
	key := chanKey{app, channel}
	pm := pusher.Member(m)
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.local.HasLocalMember(app, channel, pm.UserID) {
		h := v.held[key]
		if h == nil {
			h = map[string]consensus.Member{}
			v.held[key] = h
		}
		h[pm.Key()] = m
		return true
	}
	v.publishRemoved(key, pm, index)
	return false
}

// localLeft is called when the user's last local socket left the channel:
// if its removal was held back, the replica no longer has it and no event
// will come, so the local sockets are told now.
func (v *memberView) localLeft(app, channel string, m pusher.Member) {
	key := chanKey{app, channel}
	v.mu.Lock()
	defer v.mu.Unlock()
	if h := v.held[key]; h != nil {
		if _, ok := h[m.Key()]; ok {
			v.unhold(key, m.Key())
			v.publishRemoved(key, m, ^uint64(0)) // every socket that has its list
		}
	}
}

func (v *memberView) publishRemoved(key chanKey, m pusher.Member, index uint64) {
	f := pusher.TextFrame(pusher.MemberRemovedJSON(key.channel, m))
	v.local.PublishWhere(key.app, key.channel, f, func(c *pusher.Conn, _ string) bool {
		return v.after(c, key, index)
	})
}

func (v *memberView) unhold(key chanKey, memberKey string) {
	delete(v.held[key], memberKey)
	if len(v.held[key]) == 0 {
		delete(v.held, key)
	}
}

// after reports whether c has its list of key and it predates index; v.mu
// is held.
func (v *memberView) after(c *pusher.Conn, key chanKey, index uint64) bool {
	base, ok := v.base[c][key]
	return ok && index > base
}

// heldCount is the number of held-back removals, for tests.
func (v *memberView) heldCount() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := 0
	for _, h := range v.held {
		n += len(h)
	}
	return n
}
