package pusher

import (
	"encoding/json"
	"reflect"
	"testing"
)

// subscription_succeeded is built by hand; it must decode to what encoding/json
// makes of the same members.
func TestSubscriptionSucceeded_DecodesLikeEncodingJSON(t *testing.T) {
	for _, members := range [][]Member{
		nil,
		{{UserID: json.RawMessage(`"a"`)}},
		{
			{UserID: json.RawMessage(`"ü\"ser"`), UserInfo: json.RawMessage(`{"name":"Zoë \"Z\"","tags":["<b>",1.5,null],"bio":"line\nbreak \u2028"}`)},
			{UserID: json.RawMessage(`42`), UserInfo: json.RawMessage(`"just a string"`)},
			{UserID: json.RawMessage(`"back\\slash"`), UserInfo: json.RawMessage(`[]`)},
		},
	} {
		var ev struct{ Event, Channel, Data string }
		if err := json.Unmarshal(SubscriptionSucceededJSON(`presence-"q"`, members), &ev); err != nil {
			t.Fatalf("not an event with string data: %v", err)
		}
		if ev.Event != "pusher_internal:subscription_succeeded" || ev.Channel != `presence-"q"` {
			t.Fatalf("event %q on %q", ev.Event, ev.Channel)
		}
		quoted := ev.Data
		var got, want any
		if err := json.Unmarshal([]byte(quoted), &got); err != nil {
			t.Fatalf("inner %s: %v", quoted, err)
		}
		ids := []json.RawMessage{}
		hash := map[string]json.RawMessage{}
		for _, m := range members {
			ids = append(ids, m.UserID)
			var key string
			if json.Unmarshal(m.UserID, &key) != nil {
				key = string(m.UserID)
			}
			hash[key] = m.UserInfo
			if m.UserInfo == nil {
				hash[key] = json.RawMessage("null")
			}
		}
		ref, _ := json.Marshal(map[string]any{"presence": map[string]any{"ids": ids, "hash": hash, "count": len(members)}})
		json.Unmarshal(ref, &want)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("presence data\n got %v\nwant %v", got, want)
		}
	}
}
