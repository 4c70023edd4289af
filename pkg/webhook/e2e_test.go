package webhook

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/soketi-go/soketi/internal/testutil"
	"github.com/soketi-go/soketi/pkg/pusher"
	"github.com/soketi-go/soketi/pkg/wstransport"
)

// TestSender_ThroughPusherServer drives a real pusher.Server over WebSocket:
// a subscribe fires channel_occupied, and the 4200 eviction at shutdown
// fires channel_vacated, which Close then delivers.
func TestSender_ThroughPusherServer(t *testing.T) {
	rcv := newReceiver(t, nil)
	app, err := pusher.ParseApp(map[string]any{"id": "app-e2e", "key": "app-e2e-key", "secret": "app-e2e-secret"},
		pusher.DefaultAppLimits)
	if err != nil {
		t.Fatal(err)
	}
	app.Webhooks = []pusher.Webhook{{URL: rcv.URL,
		EventTypes: []string{pusher.WebhookChannelOccupied, pusher.WebhookChannelVacated}}}
	apps, err := pusher.NewStaticApps([]*pusher.App{app})
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	sender := newSender(t, Config{})
	srv := pusher.New(pusher.Options{Apps: apps, Webhooks: sender, Logger: quiet, WebSocket: wstransport.New()})
	defer srv.Close()
	hs := httptest.NewServer(srv.Router())
	defer hs.Close()

	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(hs.URL, "http")+"/app/"+app.Key, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if _, _, err := ws.ReadMessage(); err != nil { // pusher:connection_established
		t.Fatal(err)
	}
	if err := ws.WriteMessage(websocket.TextMessage,
		[]byte(`{"event":"pusher:subscribe","data":{"channel":"news"}}`)); err != nil {
		t.Fatal(err)
	}
	go func() { // read on, so the server's close handshake completes
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				return
			}
		}
	}()
	testutil.WaitFor(t, 5*time.Second, "condition", func() bool { return sender.Stats().Sent == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	closeNow(t, sender)

	var names []string
	for _, r := range rcv.requests() {
		checkSigned(t, r, app)
		for _, ev := range r.payload(t).Events {
			if ev.Channel != "news" {
				t.Errorf("event on channel %q", ev.Channel)
			}
			names = append(names, ev.Name)
		}
	}
	if strings.Join(names, ",") != "channel_occupied,channel_vacated" {
		t.Fatalf("webhooks = %v, want channel_occupied then channel_vacated", names)
	}
}
