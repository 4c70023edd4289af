package pusher

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
)

// LocalAdapter keeps the state of this process only. A cluster adapter uses
// it for delivery to the connections of its own node.
type LocalAdapter struct {
	mu  sync.RWMutex
	nss map[string]*namespace
	// fanouts counts publishes in progress. With more than one, the server
	// is busy and frames are queued to coalesce rather than written at once.
	fanouts atomic.Int32
}

// NewLocalAdapter returns an empty local adapter.
func NewLocalAdapter() *LocalAdapter { return &LocalAdapter{nss: map[string]*namespace{}} }

// namespace is one app's connections, channels and users.
type namespace struct {
	mu       sync.RWMutex
	sockets  map[string]*Conn
	channels map[string]*channelState
	users    map[string]map[*Conn]struct{}
}

type channelState struct {
	subs    []*Conn       // dense, for a fast fan-out loop
	index   map[*Conn]int // position in subs, for O(1) removal
	members map[string]*memberState
	joined  map[*Conn]string // member key each presence connection joined as
}

type memberState struct {
	Member
	conns int
}

func (a *LocalAdapter) ns(appID string, create bool) *namespace {
	a.mu.RLock()
	n := a.nss[appID]
	a.mu.RUnlock()
	if n != nil || !create {
		return n
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if n = a.nss[appID]; n == nil {
		n = &namespace{sockets: map[string]*Conn{}, channels: map[string]*channelState{}, users: map[string]map[*Conn]struct{}{}}
		a.nss[appID] = n
	}
	return n
}

// AddSocket registers c, refusing it when the app is at its quota.
func (a *LocalAdapter) AddSocket(_ context.Context, c *Conn) error {
	n := a.ns(c.App.ID, true)
	n.mu.Lock()
	defer n.mu.Unlock()
	if limit := c.App.ConnectionLimit(); limit >= 0 && len(n.sockets)+1 > limit {
		return ErrQuotaExceeded
	}
	n.sockets[c.ID] = c
	return nil
}

// RemoveSocket forgets c and its user record.
func (a *LocalAdapter) RemoveSocket(c *Conn) UserChange {
	n := a.ns(c.App.ID, false)
	if n == nil {
		return UserChange{}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.sockets, c.ID)
	var uc UserChange
	if uid := c.UserID(); uid != "" && n.dropUser(uid, c) {
		uc.Offline = uid
	}
	return uc
}

// dropUser removes c from uid's connections and reports whether it was
// the last; n.mu is held.
func (n *namespace) dropUser(uid string, c *Conn) bool {
	set := n.users[uid]
	if set == nil {
		return false
	}
	if _, ok := set[c]; !ok {
		return false
	}
	delete(set, c)
	if len(set) == 0 {
		delete(n.users, uid)
		return true
	}
	return false
}

// Subscribe adds c to channel; presence members are counted per connection.
func (a *LocalAdapter) Subscribe(_ context.Context, c *Conn, channel string, m *Member) (JoinResult, error) {
	n := a.ns(c.App.ID, true)
	n.mu.Lock()
	defer n.mu.Unlock()
	ch := n.channels[channel]
	if ch == nil {
		ch = &channelState{index: map[*Conn]int{}}
		n.channels[channel] = ch
	}
	var res JoinResult
	_, already := ch.index[c]
	if m != nil {
		if ch.members == nil {
			ch.members = map[string]*memberState{}
		}
		key := m.Key()
		ms := ch.members[key]
		switch {
		case ms == nil:
			if limit := c.App.MaxPresenceMembersPerChannel; limit >= 0 && len(ch.members)+1 > limit {
				if len(ch.subs) == 0 {
					delete(n.channels, channel)
				}
				return JoinResult{}, ErrMemberLimit
			}
			ch.members[key] = &memberState{Member: *m, conns: 1}
			res.MemberAdded = true
		case !already:
			ms.conns++
			ms.UserInfo = m.UserInfo
		}
		res.Members = ch.memberList()
		if !already {
			if ch.joined == nil {
				ch.joined = map[*Conn]string{}
			}
			ch.joined[c] = key
		}
	}
	if !already {
		ch.index[c] = len(ch.subs)
		ch.subs = append(ch.subs, c)
		res.Occupied = len(ch.subs) == 1
	}
	return res, nil
}

// Unsubscribe removes c from channel and reports the transitions.
func (a *LocalAdapter) Unsubscribe(_ context.Context, c *Conn, channel string) (LeaveResult, error) {
	n := a.ns(c.App.ID, false)
	if n == nil {
		return LeaveResult{}, nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	ch := n.channels[channel]
	if ch == nil {
		return LeaveResult{}, nil
	}
	i, ok := ch.index[c]
	if !ok {
		return LeaveResult{}, nil
	}
	last := len(ch.subs) - 1
	ch.subs[i] = ch.subs[last]
	ch.index[ch.subs[i]] = i
	ch.subs[last] = nil
	ch.subs = ch.subs[:last]
	delete(ch.index, c)

	res := LeaveResult{WasSubscribed: true}
	if key, ok := ch.joined[c]; ok && ch.members != nil {
		delete(ch.joined, c)
		if ms := ch.members[key]; ms != nil {
			ms.conns--
			if ms.conns <= 0 {
				delete(ch.members, key)
				removed := ms.Member
				res.RemovedMember = &removed
			}
		}
	}
	if len(ch.subs) == 0 {
		delete(n.channels, channel)
		res.Vacated = true
	}
	return res, nil
}

// SignIn indexes c under userID for server-to-user messages, termination
// and watchlists.
func (a *LocalAdapter) SignIn(_ context.Context, c *Conn, userID string) UserChange {
	n := a.ns(c.App.ID, true)
	n.mu.Lock()
	defer n.mu.Unlock()
	var uc UserChange
	if c.isClosed() {
		// RemoveSocket ran (or waits for n.mu): recording the user now
		// would leave it online for good.
		return uc
	}
	if prev := c.swapUserID(userID); prev != "" && prev != userID && n.dropUser(prev, c) {
		uc.Offline = prev
	}
	set := n.users[userID]
	if set == nil {
		set = map[*Conn]struct{}{}
		n.users[userID] = set
		uc.Online = userID
	}
	set[c] = struct{}{}
	return uc
}

// OnlineUsers returns those of ids signed in on this process.
func (a *LocalAdapter) OnlineUsers(_ context.Context, appID string, ids []string) ([]string, error) {
	n := a.ns(appID, false)
	if n == nil {
		return nil, nil
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	var out []string
	for _, id := range ids {
		if len(n.users[id]) > 0 {
			out = append(out, id)
		}
	}
	return out, nil
}

// IsSignedIn reports whether a local connection is signed in as userID.
func (a *LocalAdapter) IsSignedIn(appID, userID string) bool {
	n := a.ns(appID, false)
	if n == nil {
		return false
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	return len(n.users[userID]) > 0
}

// SignedInUsers lists every user signed in on this process, by app, for a
// cluster adapter re-announcing its state.
func (a *LocalAdapter) SignedInUsers() map[string][]string {
	a.mu.RLock()
	nss := make(map[string]*namespace, len(a.nss))
	for id, n := range a.nss {
		nss[id] = n
	}
	a.mu.RUnlock()
	out := map[string][]string{}
	for id, n := range nss {
		n.mu.RLock()
		for uid := range n.users {
			out[id] = append(out[id], uid)
		}
		n.mu.RUnlock()
	}
	return out
}

// Publish delivers f to the local subscribers of channel.
func (a *LocalAdapter) Publish(_ context.Context, appID, channel string, f Frame, except string) (int, error) {
	n := a.ns(appID, false)
	if n == nil {
		return 0, nil
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	ch := n.channels[channel]
	if ch == nil {
		return 0, nil
	}
	direct := a.fanouts.Add(1) == 1
	defer a.fanouts.Add(-1)
	sent := 0
	for _, c := range ch.subs {
		if except != "" && c.ID == except {
			continue
		}
		c.deliver(f, direct)
		sent++
	}
	return sent, nil
}

// SendToUser delivers f to the local connections of userID.
func (a *LocalAdapter) SendToUser(_ context.Context, appID, userID string, f Frame) (int, error) {
	n := a.ns(appID, false)
	if n == nil {
		return 0, nil
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	for c := range n.users[userID] {
		c.Send(f)
	}
	return len(n.users[userID]), nil
}

// TerminateUser closes the local connections of userID with 4009.
func (a *LocalAdapter) TerminateUser(_ context.Context, appID, userID string) error {
	n := a.ns(appID, false)
	if n == nil {
		return nil
	}
	n.mu.RLock()
	conns := make([]*Conn, 0, len(n.users[userID]))
	for c := range n.users[userID] {
		conns = append(conns, c)
	}
	n.mu.RUnlock()
	for _, c := range conns {
		c.CloseWith(ErrTerminated)
	}
	return nil
}

// SocketCount returns the number of local connections of the app.
func (a *LocalAdapter) SocketCount(_ context.Context, appID string) (int, error) {
	n := a.ns(appID, false)
	if n == nil {
		return 0, nil
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	return len(n.sockets), nil
}

// Channels lists the occupied channels with their counts.
func (a *LocalAdapter) Channels(_ context.Context, appID string) (map[string]ChannelInfo, error) {
	out := map[string]ChannelInfo{}
	n := a.ns(appID, false)
	if n == nil {
		return out, nil
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	for name, ch := range n.channels {
		out[name] = ChannelInfo{SubscriptionCount: len(ch.subs), UserCount: len(ch.members)}
	}
	return out, nil
}

// Channel returns one channel's counts (zero when unoccupied).
func (a *LocalAdapter) Channel(_ context.Context, appID, channel string) (ChannelInfo, error) {
	n := a.ns(appID, false)
	if n == nil {
		return ChannelInfo{}, nil
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	ch := n.channels[channel]
	if ch == nil {
		return ChannelInfo{}, nil
	}
	return ChannelInfo{SubscriptionCount: len(ch.subs), UserCount: len(ch.members)}, nil
}

// Members lists a presence channel's distinct users.
func (a *LocalAdapter) Members(_ context.Context, appID, channel string) ([]Member, error) {
	n := a.ns(appID, false)
	if n == nil {
		return nil, nil
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	ch := n.channels[channel]
	if ch == nil {
		return nil, nil
	}
	return ch.memberList(), nil
}

// LocalSockets returns this node's connections of an app (for shutdown and tests).
func (a *LocalAdapter) LocalSockets(appID string) []*Conn {
	n := a.ns(appID, false)
	if n == nil {
		return nil
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	out := make([]*Conn, 0, len(n.sockets))
	for _, c := range n.sockets {
		out = append(out, c)
	}
	return out
}

// AllSockets returns every local connection of every app.
func (a *LocalAdapter) AllSockets() []*Conn {
	a.mu.RLock()
	ids := make([]string, 0, len(a.nss))
	for id := range a.nss {
		ids = append(ids, id)
	}
	a.mu.RUnlock()
	var out []*Conn
	for _, id := range ids {
		out = append(out, a.LocalSockets(id)...)
	}
	return out
}

// Stats counts what the adapter holds, to prove that nothing leaks.
type Stats struct {
	Sockets, Channels, Users, Members int
}

// Stats sums the state of every app.
func (a *LocalAdapter) Stats() Stats {
	a.mu.RLock()
	defer a.mu.RUnlock()
	var s Stats
	for _, n := range a.nss {
		n.mu.RLock()
		s.Sockets += len(n.sockets)
		s.Channels += len(n.channels)
		s.Users += len(n.users)
		for _, ch := range n.channels {
			s.Members += len(ch.members)
		}
		n.mu.RUnlock()
	}
	return s
}

func (ch *channelState) memberList() []Member {
	out := make([]Member, 0, len(ch.members))
	for _, m := range ch.members {
		out = append(out, m.Member)
	}
	sort.Slice(out, func(i, j int) bool { return string(out[i].UserID) < string(out[j].UserID) })
	return out
}

// AppSocketCounts returns the number of local connections of every app.
func (a *LocalAdapter) AppSocketCounts() map[string]int {
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := make(map[string]int, len(a.nss))
	for id, n := range a.nss {
		n.mu.RLock()
		if len(n.sockets) > 0 {
			out[id] = len(n.sockets)
		}
		n.mu.RUnlock()
	}
	return out
}

// LocalChannel is one occupied channel of this process, for a cluster
// adapter re-announcing its state.
type LocalChannel struct {
	App, Channel string
	Subscribers  int
	Members      []Member
}

// LocalChannels lists every occupied local channel of every app.
func (a *LocalAdapter) LocalChannels() []LocalChannel {
	a.mu.RLock()
	ids := make([]string, 0, len(a.nss))
	for id := range a.nss {
		ids = append(ids, id)
	}
	a.mu.RUnlock()
	var out []LocalChannel
	for _, id := range ids {
		n := a.ns(id, false)
		n.mu.RLock()
		for name, ch := range n.channels {
			out = append(out, LocalChannel{App: id, Channel: name, Subscribers: len(ch.subs), Members: ch.memberList()})
		}
		n.mu.RUnlock()
	}
	return out
}

// HasLocalSubscribers reports whether channel has a subscriber in this process.
func (a *LocalAdapter) HasLocalSubscribers(appID, channel string) bool {
	n := a.ns(appID, false)
	if n == nil {
		return false
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.channels[channel] != nil
}

// HasLocalMember reports whether a local connection is in channel as user.
func (a *LocalAdapter) HasLocalMember(appID, channel string, userID []byte) bool {
	n := a.ns(appID, false)
	if n == nil {
		return false
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	ch := n.channels[channel]
	return ch != nil && ch.members[string(userID)] != nil
}

// PublishWhere delivers f to the local subscribers of channel for which keep
// returns true; keep is given the member key each joined a presence channel
// as ("" otherwise) and is called with the adapter's lock held, so it must
// not call back into the adapter.
func (a *LocalAdapter) PublishWhere(appID, channel string, f Frame, keep func(c *Conn, memberKey string) bool) int {
	n := a.ns(appID, false)
	if n == nil {
		return 0
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	ch := n.channels[channel]
	if ch == nil {
		return 0
	}
	sent := 0
	for _, c := range ch.subs {
		if !keep(c, ch.joined[c]) {
			continue
		}
		c.send(f, false)
		sent++
	}
	return sent
}

// SubscriptionCount is the channel's subscriptions in this process.
func (a *LocalAdapter) SubscriptionCount(appID, channel string) int {
	n := a.ns(appID, false)
	if n == nil {
		return 0
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	if ch := n.channels[channel]; ch != nil {
		return len(ch.subs)
	}
	return 0
}

// PublishLocal is Publish: this process is every node there is.
func (a *LocalAdapter) PublishLocal(appID, channel string, f Frame) int {
	n, _ := a.Publish(context.Background(), appID, channel, f, "")
	return n
}

// SendsCountWebhooks: one process, so it sends them.
func (a *LocalAdapter) SendsCountWebhooks() bool { return true }
