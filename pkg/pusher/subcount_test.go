package pusher

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"
)

func countOf(t *testing.T, m map[string]any) int {
	t.Helper()
	var d struct {
		N *int `json:"subscription_count"`
	}
	if s, _ := m["data"].(string); json.Unmarshal([]byte(s), &d) != nil || d.N == nil {
		t.Fatalf("subscription_count data: %#v", m["data"])
	}
	return *d.N
}

const countEvent = "pusher_internal:subscription_count"

// expectCount reads count events until one says want.
func expectCount(t *testing.T, c *client, want int) {
	t.Helper()
	for i := 0; i < 10; i++ {
		if n := countOf(t, c.Expect(countEvent)); n == want {
			return
		}
	}
	t.Fatalf("never got subscription_count %d", want)
}

// Subscribers of a counted channel hear its count as it changes; presence
// channels and apps without the flag do not; the webhook carries it.
func TestSubscriptionCount_OneNode(t *testing.T) {
	hooks := &recordingHooks{}
	app := testApp(func(a *App) {
		a.EnableSubscriptionCount = true
		a.Webhooks = []Webhook{{URL: "http://127.0.0.1:1", EventTypes: []string{WebhookSubscriptionCount}}}
	})
	plain := testApp(func(a *App) { a.ID, a.Key, a.Secret = "plain", "plain-key", "plain-secret" })
	ts := newTestServer(t, Options{Webhooks: hooks}, app, plain)

	a := ts.connect(t, app.Key)
	a.subscribe("room")
	a.Expect("pusher_internal:subscription_succeeded")
	expectCount(t, a, 1)
	b := ts.connect(t, app.Key)
	b.subscribe("room")
	b.Expect("pusher_internal:subscription_succeeded")
	expectCount(t, b, 2)
	expectCount(t, a, 2)
	b.Close()
	expectCount(t, a, 1)

	p := ts.connect(t, app.Key)
	presenceJoin(t, ts, app, p, "presence-room", `{"user_id":1}`)
	q := ts.connect(t, plain.Key)
	q.subscribe("room")
	q.Expect("pusher_internal:subscription_succeeded")
	p.ExpectNone(countEvent, 300*time.Millisecond)
	q.ExpectNone(countEvent, 100*time.Millisecond)

	got := []int{}
	for _, e := range hooks.snapshot() {
		if e.Name == WebhookSubscriptionCount && e.Channel == "room" {
			got = append(got, *e.SubscriptionCount)
		}
	}
	if !reflect.DeepEqual(got, []int{1, 2, 1}) {
		t.Fatalf("subscription_count webhooks = %v, want [1 2 1]", got)
	}
}

type recordingHooks struct {
	mu     sync.Mutex
	events []WebhookEvent
}

func (h *recordingHooks) Send(_ *App, ev WebhookEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, ev)
}

func (h *recordingHooks) snapshot() []WebhookEvent {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]WebhookEvent(nil), h.events...)
}

// fakeCounter is a SubscriptionCounter whose counts a test sets.
type fakeCounter struct {
	mu        sync.Mutex
	n         map[string]int
	published []string // "channel=N" per PublishLocal
	local     int      // local subscribers PublishLocal reports
}

func (f *fakeCounter) SubscriptionCount(_, ch string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n[ch]
}

func (f *fakeCounter) PublishLocal(_, ch string, fr Frame) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var m struct{ Data string }
	// The frame is a WebSocket text frame: the JSON starts at its first '{'.
	_ = json.Unmarshal(fr[bytes.IndexByte(fr, '{'):], &m)
	var d struct {
		N int `json:"subscription_count"`
	}
	_ = json.Unmarshal([]byte(m.Data), &d)
	f.published = append(f.published, ch+"="+strconv.Itoa(d.N))
	return f.local
}

func (f *fakeCounter) SendsCountWebhooks() bool { return false }

func (f *fakeCounter) set(ch string, n int) {
	f.mu.Lock()
	f.n[ch] = n
	f.mu.Unlock()
}

func (f *fakeCounter) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.published
	f.published = nil
	return p
}

// The rule, tick by tick: changes are sent once per tick, an unchanged
// count only to a new subscriber, and a busy channel's at most once per
// countBusyEvery, its latest count when the wait ends.
func TestSubscriptionCount_Rule(t *testing.T) {
	fc := &fakeCounter{n: map[string]int{}, local: 1}
	apps, err := NewStaticApps([]*App{testApp(func(a *App) { a.ID, a.EnableSubscriptionCount = "app", true })})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{opts: Options{Metrics: nopMetrics{}, Apps: apps}, counts: newSubCounts(fc)}
	now := time.Unix(1000, 0)
	step := func(d time.Duration, want ...string) {
		t.Helper()
		now = now.Add(d)
		s.sendCounts(now)
		if got := fc.take(); !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Fatalf("at +%v: sent %v, want %v", now.Sub(time.Unix(1000, 0)), got, want)
		}
	}
	fc.set("a", 1)
	s.counts.changed("app", "a", true)
	step(countTick, "a=1")
	s.counts.changed("app", "a", false) // nothing changed
	step(countTick)
	s.counts.changed("app", "a", true) // a join that a leave cancelled
	step(countTick, "a=1")

	for _, n := range []int{150, 151, 152, 153} {
		fc.set("a", n)
		s.counts.changed("app", "a", false)
		step(countTick) // busy: held back
	}
	step(countBusyEvery, "a=153")
	fc.set("a", 2)
	s.counts.changed("app", "a", false)
	step(countTick, "a=2") // not busy any more
	fc.set("a", 0)
	s.counts.changed("app", "a", false)
	step(countTick) // nobody left to tell
	if len(s.counts.sent) != 0 {
		t.Fatalf("state kept for an empty channel: %v", s.counts.sent)
	}
}
