package consensus

import (
	"encoding/json"
	"testing"

	"github.com/hashicorp/raft"
)

// A user id with characters encoding/json HTML-escapes is keyed as the
// client sent it, whether the log entry escaped it (older entries did) or
// not, and whether the client escaped it.
func TestFSM_UserIDsWithHTMLCharactersHaveOneKey(t *testing.T) {
	f := NewFSM(Limits{})
	applyCmd(t, f, 1, NodeUp{Node: "a", Incarnation: 1})
	applyCmd(t, f, 2, join("a", 1, "presence-x", `"<b>&"`))
	// An entry as json.Marshal used to write it.
	old := []byte{byte(CmdPresenceJoin)}
	old = append(old, `{"app":"app","channel":"presence-x","user_id":"\u003cb\u003e\u0026","node":"a","incarnation":1}`...)
	res := f.Apply(&raft.Log{Index: 3, Data: old}).(Result)
	if res.Status != StatusApplied || res.MemberAdded {
		t.Fatalf("escaped entry: %+v (a second member?)", res)
	}
	if !f.IsMember("app", "presence-x", json.RawMessage(`"\u003cb\u003e&"`)) || !f.IsMember("app", "presence-x", json.RawMessage(`"<b>&"`)) {
		t.Fatal("IsMember misses the user in one of its spellings")
	}
	if ms := f.Members("app", "presence-x"); len(ms) != 1 || string(ms[0].UserID) != `"<b>&"` {
		t.Fatalf("members %s", ms)
	}
	snapshotRoundTrip(t, f)
}
