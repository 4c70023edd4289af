// Package metrics exports the server's counters in Prometheus format, with
// soketi's metric names, from a registry of its own.
package metrics

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/model"

	"github.com/soketi-go/soketi/pkg/pusher"
)

const (
	// DefaultPrefix is soketi's metric name prefix.
	DefaultPrefix = "soketi_"
	// DefaultMaxApps bounds the app_id label values.
	DefaultMaxApps = 10_000
	// OtherApp is the app_id label of apps beyond MaxApps.
	OtherApp = "_other"
	// maxReasons bounds the reason label values of rejected_total.
	maxReasons  = 256
	otherReason = "other"
)

// Config configures Metrics. Zero values get defaults.
type Config struct {
	// Prefix starts every metric name (DefaultPrefix).
	Prefix string
	// Port is the main server port, the value of every metric's port label.
	Port int
	// MaxApps caps the distinct app_id values; the rest share OtherApp.
	MaxApps int
}

// Metrics implements pusher.Metrics over a Prometheus registry. The calls
// made per frame look up a cached set of counters and add to them: no
// allocation and no label hashing.
type Metrics struct {
	reg     *prometheus.Registry
	prefix  string
	port    string
	maxApps int

	connected     *prometheus.GaugeVec
	newConns      *prometheus.CounterVec
	disconns      *prometheus.CounterVec
	sockRxBytes   *prometheus.CounterVec
	sockTxBytes   *prometheus.CounterVec
	wsRx          *prometheus.CounterVec
	wsTx          *prometheus.CounterVec
	httpRxBytes   *prometheus.CounterVec
	httpTxBytes   *prometheus.CounterVec
	httpCalls     *prometheus.CounterVec
	rejectedTotal *prometheus.CounterVec

	// apps and reasons are copy-on-write maps: readers do one atomic load,
	// writers (a new app or reason, rare) copy under mu.
	mu      sync.Mutex
	apps    atomic.Pointer[map[string]*appMetrics]
	reasons atomic.Pointer[map[string]prometheus.Counter]
}

type appMetrics struct {
	connected   prometheus.Gauge
	newConns    prometheus.Counter
	disconns    prometheus.Counter
	sockRxBytes prometheus.Counter
	sockTxBytes prometheus.Counter
	wsRx        prometheus.Counter
	wsTx        prometheus.Counter
	httpRxBytes prometheus.Counter
	httpTxBytes prometheus.Counter
	httpCalls   prometheus.Counter
}

var _ pusher.Metrics = (*Metrics)(nil)

// New builds the registry with soketi's metrics and the Go runtime and
// process collectors, all under the same prefix and port label.
func New(cfg Config) (*Metrics, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.MaxApps <= 0 {
		cfg.MaxApps = DefaultMaxApps
	}
	if !model.LegacyValidation.IsValidMetricName(cfg.Prefix + "connected") {
		return nil, fmt.Errorf("metrics: prefix %q does not make valid metric names", cfg.Prefix)
	}
	m := &Metrics{
		reg:     prometheus.NewRegistry(),
		prefix:  cfg.Prefix,
		port:    strconv.Itoa(cfg.Port),
		maxApps: cfg.MaxApps,
	}
	labels := []string{"app_id", "port"}
	counter := func(name, help string) *prometheus.CounterVec {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: m.prefix + name, Help: help}, labels)
		m.reg.MustRegister(v)
		return v
	}
	m.connected = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: m.prefix + "connected",
		Help: "The number of currently connected sockets.",
	}, labels)
	m.reg.MustRegister(m.connected)
	m.newConns = counter("new_connections_total", "The total amount of soketi connection requests.")
	m.disconns = counter("new_disconnections_total", "The total amount of soketi disconnections.")
	m.sockRxBytes = counter("socket_received_bytes", "The total amount of bytes that soketi received.")
	m.sockTxBytes = counter("socket_transmitted_bytes", "The total amount of bytes that soketi transmitted.")
	m.wsRx = counter("ws_messages_received_total", "The total amount of WS messages received from connections by the server.")
	m.wsTx = counter("ws_messages_sent_total", "The total amount of WS messages sent to the connections from the server.")
	m.httpRxBytes = counter("http_received_bytes", "The total amount of bytes that soketi's REST API received.")
	m.httpTxBytes = counter("http_transmitted_bytes", "The total amount of bytes that soketi's REST API sent back.")
	m.httpCalls = counter("http_calls_received_total", "The total amount of received REST API calls.")
	m.rejectedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: m.prefix + "rejected_total",
		Help: "Refused connections, frames and requests, by reason.",
	}, []string{"reason", "port"})
	m.reg.MustRegister(m.rejectedTotal)

	runtime := prometheus.WrapRegistererWith(prometheus.Labels{"port": m.port},
		prometheus.WrapRegistererWithPrefix(m.prefix, m.reg))
	runtime.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)

	m.apps.Store(&map[string]*appMetrics{})
	m.reasons.Store(&map[string]prometheus.Counter{})
	return m, nil
}

// Registry returns the registry the metrics live in.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

func (m *Metrics) ConnectionOpened(appID string) {
	a := m.app(appID)
	a.connected.Inc()
	a.newConns.Inc()
}

func (m *Metrics) ConnectionClosed(appID string) {
	a := m.app(appID)
	a.connected.Dec()
	a.disconns.Inc()
}

func (m *Metrics) FrameReceived(appID string, bytes int) {
	a := m.app(appID)
	a.wsRx.Inc()
	a.sockRxBytes.Add(float64(bytes))
}

func (m *Metrics) FramesSent(appID string, n, bytes int) {
	a := m.app(appID)
	a.wsTx.Add(float64(n))
	a.sockTxBytes.Add(float64(n) * float64(bytes))
}

func (m *Metrics) HTTPCall(appID string, received, sent int) {
	a := m.app(appID)
	a.httpCalls.Inc()
	a.httpRxBytes.Add(float64(received))
	a.httpTxBytes.Add(float64(sent))
}

func (m *Metrics) Rejected(reason string) {
	if c, ok := (*m.reasons.Load())[reason]; ok {
		c.Inc()
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.reasons.Load()
	c, ok := old[reason]
	if !ok {
		label := reason
		if len(old) >= maxReasons {
			label = otherReason
		}
		if c, ok = old[label]; !ok {
			c = m.rejectedTotal.WithLabelValues(label, m.port)
			next := make(map[string]prometheus.Counter, len(old)+1)
			for k, v := range old {
				next[k] = v
			}
			next[label] = c
			m.reasons.Store(&next)
		}
	}
	c.Inc()
}

// app returns the cached counters of appID, creating them on first use.
func (m *Metrics) app(appID string) *appMetrics {
	if a, ok := (*m.apps.Load())[appID]; ok {
		return a
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.apps.Load()
	if a, ok := old[appID]; ok {
		return a
	}
	label := appID
	if len(old) >= m.maxApps {
		if a, ok := old[OtherApp]; ok {
			return a
		}
		label = OtherApp
	}
	a := &appMetrics{
		connected:   m.connected.WithLabelValues(label, m.port),
		newConns:    m.newConns.WithLabelValues(label, m.port),
		disconns:    m.disconns.WithLabelValues(label, m.port),
		sockRxBytes: m.sockRxBytes.WithLabelValues(label, m.port),
		sockTxBytes: m.sockTxBytes.WithLabelValues(label, m.port),
		wsRx:        m.wsRx.WithLabelValues(label, m.port),
		wsTx:        m.wsTx.WithLabelValues(label, m.port),
		httpRxBytes: m.httpRxBytes.WithLabelValues(label, m.port),
		httpTxBytes: m.httpTxBytes.WithLabelValues(label, m.port),
		httpCalls:   m.httpCalls.WithLabelValues(label, m.port),
	}
	next := make(map[string]*appMetrics, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[label] = a
	m.apps.Store(&next)
	return a
}
