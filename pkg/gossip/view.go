package gossip

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// State is a member's liveness as seen by this node.
type State string

const (
	StateAlive State = "alive"
	// StateSuspect means this node's own probe of the member failed and no
	// direct probe has succeeded since; memberlist decides dead or alive
	// within the suspicion timeout.
	StateSuspect State = "suspect"
	StateDead    State = "dead"
	StateLeft    State = "left"
)

// Member is one node in the view. Dead and left members stay for
// deadRetention so that GET /cluster shows them.
type Member struct {
	ID         string `json:"id"`
	GossipAddr string `json:"gossip_addr"`
	HTTPAddr   string `json:"http_addr"`
	RaftAddr   string `json:"raft_addr"`
	State      State  `json:"state"`
	// Since is when the member entered State (RFC 3339 in JSON).
	Since time.Time `json:"since"`
	// Incarnation is the member's process start time in Unix nanoseconds;
	// a restarted node with the same id has a larger one.
	Incarnation uint64 `json:"incarnation"`
	Self        bool   `json:"self"`
}

// View is the JSON body of GET /cluster.
type View struct {
	NodeID      string        `json:"node_id"`
	ClusterName string        `json:"cluster_name"`
	Discovery   DiscoveryInfo `json:"discovery"`
	Members     []Member      `json:"members"`
}

// DiscoveryInfo says where this node sends beacons.
type DiscoveryInfo struct {
	Mode    string   `json:"mode"`
	Port    int      `json:"port"`
	Targets []string `json:"targets"`
}

// EventType names a membership change.
type EventType string

const (
	EventJoin   EventType = "join"   // a member became alive (new, or back from dead/left)
	EventUpdate EventType = "update" // an alive member changed its meta or address
	EventLeave  EventType = "leave"  // a member left gracefully
	EventDead   EventType = "dead"   // a member failed
)

// Event is a membership change, for the consensus layer.
type Event struct {
	Type   EventType `json:"type"`
	Member Member    `json:"member"`
}

// eventsBuffer bounds Events(). When full, the oldest event is dropped and
// counted: a slow consumer sees the most recent changes and must reconcile
// against View or AliveMembers anyway.
const eventsBuffer = 256

type eventQueue struct {
	mu      sync.Mutex
	ch      chan Event
	closed  bool
	dropped atomic.Uint64
}

func newEventQueue(n int) *eventQueue { return &eventQueue{ch: make(chan Event, n)} }

// push never blocks.
func (q *eventQueue) push(ev Event) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	for {
		select {
		case q.ch <- ev:
			return
		default:
		}
		select {
		case <-q.ch:
			q.dropped.Add(1)
		default:
		}
	}
}

func (q *eventQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		close(q.ch)
	}
}

// deadRetention is how long dead and left members stay in the view.
const deadRetention = 5 * time.Minute

// setState records a transition and emits its event. It is called from
// memberlist callbacks, which hold memberlist's node lock: it must not block
// or call back into memberlist.
func (m *Members) setState(id string, update func(*Member), ev EventType) {
	m.mu.Lock()
	mem, ok := m.members[id]
	if !ok {
		mem = &Member{ID: id, Self: id == m.cfg.NodeID}
		m.members[id] = mem
	}
	prev := mem.State
	update(mem)
	now := time.Now()
	if mem.State != prev {
		mem.Since = now
	}
	snapshot := *mem
	m.mu.Unlock()

	if ev != "" {
		m.events.push(Event{Type: ev, Member: snapshot})
	}
	if prev != snapshot.State && !snapshot.Self {
		switch snapshot.State {
		case StateAlive:
			m.log.Info("member alive", "peer", id, "gossip_addr", snapshot.GossipAddr, "previous", string(prev))
		case StateSuspect:
			m.log.Info("member suspect", "peer", id)
		case StateDead:
			m.log.Warn("member dead", "peer", id, "gossip_addr", snapshot.GossipAddr)
		case StateLeft:
			m.log.Info("member left", "peer", id)
		}
	}
}

// reap drops dead and left members older than deadRetention.
func (m *Members) reap(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, mem := range m.members {
		if (mem.State == StateDead || mem.State == StateLeft) && now.Sub(mem.Since) > deadRetention {
			delete(m.members, id)
		}
	}
}

// View returns this node's view of the cluster, members sorted by id.
func (m *Members) View() View {
	m.mu.Lock()
	members := make([]Member, 0, len(m.members))
	for _, mem := range m.members {
		members = append(members, *mem)
	}
	m.mu.Unlock()
	slices.SortFunc(members, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	return View{
		NodeID:      m.cfg.NodeID,
		ClusterName: m.cfg.ClusterName,
		Discovery: DiscoveryInfo{
			Mode:    m.disc.mode,
			Port:    m.disc.port,
			Targets: m.disc.targetStrings(),
		},
		Members: members,
	}
}

// AliveMembers returns the alive and suspect members, self included, sorted
// by id. Suspect members are still members until memberlist declares them dead.
func (m *Members) AliveMembers() []Member {
	v := m.View()
	return slices.DeleteFunc(v.Members, func(mem Member) bool {
		return mem.State != StateAlive && mem.State != StateSuspect
	})
}

// LocalNode returns this node as a member.
func (m *Members) LocalNode() Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	if mem, ok := m.members[m.cfg.NodeID]; ok {
		return *mem
	}
	return Member{ID: m.cfg.NodeID, Self: true}
}

// Events returns membership changes. The channel is bounded (256); when the
// consumer falls behind the oldest event is dropped and counted in
// Stats().EventsDropped. It is closed by Shutdown and Leave.
func (m *Members) Events() <-chan Event { return m.events.ch }

// Stats returns counters since New.
func (m *Members) Stats() Stats {
	s := &m.stats
	return Stats{
		BeaconsSent:      s.beaconsSent.Load(),
		BeaconSendErrors: s.beaconSendErrors.Load(),
		BeaconsReceived:  s.beaconsReceived.Load(),
		DroppedMalformed: s.droppedMalformed.Load(),
		DroppedOversized: s.droppedOversized.Load(),
		DroppedVersion:   s.droppedVersion.Load(),
		DroppedCluster:   s.droppedCluster.Load(),
		DroppedAuth:      s.droppedAuth.Load(),
		DroppedKeyed:     s.droppedKeyed.Load(),
		JoinAttempts:     s.joinAttempts.Load(),
		JoinFailures:     s.joinFailures.Load(),
		JoinsDropped:     s.joinsDropped.Load(),
		EventsDropped:    m.events.dropped.Load(),
	}
}
