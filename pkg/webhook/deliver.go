package webhook

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/soketi-go/soketi/pkg/pusher"
)

// job is one payload for one webhook URL, kept across its retries.
type job struct {
	appID, appKey, secret string
	url                   string
	headers               map[string]string
	timeMS                int64
	events                []pusher.WebhookEvent

	body     []byte // encoded and signed once, so every attempt is identical
	eventID  string // X-Soketi-Webhook-Id, fixed with the body
	first    time.Time
	attempts int
}

func (s *Sender) newJob(app *pusher.App, h *pusher.Webhook, events []pusher.WebhookEvent) *job {
	return &job{
		appID: app.ID, appKey: app.Key, secret: app.Secret,
		url: h.URL, headers: h.Headers,
		timeMS: time.Now().UnixMilli(),
		events: events,
	}
}

// id is the same for every attempt of a payload, so a receiver can drop
// repeats: the transitions' cluster-wide ids when every event has one, else
// a digest of the body.
func (j *job) id() string {
	ids := make([]string, 0, len(j.events))
	for _, e := range j.events {
		if e.ID == "" {
			sum := sha256.Sum256(j.body)
			return hex.EncodeToString(sum[:12])
		}
		ids = append(ids, e.ID)
	}
	return strings.Join(ids, ",")
}

// payload is the body of a webhook request.
type payload struct {
	TimeMS int64                 `json:"time_ms"`
	Events []pusher.WebhookEvent `json:"events"`
}

// wireEvent is an event as Pusher sends it: data and user_id are strings.
// A client event's data is the string the client sent, or the JSON text of
// what it sent; a numeric user id is its text. The Pusher SDKs decode them
// as strings (pusher-http-go's Webhook fails on anything else).
type wireEvent struct {
	Name     string `json:"name"`
	Channel  string `json:"channel"`
	Event    string `json:"event,omitempty"`
	Data     string `json:"data,omitempty"`
	SocketID string `json:"socket_id,omitempty"`
	UserID   string `json:"user_id,omitempty"`
	// SubscriptionCount is a number, as Pusher's subscription_count sends it.
	SubscriptionCount *int `json:"subscription_count,omitempty"`
}

type wirePayload struct {
	TimeMS int64       `json:"time_ms"`
	Events []wireEvent `json:"events"`
}

// asString is a JSON value as Pusher's string fields carry it: a string as
// its value, anything else as its compact text.
func asString(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if raw[0] == '"' && json.Unmarshal(raw, &s) == nil {
		return s
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) != nil {
		return string(raw)
	}
	return buf.String()
}

// encode renders the body like JSON.stringify: no HTML escaping.
func encode(p payload) ([]byte, error) {
	w := wirePayload{TimeMS: p.TimeMS, Events: make([]wireEvent, len(p.Events))}
	for i, e := range p.Events {
		w.Events[i] = wireEvent{Name: e.Name, Channel: e.Channel, Event: e.Event,
			Data: asString(e.Data), SocketID: e.SocketID, UserID: asString(e.UserID), SubscriptionCount: e.SubscriptionCount}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(w); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Sign returns the X-Pusher-Signature of body: hex HMAC-SHA256 with the app secret.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

func (s *Sender) work() {
	defer s.workers.Done()
	for {
		select {
		case <-s.stop:
			return
		case j := <-s.queue:
			s.attempt(j)
		}
	}
}

// errPermanent marks request errors that a retry cannot fix.
var errPermanent = errors.New("webhook: permanent failure")

// attempt makes one delivery attempt and decides what happens next: done,
// a retry scheduled off the workers, or giving up.
func (s *Sender) attempt(j *job) {
	if j.body == nil {
		body, err := encode(payload{TimeMS: j.timeMS, Events: j.events})
		if err != nil {
			s.gaveUp.Add(1)
			s.log.Error("cannot encode webhook payload", "app_id", j.appID, "err", err)
			s.finish(j)
			return
		}
		j.body = body
		j.eventID = j.id()
		j.events, j.first = nil, time.Now()
	}
	j.attempts++
	status, err := s.post(j)
	if err == nil && status >= 200 && status < 300 {
		s.sent.Add(1)
		s.finish(j)
		return
	}
	if s.ctx.Err() != nil {
		s.abandon(j)
		return
	}
	s.failedAttempts.Add(1)
	delay := s.backoff(j.attempts)
	switch {
	case !retryable(status, err):
		s.giveUp(j, status, err, "permanent failure")
	case j.attempts >= s.cfg.MaxAttempts:
		s.giveUp(j, status, err, "too many attempts")
	case time.Since(j.first)+delay > s.cfg.RetryFor:
		s.giveUp(j, status, err, "retry period over")
	default:
		s.log.Debug("webhook attempt failed; will retry", "app_id", j.appID, "webhook_host", host(j.url),
			"status", status, "err", err, "attempts", j.attempts, "retry_in", delay)
		s.scheduleRetry(j, delay)
	}
}

func (s *Sender) giveUp(j *job, status int, err error, why string) {
	s.gaveUp.Add(1)
	s.failLog.Warn(s.log, "webhook not delivered", "app_id", j.appID, "webhook_host", host(j.url),
		"status", status, "err", err, "attempts", j.attempts, "reason", why)
	s.finish(j)
}

// post sends j once and returns the response status.
func (s *Sender) post(j *job) (int, error) {
	req, err := http.NewRequestWithContext(s.ctx, http.MethodPost, j.url, bytes.NewReader(j.body))
	if err != nil {
		return 0, fmt.Errorf("%w: bad url", errPermanent)
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return 0, fmt.Errorf("%w: url scheme %q", errPermanent, req.URL.Scheme)
	}
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("Accept", "application/json")
	h.Set("User-Agent", s.userAgent)
	for k, v := range j.headers {
		h.Set(k, v)
	}
	// Set last so that custom headers cannot override them.
	h.Set("X-Pusher-Key", j.appKey)
	h.Set("X-Pusher-Signature", Sign(j.secret, j.body))
	h.Set("X-Soketi-Webhook-Id", j.eventID)
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL may carry credentials; keep it out of logs
		}
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	resp.Body.Close()
	return resp.StatusCode, nil
}

// retryable: network errors, timeouts, throttling and server errors may
// pass later; other answers (4xx, 3xx) will not.
func retryable(status int, err error) bool {
	if err != nil {
		return !errors.Is(err, errPermanent)
	}
	return status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status >= 500
}

// backoff is the wait before the attempt after attempt n: RetryBase doubled
// per attempt, capped at RetryMax, with equal jitter (half fixed, half random)
// so that many payloads failing together do not retry together.
func (s *Sender) backoff(n int) time.Duration {
	d := s.cfg.RetryBase
	for i := 1; i < n && d < s.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, s.cfg.RetryMax)
	return d/2 + rand.N(d/2+1)
}

// scheduleRetry parks j on a timer, not on a worker. At most MaxRetrying
// payloads wait; beyond that j is dropped.
func (s *Sender) scheduleRetry(j *job, delay time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped || len(s.retrying) >= s.cfg.MaxRetrying {
		s.dropped.Add(1)
		s.dropLog.Warn(s.log, "webhook retry queue full; dropping payload", "app_id", j.appID, "max_retrying", s.cfg.MaxRetrying)
		s.finish(j)
		return
	}
	s.retries.Add(1)
	s.retrying[j] = time.AfterFunc(delay, func() { s.retryNow(j) })
}

func (s *Sender) retryNow(j *job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.retrying[j]; !ok {
		return // Close took it
	}
	delete(s.retrying, j)
	select {
	case s.queue <- j:
	default:
		s.dropped.Add(1)
		s.dropLog.Warn(s.log, "webhook queue full; dropping payload", "app_id", j.appID, "queue_size", s.cfg.QueueSize)
		s.finish(j)
	}
}

// host names a webhook in logs without its path or query, which may hold tokens.
func host(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}
