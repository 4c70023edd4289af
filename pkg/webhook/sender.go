// Package webhook delivers Pusher webhooks over HTTP: a bounded queue, a
// fixed pool of workers, retries with back-off scheduled off the workers,
// and optional batching per app and webhook.
package webhook

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/soketi-go/soketi/internal/logevery"

	"github.com/soketi-go/soketi/pkg/pusher"
)

// Defaults of Config.
const (
	DefaultQueueSize      = 10_000
	DefaultWorkers        = 8
	DefaultTimeout        = 5 * time.Second
	DefaultRetryBase      = time.Second
	DefaultRetryMax       = 60 * time.Second
	DefaultRetryFor       = 5 * time.Minute
	DefaultMaxAttempts    = 10
	DefaultMaxRetrying    = 10_000
	DefaultBatchWindow    = 50 * time.Millisecond
	DefaultMaxBatchEvents = 100
	DefaultMaxOpenBatches = 10_000
)

// Config configures a Sender. Zero values get the defaults above.
type Config struct {
	// Batching collects the events of one app for one webhook during
	// BatchWindow and sends them as one payload; a batch reaching
	// MaxBatchEvents is sent at once. At most MaxOpenBatches batches are
	// open; an event that would open one more is sent on its own.
	Batching       bool
	BatchWindow    time.Duration
	MaxBatchEvents int
	MaxOpenBatches int

	// QueueSize bounds the payloads waiting for one of Workers.
	QueueSize int
	Workers   int
	// Timeout bounds one HTTP attempt.
	Timeout time.Duration
	// A failed attempt (network error, 408, 429, 5xx) is retried after
	// RetryBase, doubling up to RetryMax, with jitter, while fewer than
	// MaxAttempts attempts were made and the next one starts within
	// RetryFor of the first. At most MaxRetrying payloads wait for a retry.
	RetryBase   time.Duration
	RetryMax    time.Duration
	RetryFor    time.Duration
	MaxAttempts int
	MaxRetrying int

	// Client sends the requests; by default one with Timeout.
	Client *http.Client
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(n *int, v int) {
		if *n <= 0 {
			*n = v
		}
	}
	def(&c.BatchWindow, DefaultBatchWindow)
	def(&c.Timeout, DefaultTimeout)
	def(&c.RetryBase, DefaultRetryBase)
	def(&c.RetryMax, DefaultRetryMax)
	def(&c.RetryFor, DefaultRetryFor)
	defInt(&c.MaxBatchEvents, DefaultMaxBatchEvents)
	defInt(&c.MaxOpenBatches, DefaultMaxOpenBatches)
	defInt(&c.QueueSize, DefaultQueueSize)
	defInt(&c.Workers, DefaultWorkers)
	defInt(&c.MaxAttempts, DefaultMaxAttempts)
	defInt(&c.MaxRetrying, DefaultMaxRetrying)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Client == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = c.Workers
		c.Client = &http.Client{
			Timeout:   c.Timeout,
			Transport: t,
			// A redirected POST would arrive as a bodiless GET: report the 3xx instead.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
}

// Stats are the sender's counters. Counts are of payloads (HTTP requests),
// not of events, except Dropped, which also counts single events refused by
// Send after Close began.
type Stats struct {
	Queued         uint64 // payloads accepted into the queue
	Sent           uint64 // payloads delivered (2xx)
	FailedAttempts uint64 // attempts that did not get a 2xx
	Retries        uint64 // retries scheduled
	Dropped        uint64 // refused because a queue was full or the sender closed
	GaveUp         uint64 // permanent failure or retries exhausted
	QueueLength    int    // payloads waiting for a worker
	RetryPending   int    // payloads waiting for their retry time
}

// Sender implements pusher.WebhookSink.
type Sender struct {
	cfg       Config
	log       *slog.Logger
	userAgent string
	queue     chan *job

	// ctx is cancelled when Close gives up, aborting requests in flight.
	ctx     context.Context
	cancel  context.CancelFunc
	stop    chan struct{}
	workers sync.WaitGroup

	closing atomic.Bool
	// pending counts payloads not yet finished (queued, in flight or
	// waiting for a retry); idle is signalled when it drops to zero.
	pending atomic.Int64
	idle    chan struct{}

	mu       sync.Mutex
	stopped  bool
	batches  map[batchKey]*batch
	retrying map[*job]*time.Timer

	queued, sent, failedAttempts, retries, dropped, gaveUp atomic.Uint64

	dropLog, failLog logevery.Limiter
	lambdaOnce       sync.Once
	closeOnce        sync.Once
	closeErr         error
}

var _ pusher.WebhookSink = (*Sender)(nil)

// New starts a Sender's workers; stop them with Close.
func New(cfg Config) *Sender {
	cfg.setDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sender{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "webhook"),
		userAgent: fmt.Sprintf("SoketiWebhooksAxiosClient/1.0 (Process: %d)", os.Getpid()),
		queue:     make(chan *job, cfg.QueueSize),
		ctx:       ctx,
		cancel:    cancel,
		stop:      make(chan struct{}),
		idle:      make(chan struct{}, 1),
		batches:   map[batchKey]*batch{},
		retrying:  map[*job]*time.Timer{},
	}
	s.workers.Add(cfg.Workers)
	for range cfg.Workers {
		go s.work()
	}
	return s
}

// Send queues ev for every webhook of app that wants it. It never blocks:
// when the queue is full the payload is dropped and counted.
func (s *Sender) Send(app *pusher.App, ev pusher.WebhookEvent) {
	if s.closing.Load() {
		s.dropped.Add(1)
		return
	}
	for i := range app.Webhooks {
		h := &app.Webhooks[i]
		if !wants(h, ev) {
			continue
		}
		if h.URL == "" {
			s.lambdaOnce.Do(func() {
				s.log.Warn("lambda webhooks are not supported; skipping them", "app_id", app.ID)
			})
			continue
		}
		if s.cfg.Batching {
			s.addToBatch(app, i, h, ev)
			continue
		}
		s.enqueue(s.newJob(app, h, []pusher.WebhookEvent{ev}))
	}
}

// wants reports whether webhook h takes events like ev: its type is listed
// and its channel passes the filter.
func wants(h *pusher.Webhook, ev pusher.WebhookEvent) bool {
	if !h.Filter.Matches(ev.Channel) {
		return false
	}
	for _, t := range h.EventTypes {
		if t == ev.Name {
			return true
		}
	}
	return false
}

// Stats returns the current counters.
func (s *Sender) Stats() Stats {
	s.mu.Lock()
	retrying := len(s.retrying)
	s.mu.Unlock()
	return Stats{
		Queued:         s.queued.Load(),
		Sent:           s.sent.Load(),
		FailedAttempts: s.failedAttempts.Load(),
		Retries:        s.retries.Load(),
		Dropped:        s.dropped.Load(),
		GaveUp:         s.gaveUp.Load(),
		QueueLength:    len(s.queue),
		RetryPending:   retrying,
	}
}

// Close stops accepting events, sends open batches and waits until every
// pending payload, retries included, is finished or ctx ends. Whatever is
// left then is abandoned, counted as dropped, and ctx's error returned.
func (s *Sender) Close(ctx context.Context) error {
	s.closeOnce.Do(func() { s.closeErr = s.close(ctx) })
	return s.closeErr
}

func (s *Sender) close(ctx context.Context) error {
	s.closing.Store(true)
	s.flushAll()
	var err error
wait:
	for s.pending.Load() > 0 {
		select {
		case <-s.idle:
		case <-ctx.Done():
			err = ctx.Err()
			break wait
		}
	}
	s.cancel()
	close(s.stop)
	s.workers.Wait()

	s.mu.Lock()
	s.stopped = true
	for j, t := range s.retrying {
		t.Stop()
		delete(s.retrying, j)
		s.abandon(j)
	}
	s.mu.Unlock()
	for {
		select {
		case j := <-s.queue:
			s.abandon(j)
		default:
			if n := s.pending.Load(); n > 0 {
				s.log.Warn("webhooks abandoned at shutdown", "payloads", n)
			}
			return err
		}
	}
}

// abandon finishes j undelivered because the sender stopped.
func (s *Sender) abandon(j *job) {
	s.dropped.Add(1)
	s.finish(j)
}

// enqueue hands a new payload to the workers, or drops it if the queue is full.
func (s *Sender) enqueue(j *job) {
	s.pending.Add(1)
	select {
	case s.queue <- j:
		s.queued.Add(1)
	default:
		s.dropped.Add(1)
		s.dropLog.Warn(s.log, "webhook queue full; dropping payload", "app_id", j.appID, "queue_size", s.cfg.QueueSize)
		s.finish(j)
	}
}

// finish marks j done, delivered or not.
func (s *Sender) finish(*job) {
	if s.pending.Add(-1) == 0 && s.closing.Load() {
		select {
		case s.idle <- struct{}{}:
		default:
		}
	}
}
