package webhook

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	pushersdk "github.com/pusher/pusher-http-go/v5"

	"github.com/soketi-go/soketi/pkg/pusher"
)

// Every webhook kind, batched into one request, is accepted and decoded by
// the official Go SDK's Webhook(), field for field as Pusher documents them.
func TestSender_EveryKindDecodedByPusherHTTPGo(t *testing.T) {
	rcv := newReceiver(t, nil)
	app := testApp("app-go", pusher.Webhook{URL: rcv.URL, EventTypes: allKinds})
	s := newSender(t, Config{Batching: true, BatchWindow: time.Hour})
	events := []pusher.WebhookEvent{
		{Name: pusher.WebhookChannelOccupied, Channel: "presence-room"},
		{Name: pusher.WebhookChannelVacated, Channel: "public"},
		{Name: pusher.WebhookMemberAdded, Channel: "presence-room", UserID: json.RawMessage(`42`)},
		{Name: pusher.WebhookMemberRemoved, Channel: "presence-room", UserID: json.RawMessage(`"u-1"`)},
		{Name: pusher.WebhookClientEvent, Channel: "presence-room", Event: "client-msg",
			Data: json.RawMessage(`{"text": "<é> & ☃", "n": 1.5}`), SocketID: "1.2", UserID: json.RawMessage(`"u"`)},
		{Name: pusher.WebhookClientEvent, Channel: "private-chat", Event: "client-typing",
			Data: json.RawMessage(`"just a string"`), SocketID: "3.4"},
		{Name: pusher.WebhookCacheMiss, Channel: "cache-feed"},
	}
	for _, ev := range events {
		s.Send(app, ev)
	}
	closeNow(t, s)
	reqs := rcv.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d payloads, want 1 batch", len(reqs))
	}
	client := pushersdk.Client{AppID: app.ID, Key: app.Key, Secret: app.Secret}
	hook, err := client.Webhook(http.Header(reqs[0].header), reqs[0].body)
	if err != nil {
		t.Fatalf("pusher-http-go Webhook(): %v\nbody %s", err, reqs[0].body)
	}
	want := []pushersdk.WebhookEvent{
		{Name: "channel_occupied", Channel: "presence-room"},
		{Name: "channel_vacated", Channel: "public"},
		{Name: "member_added", Channel: "presence-room", UserID: "42"},
		{Name: "member_removed", Channel: "presence-room", UserID: "u-1"},
		{Name: "client_event", Channel: "presence-room", Event: "client-msg",
			Data: `{"text":"<é> & ☃","n":1.5}`, SocketID: "1.2", UserID: "u"},
		{Name: "client_event", Channel: "private-chat", Event: "client-typing", Data: "just a string", SocketID: "3.4"},
		{Name: "cache_miss", Channel: "cache-feed"},
	}
	if len(hook.Events) != len(want) {
		t.Fatalf("the SDK decodes %d events, want %d", len(hook.Events), len(want))
	}
	for i := range want {
		if hook.Events[i] != want[i] {
			t.Errorf("event %d: the SDK decodes %+v, want %+v", i, hook.Events[i], want[i])
		}
	}
	if hook.TimeMs == 0 {
		t.Error("time_ms missing")
	}
	tampered := reqs[0].header.Clone()
	tampered.Set("X-Pusher-Signature", Sign("another-secret", reqs[0].body))
	if _, err := client.Webhook(http.Header(tampered), reqs[0].body); err == nil {
		t.Error("the SDK accepts a signature made with another secret")
	}
}
