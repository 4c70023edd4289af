package pusher

import (
	"encoding/json"
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
