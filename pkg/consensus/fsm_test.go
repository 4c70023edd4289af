package consensus

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

func join(node string, inc uint64, ch, user string) PresenceJoin {
	return PresenceJoin{App: "app", Channel: ch, UserID: json.RawMessage(user), UserInfo: json.RawMessage(`{"name":` + user + `}`), Node: node, Incarnation: inc}
}

func leave(node string, inc uint64, ch, user string) PresenceLeave {
	return PresenceLeave{App: "app", Channel: ch, UserID: json.RawMessage(user), Node: node, Incarnation: inc}
}

func occ(node string, inc uint64, ch string, on bool) Occupancy {
	return Occupancy{App: "app", Channel: ch, Node: node, Incarnation: inc, Occupied: on}
}

// want is the part of a Result a step checks.
type want struct {
	status   Status
	added    bool
	removed  bool
	occupied bool
	vacated  bool
	members  []string // join: user ids after the join
	purged   []string // "channel/user" removed by a purge
	emptied  []string // channels vacated by a purge
}

type step struct {
	cmd  Command
	want want
}

func applyCmd(t *testing.T, f *FSM, index uint64, c Command) Result {
	t.Helper()
	b, err := EncodeCommand(c)
	if err != nil {
		t.Fatalf("encode %T: %v", c, err)
	}
	res, ok := f.Apply(&raft.Log{Index: index, Data: b}).(Result)
	if !ok {
		t.Fatalf("Apply returned %T", res)
	}
	return res
}

// withMembers fills a join result's member list from the replica, as the
// proposer does after Apply.
func withMembers(f *FSM, res Result) Result {
	if res.Type == CmdPresenceJoin && res.Status == StatusApplied {
		res.Members = f.Members(res.App, res.Channel)
	}
	return res
}

func check(t *testing.T, i int, res Result, w want) {
	t.Helper()
	if w.status == "" {
		w.status = StatusApplied
	}
	got := want{status: res.Status, added: res.MemberAdded, removed: res.MemberRemoved,
		occupied: res.ChannelOccupied, vacated: res.ChannelVacated}
	for _, m := range res.Members {
		got.members = append(got.members, string(m.UserID))
	}
	for _, r := range res.Removed {
		got.purged = append(got.purged, r.Channel+"/"+string(r.Member.UserID))
	}
	for _, v := range res.Vacated {
		got.emptied = append(got.emptied, v.Channel)
	}
	if res.Type == CmdPresenceJoin && w.status != StatusApplied {
		got.members = nil
	}
	if !reflect.DeepEqual(got, w) {
		t.Fatalf("step %d (%s): got %+v, want %+v (reason %q)", i, res.Type, got, w, res.Reason)
	}
	if (res.Err() == nil) != (res.Status == StatusApplied) {
		t.Fatalf("step %d: Err()=%v for status %s", i, res.Err(), res.Status)
	}
}

func TestFSM_Transitions(t *testing.T) {
	a, b := "node-a", "node-b"
	tests := []struct {
		name  string
		steps []step
		after func(t *testing.T, f *FSM)
	}{
		{
			// Join and leave are idempotent per node: a repeated write
			// (a retry after an unknown outcome) changes nothing.
			name: "same user on two nodes counted once, removed once",
			steps: []step{
				{NodeUp{a, 1}, want{}},
				{NodeUp{b, 1}, want{}},
				{join(a, 1, "presence-x", `"u1"`), want{added: true, members: []string{`"u1"`}}},
				{join(b, 1, "presence-x", `"u1"`), want{members: []string{`"u1"`}}},
				{join(a, 1, "presence-x", `"u1"`), want{members: []string{`"u1"`}}},
				{leave(a, 1, "presence-x", `"u1"`), want{}},
				{leave(a, 1, "presence-x", `"u1"`), want{}},
				{leave(b, 1, "presence-x", `"u1"`), want{removed: true}},
				{leave(b, 1, "presence-x", `"u1"`), want{}},
			},
			after: func(t *testing.T, f *FSM) {
				if n := f.MemberCount("app", "presence-x"); n != 0 {
					t.Fatalf("MemberCount = %d", n)
				}
				if len(f.Channels("app")) != 0 {
					t.Fatalf("empty channel kept: %v", f.Channels("app"))
				}
			},
		},
		{
			name: "user ids keep their JSON type and are compacted",
			steps: []step{
				{NodeUp{a, 1}, want{}},
				{join(a, 1, "presence-x", `1`), want{added: true, members: []string{`1`}}},
				{join(a, 1, "presence-x", `"1"`), want{added: true, members: []string{`"1"`, `1`}}},
				{join(a, 1, "presence-x", `{ "id" : 2 }`), want{added: true, members: []string{`"1"`, `1`, `{"id":2}`}}},
				{leave(a, 1, "presence-x", `{"id":2}`), want{removed: true}},
			},
			after: func(t *testing.T, f *FSM) {
				if !f.IsMember("app", "presence-x", json.RawMessage(` 1 `)) || f.IsMember("app", "presence-x", json.RawMessage(`2`)) {
					t.Fatal("IsMember wrong")
				}
			},
		},
		{
			name: "occupancy decided cluster-wide",
			steps: []step{
				{NodeUp{a, 1}, want{}},
				{NodeUp{b, 1}, want{}},
				{occ(a, 1, "c", true), want{occupied: true}},
				{occ(a, 1, "c", true), want{}},
				{occ(b, 1, "c", true), want{}},
				{occ(a, 1, "c", false), want{}},
				{occ(a, 1, "c", false), want{}},
				{occ(b, 1, "c", false), want{vacated: true}},
				{occ(b, 1, "never", false), want{}},
			},
			after: func(t *testing.T, f *FSM) {
				if f.ChannelOccupied("app", "c") {
					t.Fatal("still occupied")
				}
			},
		},
		{
			name: "stale or unknown incarnation ignored",
			steps: []step{
				{join(a, 1, "presence-x", `"u1"`), want{status: StatusStale}},
				{occ(a, 1, "c", true), want{status: StatusStale}},
				{NodeUp{a, 2}, want{}},
				{join(a, 1, "presence-x", `"u1"`), want{status: StatusStale}},
				{leave(a, 1, "presence-x", `"u1"`), want{status: StatusStale}},
				{NodeUp{a, 1}, want{status: StatusStale}},
				{NodeGone{a, 1}, want{status: StatusStale}},
				{NodeGone{b, 0}, want{status: StatusStale}},
			},
			after: func(t *testing.T, f *FSM) {
				if got := f.Nodes(); !reflect.DeepEqual(got, map[string]uint64{a: 2}) {
					t.Fatalf("Nodes = %v", got)
				}
			},
		},
		{
			name: "restarted node purged, no ghost",
			steps: []step{
				{NodeUp{a, 1}, want{}},
				{NodeUp{b, 1}, want{}},
				{join(a, 1, "presence-x", `"u1"`), want{added: true, members: []string{`"u1"`}}},
				{join(a, 1, "presence-x", `"u2"`), want{added: true, members: []string{`"u1"`, `"u2"`}}},
				{join(b, 1, "presence-x", `"u2"`), want{members: []string{`"u1"`, `"u2"`}}},
				{occ(a, 1, "presence-x", true), want{occupied: true}},
				{occ(a, 1, "other", true), want{occupied: true}},
				{occ(b, 1, "presence-x", true), want{}},
				{NodeUp{a, 1}, want{}},
				{NodeUp{a, 5}, want{purged: []string{`presence-x/"u1"`}, emptied: []string{"other"}}},
				{join(a, 1, "presence-x", `"u3"`), want{status: StatusStale}},
			},
			after: func(t *testing.T, f *FSM) {
				if got := f.Members("app", "presence-x"); len(got) != 1 || string(got[0].UserID) != `"u2"` {
					t.Fatalf("Members = %v", got)
				}
				if got := f.NodesWithSubscribers("app", "presence-x"); !reflect.DeepEqual(got, []string{b}) {
					t.Fatalf("NodesWithSubscribers = %v", got)
				}
			},
		},
		{
			name: "node gone purges and reports, then unknown",
			steps: []step{
				{NodeUp{a, 1}, want{}},
				{NodeUp{b, 1}, want{}},
				{join(a, 1, "presence-y", `"u9"`), want{added: true, members: []string{`"u9"`}}},
				{join(a, 1, "presence-x", `"u1"`), want{added: true, members: []string{`"u1"`}}},
				{join(a, 1, "presence-x", `"u1"`), want{members: []string{`"u1"`}}},
				{join(b, 1, "presence-x", `"u2"`), want{added: true, members: []string{`"u1"`, `"u2"`}}},
				{occ(a, 1, "presence-x", true), want{occupied: true}},
				{occ(a, 1, "presence-y", true), want{occupied: true}},
				{occ(b, 1, "presence-x", true), want{}},
				{NodeGone{a, 1}, want{purged: []string{`presence-x/"u1"`, `presence-y/"u9"`}, emptied: []string{"presence-y"}}},
				{NodeGone{a, 0}, want{status: StatusStale}},
				{occ(a, 1, "presence-x", false), want{status: StatusStale}},
			},
			after: func(t *testing.T, f *FSM) {
				want := map[string]ChannelStat{"presence-x": {Nodes: 1, Users: 1}}
				if got := f.Channels("app"); !reflect.DeepEqual(got, want) {
					t.Fatalf("Channels = %v", got)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFSM(Limits{})
			var observed []Result
			f.SetObserver(func(r Result) { observed = append(observed, r) })
			for i, s := range tt.steps {
				res := applyCmd(t, f, uint64(i+1), s.cmd)
				if res.Index != uint64(i+1) || res.Type != s.cmd.Type() {
					t.Fatalf("step %d: index %d type %s", i, res.Index, res.Type)
				}
				check(t, i, withMembers(f, res), s.want)
			}
			if len(observed) != len(tt.steps) {
				t.Fatalf("observer saw %d results, want %d", len(observed), len(tt.steps))
			}
			if got := f.AppliedIndex(); got != uint64(len(tt.steps)) {
				t.Fatalf("AppliedIndex = %d", got)
			}
			if tt.after != nil {
				tt.after(t, f)
			}
			g := snapshotRoundTrip(t, f)
			if tt.after != nil {
				tt.after(t, g)
			}
		})
	}
}

// snapshotRoundTrip restores f's snapshot into a fresh FSM and checks the
// states are equal.
func snapshotRoundTrip(t *testing.T, f *FSM) *FSM {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	g := NewFSM(Limits{})
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.st, g.st) {
		t.Fatalf("restored state differs:\n got %+v\nwant %+v", g.st.export(0), f.st.export(0))
	}
	if g.AppliedIndex() != f.AppliedIndex() {
		t.Fatalf("restored index %d, want %d", g.AppliedIndex(), f.AppliedIndex())
	}
	return g
}

type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { return nil }

func TestFSM_RestoreReplacesState(t *testing.T) {
	f := NewFSM(Limits{})
	applyCmd(t, f, 1, NodeUp{"a", 1})
	applyCmd(t, f, 2, join("a", 1, "presence-x", `"u1"`))
	snap, _ := f.Snapshot()
	applyCmd(t, f, 3, join("a", 1, "presence-x", `"u2"`)) // after the snapshot: not in it
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}

	g := NewFSM(Limits{})
	applyCmd(t, g, 1, NodeUp{"ghost", 9})
	applyCmd(t, g, 2, join("ghost", 9, "presence-z", `"g"`))
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if got := g.Members("app", "presence-x"); len(got) != 1 || g.MemberCount("app", "presence-z") != 0 {
		t.Fatalf("restored members %v, ghost count %d", got, g.MemberCount("app", "presence-z"))
	}
	if _, ok := g.Incarnation("ghost"); ok || g.AppliedIndex() != 2 {
		t.Fatalf("ghost node kept or index %d", g.AppliedIndex())
	}

	// A bad snapshot leaves the state untouched.
	if err := g.Restore(io.NopCloser(strings.NewReader(`{"version":1,"channels":[{"app":"","channel":"x"}]}`))); err == nil {
		t.Fatal("bad snapshot accepted")
	}
	if g.MemberCount("app", "presence-x") != 1 {
		t.Fatal("failed restore changed the state")
	}
}

func TestFSM_Limits(t *testing.T) {
	f := NewFSM(Limits{MaxMembersPerChannel: 2, MaxEntries: 4, MaxNodes: 2})
	steps := []step{
		{NodeUp{"a", 1}, want{}},
		{NodeUp{"b", 1}, want{}},
		{NodeUp{"c", 1}, want{status: StatusLimit}},
		{join("a", 1, "p", `1`), want{added: true, members: []string{`1`}}},
		{join("a", 1, "p", `2`), want{added: true, members: []string{`1`, `2`}}},
		{join("a", 1, "p", `3`), want{status: StatusLimit}},
		{join("b", 1, "p", `1`), want{members: []string{`1`, `2`}}}, // existing member, new entry: 3 entries
		{join("a", 1, "p", `1`), want{members: []string{`1`, `2`}}}, // same entry, count only
		{occ("a", 1, "p", true), want{occupied: true}},              // 4 entries
		{occ("b", 1, "p", true), want{status: StatusLimit}},
		{join("b", 1, "p", `2`), want{status: StatusLimit}},
		{join("a", 1, "q", `1`), want{status: StatusLimit}},
		{leave("a", 1, "p", `2`), want{}}, // a's entry for user 2 gone; user 2 had only a
		{occ("b", 1, "p", true), want{}},
	}
	for i, s := range steps {
		res := applyCmd(t, f, uint64(i+1), s.cmd)
		if i == 12 {
			s.want.removed = true
		}
		check(t, i, withMembers(f, res), s.want)
		if s.want.status == StatusLimit && !errors.Is(res.Err(), ErrLimit) {
			t.Fatalf("step %d: Err = %v", i, res.Err())
		}
	}
	snapshotRoundTrip(t, f)
}

func TestFSM_InvalidLogData(t *testing.T) {
	f := NewFSM(Limits{})
	for i, data := range [][]byte{nil, {0}, {byte(CmdNodeUp)}, []byte("\x01{}"), []byte("\x03{\"app\":\"a\"}"), []byte("\x09{}"), []byte("\x01{\"node\":\"a\",\"incarnation\":1,\"x\":1}")} {
		res := f.Apply(&raft.Log{Index: uint64(i + 1), Data: data}).(Result)
		if res.Status != StatusInvalid || !errors.Is(res.Err(), ErrBadCommand) {
			t.Fatalf("data %q: status %s err %v", data, res.Status, res.Err())
		}
	}
	if f.AppliedIndex() != 7 {
		t.Fatalf("AppliedIndex = %d", f.AppliedIndex())
	}
}

func TestCommand_RoundTrip(t *testing.T) {
	for _, c := range []Command{
		NodeUp{"a", 7}, NodeGone{"a", 0}, NodeGone{"a", 7},
		PresenceJoin{App: "1", Channel: "presence-x", UserID: json.RawMessage(`"u"`), Node: "a", Incarnation: 1},
		join("a", 1, "presence-x", `{"id":1}`), leave("a", 1, "presence-x", `12`), occ("a", 1, "c", true),
	} {
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("encode %+v: %v", c, err)
		}
		if CommandType(b[0]) != c.Type() {
			t.Fatalf("type byte %d for %T", b[0], c)
		}
		got, err := DecodeCommand(b)
		if err != nil {
			t.Fatalf("decode %q: %v", b, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("round trip %q:\n got %#v\nwant %#v", b, got, c)
		}
	}
	for _, c := range []Command{
		NodeUp{"", 1}, NodeUp{"a", 0}, join("a", 1, "", `"u"`), join("a", 1, "c", `u`),
		join("a", 1, "c", ``), occ("", 1, "c", true), NodeGone{strings.Repeat("n", 300), 0},
		PresenceJoin{App: "a", Channel: "c", UserID: json.RawMessage(`1`), UserInfo: json.RawMessage(strings.Repeat(" ", maxUserInfoSize+1)), Node: "n", Incarnation: 1},
	} {
		if _, err := EncodeCommand(c); !errors.Is(err, ErrBadCommand) {
			t.Fatalf("encode %+v: err %v, want ErrBadCommand", c, err)
		}
	}
}

func FuzzDecodeCommand(f *testing.F) {
	for _, c := range []Command{NodeUp{"a", 1}, NodeGone{"a", 0}, join("a", 1, "presence-x", `{"id":[1,2]}`), leave("a", 1, "p", `1`), occ("a", 1, "c", false)} {
		b, err := EncodeCommand(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, c := range []Command{
		Batch{Commands: []Command{join("a", 1, "presence-x", `"u"`), leave("a", 1, "presence-x", `"u"`), occ("a", 1, "c", true)}},
		Batch{Commands: []Command{occ("a", 1, "c", false)}},
	} {
		b, err := EncodeCommand(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte("\x03{\"user_id\":}"))
	f.Add([]byte("\x07{\"commands\":[{\"type\":7,\"command\":{\"commands\":[]}}]}"))
	f.Add([]byte("\x07{\"commands\":[{\"type\":1,\"command\":{\"node\":\"a\",\"incarnation\":1}}]}"))
	f.Add([]byte("\x07{\"commands\":[{\"type\":5,\"command\":{\"app\":\"a\",\"channel\":\"c\",\"node\":\"a\"}},{\"type\":4}]}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeCommand(data)
		if err != nil {
			if !errors.Is(err, ErrBadCommand) {
				t.Fatalf("error %v does not wrap ErrBadCommand", err)
			}
			return
		}
		// Anything accepted re-encodes to something that decodes equal.
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("re-encode %#v: %v", c, err)
		}
		c2, err := DecodeCommand(b)
		if err != nil || !reflect.DeepEqual(c, c2) {
			t.Fatalf("re-decode: %v\n%#v\n%#v", err, c, c2)
		}
		// And applying it never panics.
		fsm := NewFSM(Limits{})
		fsm.Apply(&raft.Log{Index: 1, Data: data})
	})
}
