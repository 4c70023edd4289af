package pusher

import (
	"encoding/json"
	"strconv"
	"testing"
)

// An adapter that undoes a join (its replicated write failed) before the
// server recorded the subscription must not keep the member.
func TestLocalAdapter_UndoneJoinLeavesNoMember(t *testing.T) {
	a := NewLocalAdapter()
	s := New(Options{Adapter: a})
	defer s.Close()
	c := newConn(s, testApp(), &discardTransport{})
	m := &Member{UserID: json.RawMessage(`"u"`)}
	if _, err := a.Subscribe(t.Context(), c, "presence-x", m); err != nil {
		t.Fatal(err)
	}
	res, _ := a.Unsubscribe(t.Context(), c, "presence-x")
	if res.RemovedMember == nil || !res.Vacated {
		t.Fatalf("undo = %+v, want the member removed and the channel vacated", res)
	}
	if st := a.Stats(); st.Members != 0 || st.Channels != 0 {
		t.Fatalf("left behind: %+v", st)
	}
}

// A connection's channel set answers the same past its slice's size, as a
// map, and back down.
func TestChannelSet(t *testing.T) {
	var s channelSet
	want := map[string]*Member{}
	for i := range 3 * maxFewChannels {
		name := "ch-" + strconv.Itoa(i)
		m := &Member{UserID: []byte(strconv.Itoa(i))}
		s.set(name, m)
		want[name] = m
		if i%3 == 0 {
			s.del(name)
			delete(want, name)
		}
		s.set(name, want[name]) // a re-subscription replaces nothing else
		if want[name] == nil {
			s.del(name)
		}
		if got := s.names(); len(got) != len(want) {
			t.Fatalf("after %d: %d names, want %d", i, len(got), len(want))
		}
		for n, m := range want {
			if got, ok := s.get(n); !ok || got != m {
				t.Fatalf("after %d: get(%s) = %v, %v", i, n, got, ok)
			}
		}
		if _, ok := s.get("ch-0"); ok {
			t.Fatalf("after %d: a deleted channel is still there", i)
		}
	}
}
