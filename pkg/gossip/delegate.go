package gossip

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// nodeMeta is gossiped by memberlist with every alive message.
type nodeMeta struct {
	Cluster     string `json:"cluster"`
	HTTPAddr    string `json:"http,omitempty"`
	RaftAddr    string `json:"raft,omitempty"`
	Incarnation uint64 `json:"inc"`
}

// leaveNotice is sent to every alive member just before a graceful leave.
// memberlist v0.5.4 reports leave and death through the same NotifyLeave
// with no reliable state, so this is how peers tell "left" from "dead".
var leaveNotice = []byte("SKTL\x01")

// leaveMemory is how long a leave notice marks the next NotifyLeave as "left".
const leaveMemory = time.Minute

// delegate implements memberlist's Delegate, EventDelegate and PingDelegate.
type delegate struct{ m *Members }

func (d delegate) NodeMeta(int) []byte { return d.m.meta }

func (d delegate) NotifyMsg(msg []byte) {
	if !bytes.HasPrefix(msg, leaveNotice) {
		return
	}
	id := string(msg[len(leaveNotice):])
	d.m.mu.Lock()
	if len(d.m.leaving) < maxTracked {
		d.m.leaving[id] = time.Now()
	}
	d.m.mu.Unlock()
}

func (d delegate) GetBroadcasts(int, int) [][]byte { return nil }
func (d delegate) LocalState(bool) []byte          { return nil }
func (d delegate) MergeRemoteState([]byte, bool)   {}
func (d delegate) AckPayload() []byte              { return nil }

// NotifyPingComplete clears a local suspicion: the member answered a direct probe.
func (d delegate) NotifyPingComplete(n *memberlist.Node, _ time.Duration, _ []byte) {
	d.m.mu.Lock()
	suspect := d.m.members[n.Name] != nil && d.m.members[n.Name].State == StateSuspect
	d.m.mu.Unlock()
	if suspect {
		d.m.setState(n.Name, func(mem *Member) { mem.State = StateAlive }, "")
	}
}

func (d delegate) NotifyJoin(n *memberlist.Node) {
	d.m.setState(n.Name, func(mem *Member) {
		applyNode(mem, n)
		mem.State = StateAlive
	}, EventJoin)
}

func (d delegate) NotifyUpdate(n *memberlist.Node) {
	d.m.setState(n.Name, func(mem *Member) { applyNode(mem, n) }, EventUpdate)
}

func (d delegate) NotifyLeave(n *memberlist.Node) {
	now := time.Now()
	d.m.mu.Lock()
	t, noticed := d.m.leaving[n.Name]
	delete(d.m.leaving, n.Name)
	d.m.mu.Unlock()
	left := n.Name == d.m.cfg.NodeID || (noticed && now.Sub(t) < leaveMemory)

	state, ev := StateDead, EventDead
	if left {
		state, ev = StateLeft, EventLeave
	}
	d.m.setState(n.Name, func(mem *Member) {
		applyNode(mem, n)
		mem.State = state
	}, ev)
}

// suspect marks a member whose probe failed on this node.
func (m *Members) suspect(id string) {
	m.mu.Lock()
	alive := m.members[id] != nil && m.members[id].State == StateAlive
	m.mu.Unlock()
	if alive {
		m.setState(id, func(mem *Member) { mem.State = StateSuspect }, "")
	}
}

func applyNode(mem *Member, n *memberlist.Node) {
	mem.GossipAddr = n.Address()
	var meta nodeMeta
	if json.Unmarshal(n.Meta, &meta) == nil {
		mem.HTTPAddr = meta.HTTPAddr
		mem.RaftAddr = meta.RaftAddr
		mem.Incarnation = meta.Incarnation
	}
}

// logWriter turns memberlist's "[LEVEL] memberlist: text" lines into slog
// records: warnings and errors at Warn (peer failures are expected events,
// reported by this package at the right level), the rest at Debug. It also
// picks up the one suspicion memberlist reports only in its log.
type logWriter struct {
	m *Members
}

const suspectPrefix = "Suspect "
const suspectSuffix = " has failed, no acks received"

func (w logWriter) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\n")
	level := slog.LevelDebug
	if rest, ok := strings.CutPrefix(line, "["); ok {
		if lvl, text, ok := strings.Cut(rest, "] "); ok {
			if lvl == "WARN" || lvl == "ERR" {
				level = slog.LevelWarn
			}
			line = strings.TrimPrefix(text, "memberlist: ")
		}
	}
	if name, ok := strings.CutPrefix(line, suspectPrefix); ok && strings.HasSuffix(name, suspectSuffix) {
		w.m.suspect(strings.TrimSuffix(name, suspectSuffix))
	}
	w.m.log.Log(context.Background(), level, line, "source", "memberlist")
	return len(p), nil
}
