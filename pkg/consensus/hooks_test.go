package consensus

import (
	"fmt"
	"reflect"
	"testing"
)

func hookNames(hs []Hook) []string {
	out := []string{}
	for _, h := range hs {
		out = append(out, fmt.Sprintf("%s %s %s %s", h.ID(), h.Event, h.Channel, h.UserID))
	}
	return out
}

// Every committed transition is recorded once with its log position, a
// stale or duplicate command records nothing, HooksSent trims, and the
// outbox survives a snapshot.
func TestFSM_WebhookOutbox(t *testing.T) {
	f := NewFSM(Limits{})
	steps := []Command{
		NodeUp{Node: "a", Incarnation: 1},  // 1
		NodeUp{Node: "b", Incarnation: 1},  // 2
		join("a", 1, "presence-x", `"u"`),  // 3: member_added
		occ("a", 1, "presence-x", true),    // 4: channel_occupied
		join("b", 1, "presence-x", `"u"`),  // 5: nothing (already a member)
		join("a", 9, "presence-x", `"v"`),  // 6: stale: nothing
		join("b", 1, "presence-x", `"w"`),  // 7: member_added
		occ("b", 1, "presence-x", true),    // 8: nothing (already occupied)
		NodeGone{Node: "b"},                // 9: member_removed w (u stays through a)
		leave("a", 1, "presence-x", `"u"`), // 10: member_removed
		occ("a", 1, "presence-x", false),   // 11: channel_vacated
	}
	for i, c := range steps {
		applyCmd(t, f, uint64(i+1), c)
	}
	got := hookNames(f.PendingHooks(0, 100))
	want := []string{
		`3.0 member_added presence-x "u"`,
		`4.0 channel_occupied presence-x `,
		`7.0 member_added presence-x "w"`,
		`9.0 member_removed presence-x "w"`,
		`10.0 member_removed presence-x "u"`,
		`11.0 channel_vacated presence-x `,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("outbox:\n got %q\nwant %q", got, want)
	}
	if got := hookNames(f.PendingHooks(7, 1)); len(got) != 1 || got[0] != want[3] {
		t.Fatalf("after 7, max 1: %q", got)
	}
	restored := snapshotRoundTrip(t, f)
	if !reflect.DeepEqual(hookNames(restored.PendingHooks(0, 100)), want) {
		t.Fatalf("outbox after restore: %q", hookNames(restored.PendingHooks(0, 100)))
	}
	applyCmd(t, f, 12, HooksSent{UpTo: 9})
	if got := hookNames(f.PendingHooks(0, 100)); !reflect.DeepEqual(got, want[4:]) {
		t.Fatalf("after HooksSent 9: %q", got)
	}
}

// A purge's transitions share their entry's index and are numbered.
func TestFSM_WebhookOutboxPurgeSeq(t *testing.T) {
	f := NewFSM(Limits{})
	applyCmd(t, f, 1, NodeUp{Node: "a", Incarnation: 1})
	applyCmd(t, f, 2, join("a", 1, "presence-x", `"u"`))
	applyCmd(t, f, 3, occ("a", 1, "presence-x", true))
	applyCmd(t, f, 4, NodeUp{Node: "a", Incarnation: 2}) // restarted: purge
	got := hookNames(f.PendingHooks(3, 100))
	want := []string{`4.0 member_removed presence-x "u"`, `4.1 channel_vacated presence-x `}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("purge hooks %q, want %q", got, want)
	}
}

func TestFSM_WebhookOutboxIsBounded(t *testing.T) {
	f := NewFSM(Limits{MaxPendingHooks: 3})
	applyCmd(t, f, 1, NodeUp{Node: "a", Incarnation: 1})
	for i := range 5 {
		applyCmd(t, f, uint64(2+i), join("a", 1, "presence-x", fmt.Sprintf(`"u%d"`, i)))
	}
	if hs := f.PendingHooks(0, 100); len(hs) != 3 || hs[0].Index != 4 || f.HooksDropped() != 2 {
		t.Fatalf("bounded outbox: %q, dropped %d", hookNames(hs), f.HooksDropped())
	}
}
