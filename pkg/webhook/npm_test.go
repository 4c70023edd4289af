package webhook

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/soketi-go/soketi/pkg/pusher"
)

// npmDir holds a node script that checks webhooks with the official pusher
// package; `npm install` there fetches it (.ci/run does so in CI).
var npmDir = filepath.Join("..", "..", "test", "webhook-npm")

type npmVerdict struct {
	Valid  bool              `json:"valid"`
	TimeMS int64             `json:"time_ms"`
	Events []json.RawMessage `json:"events"`
}

func npmVerify(t *testing.T, app *pusher.App, r request) npmVerdict {
	t.Helper()
	headers := map[string]string{}
	for name := range r.header {
		headers[name] = r.header.Get(name)
	}
	in, err := json.Marshal(map[string]any{"headers": headers, "body": string(r.body)})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", "verify.js", app.ID, app.Key, app.Secret)
	cmd.Dir = npmDir
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node verify.js: %v\n%s", err, stderr.Bytes())
	}
	var v npmVerdict
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("verify.js output %q: %v", out, err)
	}
	return v
}

func requireNpm(t *testing.T) {
	t.Helper()
	_, modErr := os.Stat(filepath.Join(npmDir, "node_modules", "pusher"))
	_, nodeErr := exec.LookPath("node")
	if modErr == nil && nodeErr == nil {
		return
	}
	msg := "needs node and `npm install` in test/webhook-npm"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func TestSender_SignatureAcceptedByPusherNpm(t *testing.T) {
	requireNpm(t)
	rcv := newReceiver(t, nil)
	app := testApp("app-npm", pusher.Webhook{URL: rcv.URL, EventTypes: allKinds,
		Headers: map[string]string{"X-Pusher-Signature": "forged"}})
	s := newSender(t, Config{Batching: true, BatchWindow: time.Hour})
	events := []pusher.WebhookEvent{
		{Name: pusher.WebhookChannelOccupied, Channel: "presence-room"},
		{Name: pusher.WebhookMemberAdded, Channel: "presence-room", UserID: json.RawMessage(`42`)},
		{Name: pusher.WebhookClientEvent, Channel: "presence-room", Event: "client-msg",
			Data: json.RawMessage(`{"text":"<é> & \u2028 ☃","n":1.5}`), SocketID: "1.2", UserID: json.RawMessage(`"u"`)},
	}
	for _, ev := range events {
		s.Send(app, ev)
	}
	closeNow(t, s)
	reqs := rcv.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d payloads, want 1 batch", len(reqs))
	}
	r := reqs[0]
	v := npmVerify(t, app, r)
	if !v.Valid {
		t.Fatalf("pusher npm rejects the webhook: body %s", r.body)
	}
	if len(v.Events) != len(events) {
		t.Fatalf("pusher npm sees %d events, want %d", len(v.Events), len(events))
	}
	if v.TimeMS != r.payload(t).TimeMS {
		t.Errorf("time_ms = %d, want %d", v.TimeMS, r.payload(t).TimeMS)
	}

	tampered := r
	tampered.body = bytes.Replace(r.body, []byte("client-msg"), []byte("client-msh"), 1)
	if npmVerify(t, app, tampered).Valid {
		t.Error("pusher npm accepts a tampered body")
	}
	other := *app
	other.Secret = "another-secret"
	if npmVerify(t, &other, r).Valid {
		t.Error("pusher npm accepts the signature under another secret")
	}
}
