package metrics

import "github.com/prometheus/client_golang/prometheus"

// WebhookStats are the webhook sender's counters, read at scrape time.
// Counts are of payloads (HTTP requests), not of events.
type WebhookStats struct {
	Queued         uint64 // payloads accepted into the queue
	Sent           uint64 // payloads delivered (2xx)
	FailedAttempts uint64 // attempts that did not get a 2xx
	Retries        uint64 // retries scheduled
	Dropped        uint64 // refused because a queue was full or the sender closed
	GaveUp         uint64 // permanent failure or retries exhausted
	QueueLength    int    // payloads waiting for a worker
	RetryPending   int    // payloads waiting for their retry time
}

// LimiterStats are the rate limiter's counters, read at scrape time.
type LimiterStats struct {
	Keys      int
	Rejected  uint64
	Evictions uint64
}

// ObserveWebhooks exports the webhook sender's counters; stats is called on
// every scrape. Call it at most once.
func (m *Metrics) ObserveWebhooks(stats func() WebhookStats) {
	m.counterFunc("webhooks_queued_total", "Webhook payloads queued for delivery.",
		func() uint64 { return stats().Queued })
	m.counterFunc("webhooks_sent_total", "Webhook payloads delivered with a 2xx answer.",
		func() uint64 { return stats().Sent })
	m.counterFunc("webhooks_failed_attempts_total", "Webhook delivery attempts that failed.",
		func() uint64 { return stats().FailedAttempts })
	m.counterFunc("webhooks_retries_total", "Webhook delivery retries scheduled.",
		func() uint64 { return stats().Retries })
	m.counterFunc("webhooks_dropped_total", "Webhook payloads dropped because a queue was full or the server was stopping.",
		func() uint64 { return stats().Dropped })
	m.counterFunc("webhooks_gave_up_total", "Webhook payloads abandoned after a permanent failure or too many retries.",
		func() uint64 { return stats().GaveUp })
	m.gaugeFunc("webhooks_queue_length", "Webhook payloads waiting for a worker.",
		func() int { return stats().QueueLength })
	m.gaugeFunc("webhooks_retry_pending", "Webhook payloads waiting for their next retry.",
		func() int { return stats().RetryPending })
}

// ObserveLimiter exports the rate limiter's counters; stats is called on
// every scrape. Call it at most once.
func (m *Metrics) ObserveLimiter(stats func() LimiterStats) {
	m.counterFunc("rate_limiter_rejections_total", "Rate limiter consumes refused.",
		func() uint64 { return stats().Rejected })
	m.counterFunc("rate_limiter_evictions_total", "Rate limiter keys evicted at the key cap.",
		func() uint64 { return stats().Evictions })
	m.gaugeFunc("rate_limiter_keys", "Rate limiter keys tracked.",
		func() int { return stats().Keys })
}

func (m *Metrics) counterFunc(name, help string, f func() uint64) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: m.prefix + name, Help: help, ConstLabels: prometheus.Labels{"port": m.port},
	}, func() float64 { return float64(f()) }))
}

func (m *Metrics) gaugeFunc(name, help string, f func() int) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: m.prefix + name, Help: help, ConstLabels: prometheus.Labels{"port": m.port},
	}, func() float64 { return float64(f()) }))
}
