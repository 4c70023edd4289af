package consensus

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/hashicorp/raft"
)

// snapshotVersion 2 added the webhook outbox; version 1 snapshots load with
// an empty one.
const snapshotVersion = 2

// snapshotData is the persisted form of the state: small (presence,
// occupancy and incarnations only) and in a stable order.
type snapshotData struct {
	Version  int               `json:"version"`
	Index    uint64            `json:"index"`
	Nodes    map[string]uint64 `json:"nodes"`
	Channels []snapChannel     `json:"channels"`
	Hooks    []Hook            `json:"hooks,omitempty"`
	// HooksDropped counts hooks dropped at the outbox's bound.
	HooksDropped uint64 `json:"hooks_dropped,omitempty"`
}

type snapChannel struct {
	App     string       `json:"app"`
	Channel string       `json:"channel"`
	Nodes   []string     `json:"nodes,omitempty"`
	Members []snapMember `json:"members,omitempty"`
}

type snapMember struct {
	UserID   json.RawMessage   `json:"user_id"`
	UserInfo json.RawMessage   `json:"user_info,omitempty"`
	Sockets  map[string]uint32 `json:"sockets"`
}

// Snapshot implements raft.FSM: a deep copy taken under the read lock;
// encoding happens in Persist, off the apply path.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return &fsmSnapshot{data: f.st.export(f.applied.Load())}, nil
}

func (s *state) export(index uint64) *snapshotData {
	d := &snapshotData{Version: snapshotVersion, Index: index, Nodes: make(map[string]uint64, len(s.nodes)),
		Hooks: slices.Clone(s.hooks), HooksDropped: s.hooksDropped}
	for id, inc := range s.nodes {
		d.Nodes[id] = inc
	}
	for app, chans := range s.apps {
		for name, ch := range chans {
			sc := snapChannel{App: app, Channel: name}
			for n := range ch.nodes {
				sc.Nodes = append(sc.Nodes, n)
			}
			slices.Sort(sc.Nodes)
			for _, m := range ch.members {
				sockets := make(map[string]uint32, len(m.sockets))
				for n, c := range m.sockets {
					sockets[n] = c
				}
				sc.Members = append(sc.Members, snapMember{UserID: m.id, UserInfo: m.info, Sockets: sockets})
			}
			slices.SortFunc(sc.Members, func(a, b snapMember) int {
				return strings.Compare(string(a.UserID), string(b.UserID))
			})
			d.Channels = append(d.Channels, sc)
		}
	}
	slices.SortFunc(d.Channels, func(a, b snapChannel) int { return cmpPair(a.App, a.Channel, b.App, b.Channel) })
	return d
}

// Restore implements raft.FSM: it decodes into a fresh state and swaps it
// in only if the whole snapshot is valid.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var d snapshotData
	if err := json.NewDecoder(rc).Decode(&d); err != nil {
		return fmt.Errorf("restore: decode: %w", err)
	}
	st, err := d.build()
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	f.mu.Lock()
	f.st = st
	f.index = d.Index
	f.mu.Unlock()
	f.advance(d.Index)
	return nil
}

// build does not enforce Limits: the snapshot was produced by an FSM that
// did, and a lowered cap must not make a node unable to load its state.
func (d *snapshotData) build() (*state, error) {
	if d.Version != snapshotVersion && d.Version != 1 {
		return nil, fmt.Errorf("snapshot version %d, want %d", d.Version, snapshotVersion)
	}
	st := newState()
	st.hooks, st.hooksDropped = d.Hooks, d.HooksDropped
	for i, h := range st.hooks {
		if h.Index == 0 || h.Event == "" || h.App == "" || h.Channel == "" || (i > 0 && st.hooks[i-1].Index > h.Index) {
			return nil, fmt.Errorf("snapshot hook %d is malformed or out of order", i)
		}
	}
	for id, inc := range d.Nodes {
		st.nodes[id] = inc
	}
	for _, sc := range d.Channels {
		if sc.App == "" || sc.Channel == "" || st.channel(sc.App, sc.Channel) != nil {
			return nil, fmt.Errorf("snapshot channel %q/%q empty or repeated", sc.App, sc.Channel)
		}
		ch := st.ensureChannel(sc.App, sc.Channel)
		for _, n := range sc.Nodes {
			ch.nodes[n] = struct{}{}
		}
		st.entries += len(ch.nodes)
		for _, sm := range sc.Members {
			m := &member{id: compact(sm.UserID), info: sm.UserInfo, sockets: make(map[string]uint32, len(sm.Sockets))}
			for n, c := range sm.Sockets {
				if c > 0 {
					m.sockets[n] = c
				}
			}
			if len(m.id) == 0 || len(m.sockets) == 0 {
				return nil, fmt.Errorf("snapshot member %s in %q/%q has no id or sockets", sm.UserID, sc.App, sc.Channel)
			}
			ch.members[string(m.id)] = m
			st.entries += len(m.sockets)
		}
		st.dropIfEmpty(sc.App, sc.Channel)
	}
	return st, nil
}

type fsmSnapshot struct{ data *snapshotData }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	enc := json.NewEncoder(sink)
	enc.SetEscapeHTML(false) // ids and info stay in the form they are keyed by
	if err := enc.Encode(s.data); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
