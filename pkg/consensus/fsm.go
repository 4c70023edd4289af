package consensus

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// Limits cap the replicated state. A command that would exceed a cap is not
// applied: its Result has StatusLimit, every replica makes the same decision,
// and nothing panics.
type Limits struct {
	// MaxMembersPerChannel caps distinct users in one presence channel.
	// A join of a new user into a full channel is rejected; further sockets
	// of an existing member are still counted.
	MaxMembersPerChannel int
	// MaxEntries caps (member, node) socket-count entries plus (channel, node)
	// occupancy entries over all apps; a command adding one is rejected.
	MaxEntries int
	// MaxNodes caps registered nodes; NodeUp of a new node is rejected.
	MaxNodes int
	// MaxPendingHooks caps the webhook outbox; the oldest are dropped.
	MaxPendingHooks int
}

// DefaultLimits are far above Pusher's 100 members per channel; they only
// keep a misbehaving proposer from exhausting memory on every replica.
var DefaultLimits = Limits{MaxMembersPerChannel: 10_000, MaxEntries: 1_000_000, MaxNodes: 1024,
	MaxPendingHooks: DefaultMaxPendingHooks}

func (l Limits) withDefaults() Limits {
	if l.MaxMembersPerChannel <= 0 {
		l.MaxMembersPerChannel = DefaultLimits.MaxMembersPerChannel
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultLimits.MaxEntries
	}
	if l.MaxNodes <= 0 {
		l.MaxNodes = DefaultLimits.MaxNodes
	}
	if l.MaxPendingHooks <= 0 {
		l.MaxPendingHooks = DefaultLimits.MaxPendingHooks
	}
	return l
}

// OnlineChannel is the reserved presence channel whose members are the
// users with a signed-in connection (watchlists). No client can subscribe
// to a "#" name, so it never meets a real channel; it has no per-channel
// member cap (MaxEntries still bounds it) and no webhooks.
const OnlineChannel = "#online-users"

// ChannelStat is the cluster-wide view of one channel.
type ChannelStat struct {
	Nodes int `json:"nodes"` // nodes with at least one local subscriber
	Users int `json:"users"` // presence members
}

type member struct {
	id, info json.RawMessage
	sockets  map[string]uint32 // node id → sockets of this user in the channel
}

type channelState struct {
	nodes   map[string]struct{} // nodes with local subscribers
	members map[string]*member  // by compact user id JSON
}

func (c *channelState) empty() bool { return len(c.nodes) == 0 && len(c.members) == 0 }

type state struct {
	nodes   map[string]uint64                   // node id → incarnation
	apps    map[string]map[string]*channelState // app → channel → state
	entries int
	// hooks is the webhook outbox (hooks.go), in log order.
	hooks        []Hook
	hooksDropped uint64
}

func newState() *state {
	return &state{nodes: make(map[string]uint64), apps: make(map[string]map[string]*channelState)}
}

func (s *state) channel(app, ch string) *channelState {
	return s.apps[app][ch]
}

func (s *state) ensureChannel(app, ch string) *channelState {
	chans := s.apps[app]
	if chans == nil {
		chans = make(map[string]*channelState)
		s.apps[app] = chans
	}
	c := chans[ch]
	if c == nil {
		c = &channelState{nodes: make(map[string]struct{}), members: make(map[string]*member)}
		chans[ch] = c
	}
	return c
}

func (s *state) dropIfEmpty(app, ch string) {
	if c := s.apps[app][ch]; c != nil && c.empty() {
		delete(s.apps[app], ch)
		if len(s.apps[app]) == 0 {
			delete(s.apps, app)
		}
	}
}

// FSM is the replicated presence and occupancy state. Apply is pure: its
// effect and Result depend only on the state and the log entry. Reads are
// safe concurrently with Apply.
type FSM struct {
	limits   Limits
	mu       sync.RWMutex
	st       *state
	index    uint64 // the log index st reflects; guarded by mu, unlike applied
	applied  atomic.Uint64
	notify   atomic.Pointer[chan struct{}] // closed and replaced after every apply
	observer atomic.Pointer[func(Result)]
}

var _ raft.FSM = (*FSM)(nil)

// NewFSM returns an empty FSM; zero limits take DefaultLimits.
func NewFSM(limits Limits) *FSM {
	f := &FSM{limits: limits.withDefaults(), st: newState()}
	ch := make(chan struct{})
	f.notify.Store(&ch)
	return f
}

// SetObserver installs fn, called with every Result after the state changed
// (every node's FSM calls it, in log order, on raft's apply goroutine: fn
// must not block or call Node.Apply). nil removes it.
func (f *FSM) SetObserver(fn func(Result)) {
	if fn == nil {
		f.observer.Store(nil)
		return
	}
	f.observer.Store(&fn)
}

// Apply implements raft.FSM. It always returns a Result. A Batch's
// sub-commands apply in order, each with its own Result (Sub is its
// position), and the observer gets each sub-result, not the Batch's.
func (f *FSM) Apply(l *raft.Log) any {
	res := Result{Index: l.Index, Status: StatusApplied}
	cmd, err := DecodeCommand(l.Data)
	if err != nil {
		if len(l.Data) > 0 {
			res.Type = CommandType(l.Data[0])
		}
		res.Status, res.Reason = StatusInvalid, err.Error()
		f.mu.Lock()
		f.index = l.Index
		f.mu.Unlock()
	} else {
		res.Type = cmd.Type()
		f.mu.Lock()
		if b, ok := cmd.(Batch); ok {
			res.Batch = make([]Result, len(b.Commands))
			seq := 0
			for i, sub := range b.Commands {
				sr := &res.Batch[i]
				*sr = Result{Index: l.Index, Sub: i + 1, Type: sub.Type(), Status: StatusApplied}
				f.apply(sub, sr)
				seq = f.recordHooks(sr, seq)
			}
		} else {
			f.apply(cmd, &res)
			f.recordHooks(&res, 0)
		}
		f.trimHooks()
		f.index = l.Index
		f.mu.Unlock()
	}
	f.advance(l.Index)
	if fn := f.observer.Load(); fn != nil {
		if res.Batch != nil {
			for _, sr := range res.Batch {
				(*fn)(sr)
			}
		} else {
			(*fn)(res)
		}
	}
	return res
}

func (f *FSM) advance(index uint64) {
	f.applied.Store(index)
	ch := make(chan struct{})
	close(*f.notify.Swap(&ch))
}

func (f *FSM) apply(cmd Command, res *Result) {
	s := f.st
	switch c := cmd.(type) {
	case NodeUp:
		res.Node = c.Node
		cur, known := s.nodes[c.Node]
		switch {
		case !known && len(s.nodes) >= f.limits.MaxNodes:
			res.Status, res.Reason = StatusLimit, fmt.Sprintf("%d nodes registered", len(s.nodes))
		case known && c.Incarnation < cur:
			res.Status, res.Reason = StatusStale, fmt.Sprintf("incarnation %d < %d", c.Incarnation, cur)
		case known && c.Incarnation > cur:
			f.purge(c.Node, res)
			s.nodes[c.Node] = c.Incarnation
			res.NodeRegistered = true
		default:
			s.nodes[c.Node] = c.Incarnation
			res.NodeRegistered = !known
		}

	case NodeGone:
		res.Node = c.Node
		cur, known := s.nodes[c.Node]
		switch {
		case !known:
			res.Status, res.Reason = StatusStale, "unknown node"
		case c.Incarnation != 0 && c.Incarnation != cur:
			res.Status, res.Reason = StatusStale, fmt.Sprintf("incarnation %d, registered %d", c.Incarnation, cur)
		default:
			f.purge(c.Node, res)
			delete(s.nodes, c.Node)
		}

	case PresenceJoin:
		res.Node, res.App, res.Channel = c.Node, c.App, c.Channel
		if !f.current(c.Node, c.Incarnation, res) {
			return
		}
		f.join(c, res)

	case PresenceLeave:
		res.Node, res.App, res.Channel = c.Node, c.App, c.Channel
		if !f.current(c.Node, c.Incarnation, res) {
			return
		}
		f.leave(c, res)

	case Occupancy:
		res.Node, res.App, res.Channel = c.Node, c.App, c.Channel
		if !f.current(c.Node, c.Incarnation, res) {
			return
		}
		f.occupancy(c, res)

	case HooksSent:
		f.hooksSent(c)
	}
}

// current reports whether node is registered at incarnation inc.
func (f *FSM) current(node string, inc uint64, res *Result) bool {
	cur, ok := f.st.nodes[node]
	switch {
	case !ok:
		res.Status, res.Reason = StatusStale, "unknown node"
	case cur != inc:
		res.Status, res.Reason = StatusStale, fmt.Sprintf("incarnation %d, registered %d", inc, cur)
	default:
		return true
	}
	return false
}

func (f *FSM) join(c PresenceJoin, res *Result) {
	s := f.st
	key := string(c.UserID)
	ch := s.channel(c.App, c.Channel)
	var m *member
	if ch != nil {
		m = ch.members[key]
	}
	limit := f.limits.MaxMembersPerChannel
	if c.MaxMembers > 0 {
		limit = min(limit, c.MaxMembers)
	}
	if c.Channel == OnlineChannel {
		limit = f.limits.MaxEntries
	}
	switch {
	case m == nil && ch != nil && len(ch.members) >= limit:
		res.Status, res.Reason = StatusLimit, fmt.Sprintf("channel has %d members", len(ch.members))
		return
	case (m == nil || m.sockets[c.Node] == 0) && s.entries >= f.limits.MaxEntries:
		res.Status, res.Reason = StatusLimit, fmt.Sprintf("%d entries", s.entries)
		return
	}
	if ch == nil {
		ch = s.ensureChannel(c.App, c.Channel)
	}
	if m == nil {
		// The info of the join that added the member stays: it is what
		// member_added announced to every subscriber.
		m = &member{id: c.UserID, info: c.UserInfo, sockets: make(map[string]uint32)}
		ch.members[key] = m
		res.MemberAdded = true
	}
	// A node proposes only its first socket of a user and its last: join and
	// leave are idempotent per node, so a retried or repeated write (after an
	// unknown outcome) cannot leave a ghost member behind.
	if m.sockets[c.Node] == 0 {
		s.entries++
	}
	m.sockets[c.Node] = 1
	res.Member = &Member{UserID: m.id, UserInfo: m.info}
}

func (f *FSM) leave(c PresenceLeave, res *Result) {
	s := f.st
	ch := s.channel(c.App, c.Channel)
	if ch == nil {
		return
	}
	m := ch.members[string(c.UserID)]
	if m == nil || m.sockets[c.Node] == 0 {
		return
	}
	res.Member = &Member{UserID: m.id, UserInfo: m.info}
	delete(m.sockets, c.Node)
	s.entries--
	if len(m.sockets) == 0 {
		delete(ch.members, string(c.UserID))
		res.MemberRemoved = true
		s.dropIfEmpty(c.App, c.Channel)
	}
}

func (f *FSM) occupancy(c Occupancy, res *Result) {
	s := f.st
	ch := s.channel(c.App, c.Channel)
	if c.Occupied {
		if ch != nil {
			if _, ok := ch.nodes[c.Node]; ok {
				return
			}
		}
		if s.entries >= f.limits.MaxEntries {
			res.Status, res.Reason = StatusLimit, fmt.Sprintf("%d entries", s.entries)
			return
		}
		ch = s.ensureChannel(c.App, c.Channel)
		ch.nodes[c.Node] = struct{}{}
		s.entries++
		res.ChannelOccupied = len(ch.nodes) == 1
		return
	}
	if ch == nil {
		return
	}
	if _, ok := ch.nodes[c.Node]; !ok {
		return
	}
	delete(ch.nodes, c.Node)
	s.entries--
	res.ChannelVacated = len(ch.nodes) == 0
	s.dropIfEmpty(c.App, c.Channel)
}

// purge removes every entry of node and reports members removed and
// channels vacated, sorted, so every replica reports the same list.
func (f *FSM) purge(node string, res *Result) {
	s := f.st
	for app, chans := range s.apps {
		for name, ch := range chans {
			if _, ok := ch.nodes[node]; ok {
				delete(ch.nodes, node)
				s.entries--
				if len(ch.nodes) == 0 {
					res.Vacated = append(res.Vacated, ChannelRef{App: app, Channel: name})
				}
			}
			for key, m := range ch.members {
				if m.sockets[node] == 0 {
					continue
				}
				delete(m.sockets, node)
				s.entries--
				if len(m.sockets) == 0 {
					delete(ch.members, key)
					res.Removed = append(res.Removed, RemovedMember{App: app, Channel: name, Member: Member{UserID: m.id, UserInfo: m.info}})
				}
			}
			s.dropIfEmpty(app, name)
		}
	}
	slices.SortFunc(res.Vacated, func(a, b ChannelRef) int {
		return cmpPair(a.App, a.Channel, b.App, b.Channel)
	})
	slices.SortFunc(res.Removed, func(a, b RemovedMember) int {
		if c := cmpPair(a.App, a.Channel, b.App, b.Channel); c != 0 {
			return c
		}
		return strings.Compare(string(a.Member.UserID), string(b.Member.UserID))
	})
}

func cmpPair(a1, a2, b1, b2 string) int {
	if c := strings.Compare(a1, b1); c != 0 {
		return c
	}
	return strings.Compare(a2, b2)
}

func sortedMembers(ch *channelState) []Member {
	out := make([]Member, 0, len(ch.members))
	for _, m := range ch.members {
		out = append(out, Member{UserID: m.id, UserInfo: m.info})
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(string(a.UserID), string(b.UserID)) })
	return out
}

// AppliedIndex is the index of the last log entry applied (or restored).
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// WaitApplied blocks until AppliedIndex ≥ index or ctx ends.
func (f *FSM) WaitApplied(ctx context.Context, index uint64) error {
	for {
		ch := *f.notify.Load()
		if f.applied.Load() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wait for index %d (applied %d): %w", index, f.applied.Load(), ctx.Err())
		}
	}
}

// Members returns the presence members of a channel sorted by user id.
func (f *FSM) Members(app, channel string) []Member {
	ms, _ := f.MembersAt(app, channel)
	return ms
}

// MembersAt is Members with the log index the list reflects, read
// together: a change observed with a larger index is not in the list.
func (f *FSM) MembersAt(app, channel string) ([]Member, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	ch := f.st.channel(app, channel)
	if ch == nil {
		return []Member{}, f.index
	}
	return sortedMembers(ch), f.index
}

// MemberCount returns the number of distinct users in a presence channel.
func (f *FSM) MemberCount(app, channel string) int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if ch := f.st.channel(app, channel); ch != nil {
		return len(ch.members)
	}
	return 0
}

// IsMember reports whether userID (raw JSON) is in a presence channel.
func (f *FSM) IsMember(app, channel string, userID json.RawMessage) bool {
	key := string(compact(userID))
	f.mu.RLock()
	defer f.mu.RUnlock()
	if ch := f.st.channel(app, channel); ch != nil {
		return ch.members[key] != nil
	}
	return false
}

// Channels returns every channel of app that has subscribers on some node
// or presence members.
func (f *FSM) Channels(app string) map[string]ChannelStat {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make(map[string]ChannelStat, len(f.st.apps[app]))
	for name, ch := range f.st.apps[app] {
		out[name] = ChannelStat{Nodes: len(ch.nodes), Users: len(ch.members)}
	}
	return out
}

// ChannelOccupied reports whether any node has a subscriber in the channel.
func (f *FSM) ChannelOccupied(app, channel string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	ch := f.st.channel(app, channel)
	return ch != nil && len(ch.nodes) > 0
}

// NodesWithSubscribers returns, sorted, the nodes that have at least one
// local subscriber in the channel; the data plane skips the others.
func (f *FSM) NodesWithSubscribers(app, channel string) []string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	ch := f.st.channel(app, channel)
	if ch == nil {
		return nil
	}
	out := make([]string, 0, len(ch.nodes))
	for n := range ch.nodes {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Nodes returns the registered nodes and their incarnations.
func (f *FSM) Nodes() map[string]uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make(map[string]uint64, len(f.st.nodes))
	for id, inc := range f.st.nodes {
		out[id] = inc
	}
	return out
}

// Incarnation returns the registered incarnation of node, if any.
func (f *FSM) Incarnation(node string) (uint64, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	inc, ok := f.st.nodes[node]
	return inc, ok
}

// reset empties the state; Node calls it when it wipes its raft state, so
// the log replayed from a new group starts from nothing.
func (f *FSM) reset() {
	f.mu.Lock()
	f.st = newState()
	f.index = 0
	f.mu.Unlock()
	f.advance(0)
}

// NodeEntries lists what the replicated state holds for node: the presence
// members it has a socket of and the channels it has subscribers in. The
// node compares them with its live sockets to repair what an unknown
// outcome left wrong.
func (f *FSM) NodeEntries(node string) (members []RemovedMember, occupied []ChannelRef) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for app, chans := range f.st.apps {
		for name, ch := range chans {
			if _, ok := ch.nodes[node]; ok {
				occupied = append(occupied, ChannelRef{App: app, Channel: name})
			}
			for _, m := range ch.members {
				if m.sockets[node] > 0 {
					members = append(members, RemovedMember{App: app, Channel: name, Member: Member{UserID: m.id}})
				}
			}
		}
	}
	return members, occupied
}
