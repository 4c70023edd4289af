package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testutil"
	"github.com/soketi-go/soketi/pkg/pusher"
)

type request struct {
	header http.Header
	body   []byte
}

func (r request) payload(t *testing.T) payload {
	t.Helper()
	var p payload
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	return p
}

// receiver is a webhook endpoint that records every request and answers
// with respond (200 by default).
type receiver struct {
	*httptest.Server
	mu      sync.Mutex
	reqs    []request
	respond func(n int) int // n counts requests from 1
}

func newReceiver(t *testing.T, respond func(n int) int) *receiver {
	r := &receiver{respond: respond}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.reqs = append(r.reqs, request{header: req.Header.Clone(), body: body})
		n := len(r.reqs)
		r.mu.Unlock()
		status := http.StatusOK
		if r.respond != nil {
			status = r.respond(n)
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) requests() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reqs)
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reqs)
}

var allKinds = []string{
	pusher.WebhookChannelOccupied, pusher.WebhookChannelVacated, pusher.WebhookMemberAdded,
	pusher.WebhookMemberRemoved, pusher.WebhookClientEvent, pusher.WebhookCacheMiss,
}

func testApp(id string, hooks ...pusher.Webhook) *pusher.App {
	return &pusher.App{ID: id, Key: id + "-key", Secret: id + "-secret", Enabled: true, Webhooks: hooks}
}

func newSender(t *testing.T, cfg Config) *Sender {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.RetryBase == 0 {
		cfg.RetryBase, cfg.RetryMax = 10*time.Millisecond, 20*time.Millisecond
	}
	s := New(cfg)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	})
	return s
}

// checkSigned fails unless r carries app's key and the HMAC of its exact body.
func checkSigned(t *testing.T, r request, app *pusher.App) {
	t.Helper()
	if got := r.header.Get("X-Pusher-Key"); got != app.Key {
		t.Errorf("X-Pusher-Key = %q, want %q", got, app.Key)
	}
	if got, want := r.header.Get("X-Pusher-Signature"), Sign(app.Secret, r.body); got != want {
		t.Errorf("X-Pusher-Signature does not match the HMAC of the body")
	}
}

func TestSender_EveryKind(t *testing.T) {
	rcv := newReceiver(t, nil)
	app := testApp("app-1", pusher.Webhook{URL: rcv.URL, EventTypes: allKinds})
	s := newSender(t, Config{})
	events := []pusher.WebhookEvent{
		{Name: pusher.WebhookChannelOccupied, Channel: "public"},
		{Name: pusher.WebhookChannelVacated, Channel: "public"},
		{Name: pusher.WebhookMemberAdded, Channel: "presence-room", UserID: json.RawMessage(`42`)},
		{Name: pusher.WebhookMemberRemoved, Channel: "presence-room", UserID: json.RawMessage(`"u-1"`)},
		{Name: pusher.WebhookClientEvent, Channel: "presence-room", Event: "client-typing",
			Data: json.RawMessage(`{"text":"<b>hi</b> & bye"}`), SocketID: "123.456", UserID: json.RawMessage(`7`)},
		{Name: pusher.WebhookCacheMiss, Channel: "cache-feed"},
	}
	before := time.Now().UnixMilli()
	for _, ev := range events {
		s.Send(app, ev)
	}
	testutil.WaitFor(t, 5*time.Second, "condition", func() bool { return s.Stats().Sent == uint64(len(events)) })

	wantUA := fmt.Sprintf("SoketiWebhooksAxiosClient/1.0 (Process: %d)", os.Getpid())
	got := map[string]json.RawMessage{}
	for _, r := range rcv.requests() {
		checkSigned(t, r, app)
		for h, want := range map[string]string{"Content-Type": "application/json", "Accept": "application/json", "User-Agent": wantUA} {
			if v := r.header.Get(h); v != want {
				t.Errorf("%s = %q, want %q", h, v, want)
			}
		}
		var raw struct {
			TimeMS int64             `json:"time_ms"`
			Events []json.RawMessage `json:"events"`
		}
		if err := json.Unmarshal(r.body, &raw); err != nil {
			t.Fatal(err)
		}
		if raw.TimeMS < before || raw.TimeMS > time.Now().UnixMilli() {
			t.Errorf("time_ms = %d, not the send time", raw.TimeMS)
		}
		if len(raw.Events) != 1 {
			t.Fatalf("events = %s, want one", r.body)
		}
		var name struct{ Name string }
		_ = json.Unmarshal(raw.Events[0], &name)
		got[name.Name] = raw.Events[0]
	}
	want := map[string]string{
		pusher.WebhookChannelOccupied: `{"name":"channel_occupied","channel":"public"}`,
		pusher.WebhookChannelVacated:  `{"name":"channel_vacated","channel":"public"}`,
		// As Pusher sends them: data and user_id are strings.
		pusher.WebhookMemberAdded:   `{"name":"member_added","channel":"presence-room","user_id":"42"}`,
		pusher.WebhookMemberRemoved: `{"name":"member_removed","channel":"presence-room","user_id":"u-1"}`,
		pusher.WebhookClientEvent: `{"name":"client_event","channel":"presence-room","event":"client-typing",` +
			`"data":"{\"text\":\"<b>hi</b> & bye\"}","socket_id":"123.456","user_id":"7"}`,
		pusher.WebhookCacheMiss: `{"name":"cache_miss","channel":"cache-feed"}`,
	}
	for name, w := range want {
		if string(got[name]) != w {
			t.Errorf("%s event = %s, want %s", name, got[name], w)
		}
	}
	if st := s.Stats(); st.Queued != 6 || st.Sent != 6 || st.FailedAttempts != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestSender_EventTypesAndFilter(t *testing.T) {
	for _, batching := range []bool{false, true} {
		t.Run(fmt.Sprintf("batching=%v", batching), func(t *testing.T) {
			filtered, all := newReceiver(t, nil), newReceiver(t, nil)
			app := testApp("app-1",
				pusher.Webhook{URL: filtered.URL, EventTypes: []string{pusher.WebhookChannelOccupied},
					Filter: pusher.WebhookFilter{ChannelNameStartsWith: "private-", ChannelNameEndsWith: "-x"}},
				pusher.Webhook{URL: all.URL, EventTypes: allKinds},
			)
			// A window longer than the test: Close sends the batches, so the
			// grouping does not depend on timing.
			s := newSender(t, Config{Batching: batching, BatchWindow: time.Hour})
			for _, ev := range []pusher.WebhookEvent{
				{Name: pusher.WebhookChannelOccupied, Channel: "private-a-x"}, // both
				{Name: pusher.WebhookChannelOccupied, Channel: "private-a"},   // fails the suffix
				{Name: pusher.WebhookChannelOccupied, Channel: "public-x"},    // fails the prefix
				{Name: pusher.WebhookChannelVacated, Channel: "private-b-x"},  // type not listed
				{Name: pusher.WebhookChannelOccupied, Channel: "private-c-x"}, // both
			} {
				s.Send(app, ev)
			}
			channelsOf := func(r *receiver) []string {
				var out []string
				for _, req := range r.requests() {
					checkSigned(t, req, app)
					for _, ev := range req.payload(t).Events {
						out = append(out, ev.Channel)
					}
				}
				slices.Sort(out)
				return out
			}
			closeNow(t, s)
			if n := len(channelsOf(all)); n != 5 {
				t.Errorf("unfiltered webhook got %d events, want 5", n)
			}
			if got := channelsOf(filtered); !slices.Equal(got, []string{"private-a-x", "private-c-x"}) {
				t.Errorf("filtered webhook got %v", got)
			}
			if batching {
				if n := filtered.count(); n != 1 {
					t.Errorf("filtered webhook got %d payloads, want 1 batch", n)
				}
			}
		})
	}
}

func TestSender_CustomHeadersCannotOverrideSignature(t *testing.T) {
	rcv := newReceiver(t, nil)
	app := testApp("app-1", pusher.Webhook{URL: rcv.URL, EventTypes: allKinds, Headers: map[string]string{
		"X-Custom": "yes", "x-pusher-key": "forged", "X-Pusher-Signature": "forged", "User-Agent": "mine",
	}})
	s := newSender(t, Config{})
	s.Send(app, pusher.WebhookEvent{Name: pusher.WebhookChannelOccupied, Channel: "c"})
	testutil.WaitFor(t, 5*time.Second, "condition", func() bool { return rcv.count() == 1 })
	r := rcv.requests()[0]
	checkSigned(t, r, app)
	if r.header.Get("X-Custom") != "yes" {
		t.Error("custom header missing")
	}
	if r.header.Get("User-Agent") != "mine" {
		t.Error("custom headers may override User-Agent, as in soketi")
	}
	if n := len(r.header.Values("X-Pusher-Signature")); n != 1 {
		t.Errorf("%d X-Pusher-Signature headers, want 1", n)
	}
}

func TestSender_BatchingNeverMixesApps(t *testing.T) {
	rcv := newReceiver(t, nil)
	hook := pusher.Webhook{URL: rcv.URL, EventTypes: allKinds}
	a, b := testApp("app-a", hook), testApp("app-b", hook)
	s := newSender(t, Config{Batching: true, BatchWindow: time.Hour})
	for i := range 3 {
		s.Send(a, pusher.WebhookEvent{Name: pusher.WebhookChannelOccupied, Channel: fmt.Sprintf("a-%d", i)})
	}
	for i := range 2 {
		s.Send(b, pusher.WebhookEvent{Name: pusher.WebhookChannelVacated, Channel: fmt.Sprintf("b-%d", i)})
	}
	closeNow(t, s)
	if n := rcv.count(); n != 2 {
		t.Fatalf("%d payloads, want one per app", n)
	}
	for _, r := range rcv.requests() {
		app, want := a, 3
		if r.header.Get("X-Pusher-Key") == b.Key {
			app, want = b, 2
		}
		checkSigned(t, r, app)
		p := r.payload(t)
		if len(p.Events) != want {
			t.Errorf("%s payload has %d events, want %d", app.ID, len(p.Events), want)
		}
		for _, ev := range p.Events {
			if ev.Channel[0] != app.ID[4] {
				t.Errorf("%s payload holds event of channel %s", app.ID, ev.Channel)
			}
		}
	}
}

func TestSender_BatchCap(t *testing.T) {
	rcv := newReceiver(t, nil)
	app := testApp("app-1", pusher.Webhook{URL: rcv.URL, EventTypes: allKinds})
	s := newSender(t, Config{Batching: true, BatchWindow: time.Hour, MaxBatchEvents: 2})
	for i := range 5 {
		s.Send(app, pusher.WebhookEvent{Name: pusher.WebhookChannelOccupied, Channel: fmt.Sprint(i)})
	}
	// Two full batches go at once; the fifth event waits for the window (an hour).
	testutil.WaitFor(t, 5*time.Second, "condition", func() bool { return rcv.count() == 2 })
	for _, r := range rcv.requests() {
		if n := len(r.payload(t).Events); n != 2 {
			t.Errorf("batch of %d events, want 2", n)
		}
	}
	closeNow(t, s)
	if rcv.count() != 3 {
		t.Fatalf("Close did not send the open batch")
	}
}

func TestSender_BatchWindow(t *testing.T) {
	rcv := newReceiver(t, nil)
	app := testApp("app-1", pusher.Webhook{URL: rcv.URL, EventTypes: allKinds})
	s := newSender(t, Config{Batching: true, BatchWindow: 20 * time.Millisecond})
	s.Send(app, pusher.WebhookEvent{Name: pusher.WebhookChannelOccupied, Channel: "c"})
	s.Send(app, pusher.WebhookEvent{Name: pusher.WebhookChannelVacated, Channel: "c"})
	// Sent when the window ends, without Close. Both events normally share
	// one payload; a slow machine may split them across two windows.
	testutil.WaitFor(t, 5*time.Second, "condition", func() bool {
		events := 0
		for _, r := range rcv.requests() {
			events += len(r.payload(t).Events)
		}
		return events == 2
	})
	for _, r := range rcv.requests() {
		checkSigned(t, r, app)
	}
}

// closeNow closes s, which sends every open batch, and waits for delivery.
func closeNow(t *testing.T, s *Sender) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestSender_RetriesWithBackoff(t *testing.T) {
	rcv := newReceiver(t, func(n int) int {
		if n <= 2 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	app := testApp("app-1", pusher.Webhook{URL: rcv.URL, EventTypes: allKinds})
	s := newSender(t, Config{})
	s.Send(app, pusher.WebhookEvent{Name: pusher.WebhookChannelOccupied, Channel: "c"})
	testutil.WaitFor(t, 5*time.Second, "condition", func() bool { return s.Stats().Sent == 1 })
	reqs := rcv.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	for _, r := range reqs {
		checkSigned(t, r, app)
		if string(r.body) != string(reqs[0].body) {
			t.Error("a retry changed the body")
		}
	}
	st := s.Stats()
	if st.Queued != 1 || st.FailedAttempts != 2 || st.Retries != 2 || st.GaveUp != 0 || st.RetryPending != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestSender_FailureKinds(t *testing.T) {
	tests := []struct {
		status   int
		attempts int // with MaxAttempts 3
	}{
		{http.StatusBadRequest, 1},
		{http.StatusNotFound, 1},
		{http.StatusUnauthorized, 1},
		{http.StatusFound, 1}, // redirects are not followed
		{http.StatusTooManyRequests, 3},
		{http.StatusServiceUnavailable, 3},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			rcv := newReceiver(t, func(int) int { return tt.status })
			app := testApp("app-1", pusher.Webhook{URL: rcv.URL, EventTypes: allKinds})
			s := newSender(t, Config{MaxAttempts: 3})
			s.Send(app, pusher.WebhookEvent{Name: pusher.WebhookChannelOccupied, Channel: "c"})
			testutil.WaitFor(t, 5*time.Second, "condition", func() bool { return s.Stats().GaveUp == 1 })
			st := s.Stats()
			if rcv.count() != tt.attempts || st.FailedAttempts != uint64(tt.attempts) || st.Retries != uint64(tt.attempts-1) || st.Sent != 0 {
				t.Errorf("requests = %d, stats = %+v; want %d attempts", rcv.count(), st, tt.attempts)
			}
		})
	}
}

func TestSender_RetryPeriodBounded(t *testing.T) {
	rcv := newReceiver(t, func(int) int { return http.StatusBadGateway })
	app := testApp("app-1", pusher.Webhook{URL: rcv.URL, EventTypes: allKinds})
	s := newSender(t, Config{RetryBase: 40 * time.Millisecond, RetryMax: 40 * time.Millisecond, RetryFor: 50 * time.Millisecond})
	s.Send(app, pusher.WebhookEvent{Name: pusher.WebhookChannelOccupied, Channel: "c"})
	testutil.WaitFor(t, 5*time.Second, "condition", func() bool { return s.Stats().GaveUp == 1 })
	// Back-off is 20-40 ms, so at most three attempts fit in 50 ms.
	if n := rcv.count(); n < 1 || n > 3 {
		t.Errorf("%d attempts in the retry period", n)
	}
}

func TestSender_NetworkErrorRetried(t *testing.T) {
	rcv := newReceiver(t, nil)
	url := rcv.URL
	rcv.Close() // nothing listens any more
	app := testApp("app-1", pusher.Webhook{URL: url, EventTypes: allKinds})
	s := newSender(t, Config{MaxAttempts: 2})
	s.Send(app, pusher.WebhookEvent{Name: pusher.WebhookChannelOccupied, Channel: "c"})
	testutil.WaitFor(t, 5*time.Second, "condition", func() bool { return s.Stats().GaveUp == 1 })
	if st := s.Stats(); st.FailedAttempts != 2 || st.Retries != 1 {
		t.Errorf("stats = %+v", st)
	}
}

// blockingReceiver answers nothing until release is closed.
func blockingReceiver(t *testing.T) (*receiver, chan struct{}) {
	release := make(chan struct{})
	rcv := newReceiver(t, func(int) int { <-release; return http.StatusOK })
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	return rcv, release
}

func TestSender_QueueFullDrops(t *testing.T) {
	rcv, release := blockingReceiver(t)
	app := testApp("app-1", pusher.Webhook{URL: rcv.URL, EventTypes: allKinds})
	s := newSender(t, Config{Workers: 1, QueueSize: 1})
	ev := pusher.WebhookEvent{Name: pusher.WebhookChannelOccupied, Channel: "c"}
	s.Send(app, ev)
	testutil.WaitFor(t, 5*time.Second, "condition", func() bool { return rcv.count() == 1 }) // the only worker is busy
	done := make(chan struct{})
	go func() {
		for range 4 {
			s.Send(app, ev) // one fits in the queue, three are dropped; none blocks
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Send blocked on a full queue")
	}
	if st := s.Stats(); st.Dropped != 3 || st.Queued != 2 || st.QueueLength != 1 {
		t.Errorf("stats = %+v", st)
	}
	close(release)
	testutil.WaitFor(t, 5*time.Second, "condition", func() bool { return s.Stats().Sent == 2 })
}

func TestSender_RetryQueueBounded(t *testing.T) {
	rcv := newReceiver(t, func(int) int { return http.StatusInternalServerError })
	app := testApp("app-1", pusher.Webhook{URL: rcv.URL, EventTypes: allKinds})
	s := newSender(t, Config{MaxRetrying: 1, RetryBase: time.Hour, RetryMax: time.Hour, RetryFor: 2 * time.Hour})
	for range 3 {
		s.Send(app, pusher.WebhookEvent{Name: pusher.WebhookChannelOccupied, Channel: "c"})
	}
	testutil.WaitFor(t, 5*time.Second, "condition", func() bool { st := s.Stats(); return st.Retries+st.Dropped == 3 })
	if st := s.Stats(); st.RetryPending != 1 || st.Retries != 1 || st.Dropped != 2 {
		t.Errorf("stats = %+v", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := s.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want deadline exceeded", err)
	}
	if st := s.Stats(); st.RetryPending != 0 || st.Dropped != 3 {
		t.Errorf("after Close: stats = %+v; want the waiting retry dropped", st)
	}
}

func TestSender_CloseDeliversPending(t *testing.T) {
	var mu sync.Mutex
	slow := 0
	rcv := newReceiver(t, func(int) int {
		mu.Lock()
		slow++
		mu.Unlock()
		time.Sleep(20 * time.Millisecond) // a slow endpoint, so the queue holds work at Close
		return http.StatusOK
	})
	app := testApp("app-1", pusher.Webhook{URL: rcv.URL, EventTypes: allKinds})
	s := newSender(t, Config{Workers: 1})
	for range 5 {
		s.Send(app, pusher.WebhookEvent{Name: pusher.WebhookChannelOccupied, Channel: "c"})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if rcv.count() != 5 || s.Stats().Sent != 5 {
		t.Fatalf("delivered %d of 5 before Close returned", rcv.count())
	}
	s.Send(app, pusher.WebhookEvent{Name: pusher.WebhookChannelOccupied, Channel: "c"})
	if st := s.Stats(); st.Dropped != 1 || st.Queued != 5 {
		t.Errorf("Send after Close: stats = %+v", st)
	}
}

func TestSender_CloseGivesUpAtDeadline(t *testing.T) {
	rcv, _ := blockingReceiver(t)
	app := testApp("app-1", pusher.Webhook{URL: rcv.URL, EventTypes: allKinds})
	s := newSender(t, Config{Workers: 1})
	s.Send(app, pusher.WebhookEvent{Name: pusher.WebhookChannelOccupied, Channel: "c"})
	s.Send(app, pusher.WebhookEvent{Name: pusher.WebhookChannelOccupied, Channel: "c"})
	testutil.WaitFor(t, 5*time.Second, "condition", func() bool { return rcv.count() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want deadline exceeded", err)
	}
	if st := s.Stats(); st.Dropped != 2 || st.Sent != 0 || st.QueueLength != 0 {
		t.Errorf("stats = %+v; want the in-flight and the queued payload dropped", st)
	}
}

func TestSender_LambdaSkipped(t *testing.T) {
	rcv := newReceiver(t, nil)
	app := testApp("app-1",
		pusher.Webhook{LambdaFunction: "fn", EventTypes: allKinds},
		pusher.Webhook{URL: rcv.URL, EventTypes: allKinds},
	)
	s := newSender(t, Config{})
	s.Send(app, pusher.WebhookEvent{Name: pusher.WebhookChannelOccupied, Channel: "c"})
	testutil.WaitFor(t, 5*time.Second, "condition", func() bool { return s.Stats().Sent == 1 })
	if st := s.Stats(); st.Queued != 1 {
		t.Errorf("stats = %+v; the lambda webhook must not be queued", st)
	}
}

func TestBackoff(t *testing.T) {
	s := &Sender{cfg: Config{RetryBase: time.Second, RetryMax: 60 * time.Second}}
	for n, nominal := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 7: 60 * time.Second, 40: 60 * time.Second} {
		for range 50 {
			if d := s.backoff(n); d < nominal/2 || d > nominal {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", n, d, nominal/2, nominal)
			}
		}
	}
}

// Every attempt of a payload carries the same X-Soketi-Webhook-Id: the
// transitions' cluster-wide ids when they have them, a body digest otherwise.
func TestSender_WebhookIDStableAcrossRetries(t *testing.T) {
	rcv := newReceiver(t, func(n int) int {
		if n%2 == 1 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	app := testApp("app-1", pusher.Webhook{URL: rcv.URL, EventTypes: allKinds})
	s := newSender(t, Config{})
	s.Send(app, pusher.WebhookEvent{Name: pusher.WebhookChannelOccupied, Channel: "c", ID: "42-occupancy/channel_occupied"})
	testutil.WaitFor(t, 5*time.Second, "condition", func() bool { return s.Stats().Sent == 1 })
	s.Send(app, pusher.WebhookEvent{Name: pusher.WebhookChannelVacated, Channel: "c"})
	testutil.WaitFor(t, 5*time.Second, "condition", func() bool { return s.Stats().Sent == 2 })
	reqs := rcv.requests()
	if len(reqs) != 4 {
		t.Fatalf("%d requests, want 4", len(reqs))
	}
	if a, b := reqs[0].header.Get("X-Soketi-Webhook-Id"), reqs[1].header.Get("X-Soketi-Webhook-Id"); a != "42-occupancy/channel_occupied" || b != a {
		t.Errorf("ids of the first payload's attempts: %q, %q", a, b)
	}
	c, d := reqs[2].header.Get("X-Soketi-Webhook-Id"), reqs[3].header.Get("X-Soketi-Webhook-Id")
	if c == "" || c != d || c == reqs[0].header.Get("X-Soketi-Webhook-Id") {
		t.Errorf("ids of the second payload's attempts: %q, %q", c, d)
	}
}
