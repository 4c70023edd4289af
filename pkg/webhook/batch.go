package webhook

import (
	"time"

	"github.com/soketi-go/soketi/pkg/pusher"
)

// batchKey identifies one open batch: one app, one webhook of it. Batches
// never mix apps, so each payload is signed with its own app's secret.
type batchKey struct {
	appID string
	hook  int
	url   string
}

type batch struct {
	job   *job
	timer *time.Timer
}

// addToBatch appends ev to the open batch of (app, webhook i), opening one
// if needed. Only events that passed the webhook's filter get here, so the
// payload holds exactly what the webhook asked for.
func (s *Sender) addToBatch(app *pusher.App, i int, h *pusher.Webhook, ev pusher.WebhookEvent) {
	k := batchKey{appID: app.ID, hook: i, url: h.URL}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		// Close already flushed the batches; a batch opened now would miss its wait.
		s.dropped.Add(1)
		return
	}
	b, ok := s.batches[k]
	if !ok {
		if len(s.batches) >= s.cfg.MaxOpenBatches {
			s.enqueue(s.newJob(app, h, []pusher.WebhookEvent{ev}))
			return
		}
		b = &batch{job: s.newJob(app, h, make([]pusher.WebhookEvent, 0, 8))}
		s.batches[k] = b
		b.timer = time.AfterFunc(s.cfg.BatchWindow, func() { s.flushBatch(k, b) })
	}
	b.job.events = append(b.job.events, ev)
	if len(b.job.events) >= s.cfg.MaxBatchEvents {
		b.timer.Stop()
		s.sendBatch(k, b)
	}
}

func (s *Sender) flushBatch(k batchKey, b *batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.batches[k] == b {
		s.sendBatch(k, b)
	}
}

// flushAll sends every open batch now; Close calls it.
func (s *Sender) flushAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, b := range s.batches {
		b.timer.Stop()
		s.sendBatch(k, b)
	}
}

// sendBatch closes batch b and queues it. Caller holds s.mu.
func (s *Sender) sendBatch(k batchKey, b *batch) {
	delete(s.batches, k)
	b.job.timeMS = time.Now().UnixMilli()
	s.enqueue(b.job)
}
