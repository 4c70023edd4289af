package pusher

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// refusingAdapter delivers locally, then reports err, as the cluster
// adapter does when another node could not take a message.
type refusingAdapter struct {
	*LocalAdapter
	err error
}

func (a *refusingAdapter) Publish(ctx context.Context, appID, channel string, f Frame, except string) (int, error) {
	n, _ := a.LocalAdapter.Publish(ctx, appID, channel, f, except)
	return n, a.err
}

func (a *refusingAdapter) SendToUser(ctx context.Context, appID, userID string, f Frame) (int, error) {
	n, _ := a.LocalAdapter.SendToUser(ctx, appID, userID, f)
	return n, a.err
}

// A publish that some node could not take is answered 503 (the SDKs retry
// it) after the local fan-out; any other adapter error keeps the 200.
func TestAPI_PublishNotTakenByEveryNodeIs503(t *testing.T) {
	ad := &refusingAdapter{LocalAdapter: NewLocalAdapter(), err: fmt.Errorf("%w: peer b: queue full", ErrUnavailable)}
	ts := newTestServer(t, Options{Adapter: ad})
	app := testApp()
	sub := ts.connect(t, app.Key)
	sub.subscribe("news")
	sub.Expect("pusher_internal:subscription_succeeded") // or the publish may come first

	r := ts.trigger(t, app, "news", "update", "refused")
	if r.status != 503 || r.body["code"] != float64(503) || r.body["error"] == "" || r.header.Get("Retry-After") != "1" {
		t.Fatalf("POST /events with a node refusing: %d %v Retry-After %q", r.status, r.body, r.header.Get("Retry-After"))
	}
	if m := sub.Expect("update"); m["data"] != "refused" {
		t.Fatalf("local subscriber got %v", m)
	}
	batch := map[string]any{"batch": []map[string]any{
		{"name": "update", "channel": "other", "data": "a"},
		{"name": "update", "channel": "news", "data": "b"},
	}}
	if r := ts.api(t, app, "POST", "/apps/"+app.ID+"/batch_events", nil, batch); r.status != 503 {
		t.Fatalf("POST /batch_events with a node refusing: %d %v", r.status, r.body)
	}
	if m := sub.Expect("update"); m["data"] != "b" {
		t.Fatalf("local subscriber got %v from the batch", m)
	}
	if r := ts.trigger(t, app, "#server-to-user-7", "update", "u"); r.status != 503 {
		t.Fatalf("server-to-user with a node refusing: %d %v", r.status, r.body)
	}

	ad.err = errors.New("something else")
	if r := ts.trigger(t, app, "news", "update", "other error"); r.status != 200 {
		t.Fatalf("POST /events with another adapter error: %d %v, want 200 as before", r.status, r.body)
	}
	ad.err = nil
	if r := ts.trigger(t, app, "news", "update", "ok"); r.status != 200 {
		t.Fatalf("POST /events: %d %v", r.status, r.body)
	}
}
