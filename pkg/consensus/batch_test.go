package consensus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/soketi-go/soketi/internal/testutil"
)

// subView is what a sub-result decides, without its position.
func subView(r Result) Result {
	r.Index, r.Sub = 0, 0
	return r
}

// A Batch applies its sub-commands in order, each as if it had an entry of
// its own: the same sub-results, the same state, the same hooks (numbered
// on in the batch's entry), one applied index, one observer call each.
func TestFSM_Batch(t *testing.T) {
	a := "node-a"
	tests := []struct {
		name  string
		setup []Command
		batch []Command
		want  []want
		hooks []string // the batch entry's hooks
		after func(t *testing.T, f *FSM)
	}{
		{
			name:  "in order",
			setup: []Command{NodeUp{a, 1}},
			batch: []Command{
				join(a, 1, "presence-x", `"u1"`), join(a, 1, "presence-x", `"u2"`),
				occ(a, 1, "presence-x", true), leave(a, 1, "presence-x", `"u1"`),
			},
			want: []want{{added: true}, {added: true}, {occupied: true}, {removed: true}},
			hooks: []string{`2.0 member_added presence-x "u1"`, `2.1 member_added presence-x "u2"`,
				`2.2 channel_occupied presence-x `, `2.3 member_removed presence-x "u1"`},
			after: func(t *testing.T, f *FSM) {
				if got := memberIDs(f.Members("app", "presence-x")); !reflect.DeepEqual(got, []string{`"u2"`}) {
					t.Fatalf("members %v", got)
				}
			},
		},
		{
			name:  "join and leave of one user",
			setup: []Command{NodeUp{a, 1}},
			batch: []Command{join(a, 1, "presence-x", `"u"`), leave(a, 1, "presence-x", `"u"`)},
			want:  []want{{added: true}, {removed: true}},
			hooks: []string{`2.0 member_added presence-x "u"`, `2.1 member_removed presence-x "u"`},
			after: func(t *testing.T, f *FSM) {
				if f.MemberCount("app", "presence-x") != 0 || len(f.Channels("app")) != 0 {
					t.Fatalf("left %v", f.Channels("app"))
				}
			},
		},
		{
			name:  "leave then join of one user",
			setup: []Command{NodeUp{a, 1}, join(a, 1, "presence-x", `"u"`)},
			batch: []Command{leave(a, 1, "presence-x", `"u"`), join(a, 1, "presence-x", `"u"`)},
			want:  []want{{removed: true}, {added: true}},
			hooks: []string{`3.0 member_removed presence-x "u"`, `3.1 member_added presence-x "u"`},
			after: func(t *testing.T, f *FSM) {
				if !f.IsMember("app", "presence-x", json.RawMessage(`"u"`)) {
					t.Fatal("not a member")
				}
			},
		},
		{
			name:  "a stale sub-command among good ones",
			setup: []Command{NodeUp{a, 2}},
			batch: []Command{
				join(a, 2, "presence-x", `"u1"`), join(a, 1, "presence-x", `"old"`),
				occ(a, 1, "presence-x", true), join(a, 2, "presence-x", `"u2"`),
			},
			want:  []want{{added: true}, {status: StatusStale}, {status: StatusStale}, {added: true}},
			hooks: []string{`2.0 member_added presence-x "u1"`, `2.1 member_added presence-x "u2"`},
		},
		{
			name:  "a limit among good ones",
			setup: []Command{NodeUp{a, 1}},
			batch: []Command{
				func() Command { j := join(a, 1, "presence-x", `1`); j.MaxMembers = 1; return j }(),
				func() Command { j := join(a, 1, "presence-x", `2`); j.MaxMembers = 1; return j }(),
				join(a, 1, "presence-y", `2`),
			},
			want:  []want{{added: true}, {status: StatusLimit}, {added: true}},
			hooks: []string{`2.0 member_added presence-x 1`, `2.1 member_added presence-y 2`},
		},
		{
			name:  "nothing to announce",
			setup: []Command{NodeUp{a, 1}, join(a, 1, "presence-x", `"u"`)},
			batch: []Command{join(a, 1, "presence-x", `"u"`), leave(a, 1, "presence-x", `"nobody"`), occ(a, 1, "c", false)},
			want:  []want{{}, {}, {}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// f applies the batch; g applies the same commands one by one.
			f, g := NewFSM(Limits{}), NewFSM(Limits{})
			for i, c := range tt.setup {
				applyCmd(t, f, uint64(i+1), c)
				applyCmd(t, g, uint64(i+1), c)
			}
			var observed []Result
			f.SetObserver(func(r Result) { observed = append(observed, r) })
			index := uint64(len(tt.setup) + 1)
			res := applyCmd(t, f, index, Batch{Commands: tt.batch})
			if res.Type != CmdBatch || res.Status != StatusApplied || res.Err() != nil || res.Index != index || len(res.Batch) != len(tt.batch) {
				t.Fatalf("batch result %+v", res)
			}
			if f.AppliedIndex() != index {
				t.Fatalf("AppliedIndex %d, want %d", f.AppliedIndex(), index)
			}
			if !reflect.DeepEqual(observed, res.Batch) {
				t.Fatalf("observer saw %+v, want the sub-results %+v", observed, res.Batch)
			}
			ids := map[string]bool{}
			for i, sr := range res.Batch {
				if sr.Index != index || sr.Sub != i+1 || sr.Type != tt.batch[i].Type() {
					t.Fatalf("sub-result %d: index %d sub %d type %s", i, sr.Index, sr.Sub, sr.Type)
				}
				check(t, i, sr, tt.want[i])
				switch tt.want[i].status {
				case StatusStale:
					if !errors.Is(sr.Err(), ErrStale) {
						t.Fatalf("sub-result %d: Err %v", i, sr.Err())
					}
				case StatusLimit:
					if !errors.Is(sr.Err(), ErrLimit) {
						t.Fatalf("sub-result %d: Err %v", i, sr.Err())
					}
				}
				alone := applyCmd(t, g, index+uint64(i), tt.batch[i])
				if !reflect.DeepEqual(subView(sr), subView(alone)) {
					t.Fatalf("sub-result %d: %+v, alone %+v", i, sr, alone)
				}
				if ids[sr.WebhookID()] {
					t.Fatalf("WebhookID %s twice", sr.WebhookID())
				}
				ids[sr.WebhookID()] = true
			}
			got := hookNames(f.PendingHooks(index-1, 1000))
			if tt.hooks == nil {
				tt.hooks = []string{}
			}
			if !reflect.DeepEqual(got, tt.hooks) {
				t.Fatalf("hooks:\n got %q\nwant %q", got, tt.hooks)
			}
			// The same state as one by one, hooks aside (their positions differ).
			fs, gs := *f.st, *g.st
			fs.hooks, gs.hooks = nil, nil
			if !reflect.DeepEqual(fs, gs) {
				t.Fatalf("state after the batch %+v, one by one %+v", fs.export(0), gs.export(0))
			}
			if len(f.st.hooks) != len(g.st.hooks) {
				t.Fatalf("%d hooks, one by one %d", len(f.st.hooks), len(g.st.hooks))
			}
			if tt.after != nil {
				tt.after(t, f)
			}
			r := snapshotRoundTrip(t, f)
			if !reflect.DeepEqual(hookNames(r.PendingHooks(0, 1000)), hookNames(f.PendingHooks(0, 1000))) {
				t.Fatal("hooks differ after restore")
			}
			if tt.after != nil {
				tt.after(t, r)
			}
		})
	}
}

// Hooks of the entries around a batch keep their own numbering, and
// HooksSent trims a batch's hooks together.
func TestFSM_BatchHooksAmongEntries(t *testing.T) {
	f := NewFSM(Limits{})
	applyCmd(t, f, 1, NodeUp{Node: "a", Incarnation: 1})
	applyCmd(t, f, 2, join("a", 1, "presence-x", `"u"`))
	applyCmd(t, f, 3, Batch{Commands: []Command{occ("a", 1, "presence-x", true), join("a", 1, "presence-x", `"v"`)}})
	applyCmd(t, f, 4, NodeUp{Node: "a", Incarnation: 2}) // purge
	want := []string{
		`2.0 member_added presence-x "u"`,
		`3.0 channel_occupied presence-x `, `3.1 member_added presence-x "v"`,
		`4.0 member_removed presence-x "u"`, `4.1 member_removed presence-x "v"`, `4.2 channel_vacated presence-x `,
	}
	if got := hookNames(f.PendingHooks(0, 100)); !reflect.DeepEqual(got, want) {
		t.Fatalf("hooks:\n got %q\nwant %q", got, want)
	}
	if got := hookNames(f.PendingHooks(2, 1)); !reflect.DeepEqual(got, want[1:3]) {
		t.Fatalf("a batch's hooks split: %q", got)
	}
	applyCmd(t, f, 5, HooksSent{UpTo: 3})
	if got := hookNames(f.PendingHooks(0, 100)); !reflect.DeepEqual(got, want[3:]) {
		t.Fatalf("after HooksSent 3: %q", got)
	}
}

func TestFSM_BatchOutboxIsBounded(t *testing.T) {
	f := NewFSM(Limits{MaxPendingHooks: 3})
	applyCmd(t, f, 1, NodeUp{Node: "a", Incarnation: 1})
	var cmds []Command
	for i := range 5 {
		cmds = append(cmds, join("a", 1, "presence-x", fmt.Sprintf(`"u%d"`, i)))
	}
	applyCmd(t, f, 2, Batch{Commands: cmds})
	if hs := hookNames(f.PendingHooks(0, 100)); !reflect.DeepEqual(hs, []string{
		`2.2 member_added presence-x "u2"`, `2.3 member_added presence-x "u3"`, `2.4 member_added presence-x "u4"`,
	}) || f.HooksDropped() != 2 {
		t.Fatalf("bounded outbox: %q, dropped %d", hs, f.HooksDropped())
	}
}

func TestCommand_BatchRoundTrip(t *testing.T) {
	b := Batch{Commands: []Command{
		join("a", 1, "presence-x", `{ "id" : 1 }`), leave("a", 1, "presence-x", ` 12 `), occ("a", 1, "c", true),
	}}
	data, err := EncodeCommand(b)
	if err != nil {
		t.Fatal(err)
	}
	if CommandType(data[0]) != CmdBatch {
		t.Fatalf("type byte %d", data[0])
	}
	got, err := DecodeCommand(data)
	if err != nil {
		t.Fatalf("decode %q: %v", data, err)
	}
	gb, ok := got.(Batch)
	if !ok || len(gb.Commands) != len(b.Commands) {
		t.Fatalf("decoded %#v", got)
	}
	// Each sub-command decodes as it would alone: a user has one key.
	for i, c := range b.Commands {
		alone, err := EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		want, err := DecodeCommand(alone)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(gb.Commands[i], want) {
			t.Fatalf("sub-command %d:\n got %#v\nwant %#v", i, gb.Commands[i], want)
		}
	}

	many := make([]Command, MaxBatchCommands+1)
	for i := range many {
		many[i] = occ("a", 1, fmt.Sprintf("c%d", i), true)
	}
	big := PresenceJoin{App: "a", Channel: "c", UserID: json.RawMessage(`1`),
		UserInfo: json.RawMessage(`"` + strings.Repeat("x", maxUserInfoSize-2) + `"`), Node: "n", Incarnation: 1}
	for name, c := range map[string]Batch{
		"empty":       {},
		"node_up":     {Commands: []Command{NodeUp{"a", 1}}},
		"node_gone":   {Commands: []Command{occ("a", 1, "c", true), NodeGone{"a", 0}}},
		"hooks_sent":  {Commands: []Command{HooksSent{UpTo: 1}}},
		"nested":      {Commands: []Command{Batch{Commands: []Command{occ("a", 1, "c", true)}}}},
		"nil":         {Commands: []Command{nil}},
		"invalid sub": {Commands: []Command{occ("a", 1, "c", true), join("a", 1, "", `"u"`)}},
		"too many":    {Commands: many},
		"too big":     {Commands: []Command{big, big}},
	} {
		if _, err := EncodeCommand(c); !errors.Is(err, ErrBadCommand) {
			t.Errorf("encode %s: err %v, want ErrBadCommand", name, err)
		}
	}

	sub, _ := EncodeCommand(occ("a", 1, "c", true))
	item := func(t CommandType, body string) string { return fmt.Sprintf(`{"type":%d,"command":%s}`, t, body) }
	for name, body := range map[string]string{
		"empty":        `{"commands":[]}`,
		"null":         `{"commands":null}`,
		"no commands":  `{}`,
		"unknown":      `{"commands":[` + item(CmdOccupancy, string(sub[1:])) + `],"x":1}`,
		"item field":   `{"commands":[{"type":5,"command":` + string(sub[1:]) + `,"x":1}]}`,
		"no command":   `{"commands":[{"type":5}]}`,
		"null command": `{"commands":[` + item(CmdOccupancy, "null") + `]}`,
		"wrong type":   `{"commands":[` + item(CmdPresenceJoin, string(sub[1:])) + `]}`,
		"node_up":      `{"commands":[` + item(CmdNodeUp, `{"node":"a","incarnation":1}`) + `]}`,
		"hooks_sent":   `{"commands":[` + item(CmdHooksSent, `{"up_to":1}`) + `]}`,
		"nested":       `{"commands":[` + item(CmdBatch, `{"commands":[`+item(CmdOccupancy, string(sub[1:]))+`]}`) + `]}`,
		"type 0":       `{"commands":[` + item(0, string(sub[1:])) + `]}`,
		"type 300":     `{"commands":[{"type":300,"command":` + string(sub[1:]) + `}]}`,
		"trailing":     `{"commands":[` + item(CmdOccupancy, string(sub[1:])) + `]} {}`,
	} {
		if _, err := DecodeCommand(append([]byte{byte(CmdBatch)}, body...)); !errors.Is(err, ErrBadCommand) {
			t.Errorf("decode %s: err %v, want ErrBadCommand", name, err)
		}
	}
	// The smallest items fit more than MaxBatchCommands in MaxCommandSize.
	tiny := item(CmdOccupancy, `{"app":"a","channel":"c","node":"a"}`)
	data = []byte("\x07" + `{"commands":[` + strings.Repeat(tiny+",", MaxBatchCommands) + tiny + `]}`)
	if _, err := DecodeCommand(data); len(data) > MaxCommandSize || !errors.Is(err, ErrBadCommand) ||
		!strings.Contains(err.Error(), fmt.Sprintf("batch of %d", MaxBatchCommands+1)) {
		t.Errorf("decode %d items in %d bytes: err %v", MaxBatchCommands+1, len(data), err)
	}
}

// An invalid batch entry changes nothing and is observed once, as itself.
func TestFSM_InvalidBatch(t *testing.T) {
	f := NewFSM(Limits{})
	applyCmd(t, f, 1, NodeUp{Node: "a", Incarnation: 1})
	var observed []Result
	f.SetObserver(func(r Result) { observed = append(observed, r) })
	res := f.Apply(&raft.Log{Index: 2, Data: []byte("\x07" + `{"commands":[{"type":1,"command":{"node":"b","incarnation":1}}]}`)}).(Result)
	if res.Status != StatusInvalid || res.Type != CmdBatch || res.Batch != nil || len(observed) != 1 {
		t.Fatalf("result %+v, observed %d", res, len(observed))
	}
	if _, ok := f.Incarnation("b"); ok || f.AppliedIndex() != 2 {
		t.Fatal("invalid batch applied")
	}
}

func TestResult_WebhookIDUniqueInBatch(t *testing.T) {
	ids := map[string]bool{}
	for _, r := range []Result{
		{Index: 7, Type: CmdPresenceJoin}, {Index: 7, Sub: 1, Type: CmdPresenceJoin},
		{Index: 7, Sub: 2, Type: CmdPresenceJoin}, {Index: 7, Sub: 3, Type: CmdOccupancy}, {Index: 71, Type: CmdPresenceJoin},
	} {
		if ids[r.WebhookID()] {
			t.Fatalf("WebhookID %s twice", r.WebhookID())
		}
		ids[r.WebhookID()] = true
	}
}

// A Batch forwarded from a follower returns each sub-result, and the
// follower's replica has applied them all when Apply returns.
func TestCluster_BatchForwardedReadYourWrites(t *testing.T) {
	c := newTestCluster(t, 3, 3)
	for i := range 3 {
		c.start(i)
	}
	c.link(0, 1, 2)
	c.waitLeader(15 * time.Second)
	c.waitRegistered(10 * time.Second)
	f := c.follower()
	j := func(user string, max int) PresenceJoin {
		return PresenceJoin{App: "app", Channel: "presence-x", UserID: json.RawMessage(user), Node: f.id, Incarnation: f.inc, MaxMembers: max}
	}
	res, err := f.n.Apply(context.Background(), Batch{Commands: []Command{
		j(`"u1"`, 2), j(`"u2"`, 2), j(`"u3"`, 2),
		PresenceLeave{App: "app", Channel: "presence-x", UserID: json.RawMessage(`"u1"`), Node: f.id, Incarnation: f.inc + 1},
		Occupancy{App: "app", Channel: "presence-x", Node: f.id, Incarnation: f.inc, Occupied: true},
	}})
	if err != nil || res.Type != CmdBatch || len(res.Batch) != 5 {
		t.Fatalf("batch: %+v %v", res, err)
	}
	if !f.n.FSM().ChannelOccupied("app", "presence-x") || !slices.Equal(memberIDs(f.n.FSM().Members("app", "presence-x")), []string{`"u1"`, `"u2"`}) {
		t.Fatal("read-your-writes: the batch is not on the follower's replica after Apply")
	}
	for i, w := range []Status{StatusApplied, StatusApplied, StatusLimit, StatusStale, StatusApplied} {
		if sr := res.Batch[i]; sr.Status != w || sr.Index != res.Index || sr.Sub != i+1 {
			t.Fatalf("sub-result %d: %+v, want %s", i, sr, w)
		}
	}
	if !res.Batch[0].MemberAdded || !res.Batch[4].ChannelOccupied || !errors.Is(res.Batch[2].Err(), ErrLimit) {
		t.Fatalf("sub-results %+v", res.Batch)
	}
	c.waitMembers(5*time.Second, "presence-x", `"u1"`, `"u2"`)
	testutil.WaitFor(t, 5*time.Second, "every observer saw two member_added", func() bool {
		for _, tn := range c.running() {
			if tn.added.Load() != 2 {
				return false
			}
		}
		return true
	})
}
