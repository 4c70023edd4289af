package pusher

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testutil"
)

// watchEvents decodes pusher_internal:watchlist_events into name → ids.
func watchEvents(t *testing.T, m map[string]any) map[string][]string {
	t.Helper()
	s, ok := m["data"].(string)
	if !ok {
		t.Fatalf("watchlist_events data is not a string: %#v", m["data"])
	}
	var d struct {
		Events []struct {
			Name    string   `json:"name"`
			UserIDs []string `json:"user_ids"`
		} `json:"events"`
	}
	if err := json.Unmarshal([]byte(s), &d); err != nil {
		t.Fatalf("watchlist_events data %q: %v", s, err)
	}
	out := map[string][]string{}
	for _, e := range d.Events {
		out[e.Name] = append(out[e.Name], e.UserIDs...)
	}
	return out
}

const watchlistEvent = "pusher_internal:watchlist_events"

// A watcher gets the state of its list at sign-in, then each user's first
// connection and last one; further connections of an online user change
// nothing.
func TestWatchlist_InitialStateThenTransitions(t *testing.T) {
	app := testApp()
	ts := newTestServer(t, Options{}, app)
	b1 := ts.connect(t, app.Key)
	signin(app, b1, `{"id":"b"}`)
	b1.Expect("pusher:signin_success")

	a := ts.connect(t, app.Key)
	signin(app, a, `{"id":"a","watchlist":["b","c",7,"b"]}`)
	a.Expect("pusher:signin_success")
	if got, want := watchEvents(t, a.Expect(watchlistEvent)), map[string][]string{"online": {"b"}, "offline": {"c", "7"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("initial state = %v, want %v", got, want)
	}

	c := ts.connect(t, app.Key)
	signin(app, c, `{"id":"c"}`)
	c.Expect("pusher:signin_success")
	if got := watchEvents(t, a.Expect(watchlistEvent)); !reflect.DeepEqual(got, map[string][]string{"online": {"c"}}) {
		t.Fatalf("c signing in: %v", got)
	}
	b2 := ts.connect(t, app.Key)
	signin(app, b2, `{"id":"b"}`)
	b2.Expect("pusher:signin_success")
	b1.Close()
	a.ExpectNone(watchlistEvent, 300*time.Millisecond) // b is still online on b2
	b2.Close()
	if got := watchEvents(t, a.Expect(watchlistEvent)); !reflect.DeepEqual(got, map[string][]string{"offline": {"b"}}) {
		t.Fatalf("b's last connection closing: %v", got)
	}
	// A watcher that left is told nothing more, and leaves nothing behind.
	a.Close()
	c.Close()
	testutil.WaitFor(t, 2*time.Second, "watchers forgotten", func() bool {
		ts.watch.mu.Lock()
		defer ts.watch.mu.Unlock()
		return len(ts.watch.lists) == 0 && len(ts.watch.byApp) == 0
	})
}

// Signing in as another user on the same connection takes the first user
// offline when it was their only connection.
func TestWatchlist_SigningInAsAnotherUser(t *testing.T) {
	app := testApp()
	ts := newTestServer(t, Options{}, app)
	a := ts.connect(t, app.Key)
	signin(app, a, `{"id":"a","watchlist":["x","y"]}`)
	a.Expect("pusher:signin_success")
	watchEvents(t, a.Expect(watchlistEvent))

	u := ts.connect(t, app.Key)
	signin(app, u, `{"id":"x"}`)
	u.Expect("pusher:signin_success")
	if got := watchEvents(t, a.Expect(watchlistEvent)); !reflect.DeepEqual(got, map[string][]string{"online": {"x"}}) {
		t.Fatalf("x online: %v", got)
	}
	time.Sleep(1100 * time.Millisecond) // one sign-in per second
	signin(app, u, `{"id":"y"}`)
	u.Expect("pusher:signin_success")
	got := map[string][]string{}
	for len(got["online"])+len(got["offline"]) < 2 {
		for k, v := range watchEvents(t, a.Expect(watchlistEvent)) {
			got[k] = append(got[k], v...)
		}
	}
	if !reflect.DeepEqual(got, map[string][]string{"online": {"y"}, "offline": {"x"}}) {
		t.Fatalf("x → y: %v", got)
	}
}

// A watchlist longer than Pusher's 100 ids, or not a list of ids, refuses
// the sign-in; sign-ins past one a second get 4301 and change nothing.
func TestWatchlist_Bounds(t *testing.T) {
	app := testApp()
	ts := newTestServer(t, Options{}, app)
	ids := make([]string, MaxWatchlistLength+1)
	for i := range ids {
		ids[i] = fmt.Sprintf("%q", fmt.Sprint(i))
	}
	for _, list := range []string{"[" + strings.Join(ids, ",") + "]", `"b"`, `[{"id":"b"}]`, `[""]`, `[true]`} {
		c := ts.connect(t, app.Key)
		signin(app, c, `{"id":"a","watchlist":`+list+`}`)
		if m := c.Expect("pusher:error"); errorCode(m) != 4009 {
			t.Fatalf("watchlist %.40s: %v", list, m)
		}
		c.ExpectClose(4009)
	}
	ok := ts.connect(t, app.Key)
	signin(app, ok, `{"id":"a","watchlist":[`+strings.Join(ids[:MaxWatchlistLength], ",")+`]}`)
	ok.Expect("pusher:signin_success")
	if got := watchEvents(t, ok.Expect(watchlistEvent)); len(got["offline"]) != MaxWatchlistLength {
		t.Fatalf("a full watchlist: %d offline", len(got["offline"]))
	}
	signin(app, ok, `{"id":"z"}`)
	if m := ok.Expect("pusher:error"); errorCode(m) != 4301 {
		t.Fatalf("second sign-in within a second: %v", m)
	}
	if ts.local().IsSignedIn(app.ID, "z") || !ts.local().IsSignedIn(app.ID, "a") {
		t.Fatal("a refused sign-in changed the user")
	}
}

func TestParseWatchlist(t *testing.T) {
	for raw, want := range map[string][]string{
		"":               nil,
		"null":           nil,
		"[]":             nil,
		`["a",2,"a",-0]`: {"a", "2", "-0"},
		`[1.5]`:          {"1.5"},
		`[1e400]`:        {"refused"},
		`{}`:             {"refused"},
		`[[]]`:           {"refused"},
		`[null]`:         {"refused"},
		`[""]`:           {"refused"},
		"[" + strings.Repeat(`"a",`, 200) + `"a"]`: {"refused"}, // 201 entries, even if one id
	} {
		ids, ok := parseWatchlist(json.RawMessage(raw))
		if !ok {
			ids = []string{"refused"}
		}
		if !reflect.DeepEqual(ids, want) {
			t.Errorf("%.30s: %v, want %v", raw, ids, want)
		}
	}
}
