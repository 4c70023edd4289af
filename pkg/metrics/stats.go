package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/soketi-go/soketi/pkg/limiter"
	"github.com/soketi-go/soketi/pkg/webhook"
)

// ObserveWebhooks exports the webhook sender's counters; stats is called on
// every scrape. Call it at most once.
func (m *Metrics) ObserveWebhooks(stats func() webhook.Stats) {
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
func (m *Metrics) ObserveLimiter(stats func() limiter.Stats) {
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

// ClusterStats are the membership, Raft and inter-node stream figures of a
// cluster node, read at scrape time.
type ClusterStats struct {
	Members map[string]int // by state: alive, suspect, dead, left

	BeaconsSent, BeaconsReceived, BeaconsDropped uint64

	RaftLeader             bool
	RaftTerm               uint64
	RaftCommitIndex        uint64
	RaftAppliedIndex       uint64
	RaftLastContactSeconds float64 // -1 when never in contact
	RaftApplies            uint64
	RaftErrors             uint64
	RaftForwards           uint64

	StreamsSent, StreamsDelivered, StreamsRetransmitted uint64
	StreamsDropped, StreamsLost, StreamsDuplicates      uint64
	StreamsBackpressure, StreamsReconnects              uint64
	StreamsQueuedBytes                                  int
}

// clusterStatsTTL lets one scrape read the figures once, not once per metric.
const clusterStatsTTL = 100 * time.Millisecond

// ObserveCluster exports a cluster node's figures; stats is called at most
// once per scrape. Call it at most once.
func (m *Metrics) ObserveCluster(stats func() ClusterStats) {
	var (
		mu   sync.Mutex
		last ClusterStats
		at   time.Time
	)
	get := func() ClusterStats {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(at) > clusterStatsTTL {
			last, at = stats(), time.Now()
		}
		return last
	}
	for _, state := range []string{"alive", "suspect", "dead", "left"} {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: m.prefix + "cluster_members", Help: "Cluster members this node sees, by state.",
			ConstLabels: prometheus.Labels{"port": m.port, "state": state},
		}, func() float64 { return float64(get().Members[state]) }))
	}
	u := func(f func(ClusterStats) uint64) func() uint64 { return func() uint64 { return f(get()) } }
	m.counterFunc("cluster_beacons_sent_total", "Discovery beacons sent.", u(func(s ClusterStats) uint64 { return s.BeaconsSent }))
	m.counterFunc("cluster_beacons_received_total", "Discovery beacons of this cluster received.", u(func(s ClusterStats) uint64 { return s.BeaconsReceived }))
	m.counterFunc("cluster_beacons_dropped_total", "Discovery beacons dropped (malformed, oversized, other version or cluster).", u(func(s ClusterStats) uint64 { return s.BeaconsDropped }))
	m.gaugeFunc("raft_leader", "1 when this node is the Raft leader (the cluster's master).", func() int {
		if get().RaftLeader {
			return 1
		}
		return 0
	})
	m.gaugeFunc("raft_term", "Current Raft term.", func() int { return int(get().RaftTerm) })
	m.gaugeFunc("raft_commit_index", "Raft commit index.", func() int { return int(get().RaftCommitIndex) })
	m.gaugeFunc("raft_applied_index", "Raft index applied to this node's replica.", func() int { return int(get().RaftAppliedIndex) })
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: m.prefix + "raft_last_contact_seconds", Help: "Seconds since the last contact with the leader (0 on the leader, -1 if never).",
		ConstLabels: prometheus.Labels{"port": m.port},
	}, func() float64 { return get().RaftLastContactSeconds }))
	m.counterFunc("raft_applies_total", "Replicated writes committed through this node.", u(func(s ClusterStats) uint64 { return s.RaftApplies }))
	m.counterFunc("raft_apply_errors_total", "Replicated writes that failed (no leader, timeout).", u(func(s ClusterStats) uint64 { return s.RaftErrors }))
	m.counterFunc("raft_forwards_total", "Writes forwarded to the leader.", u(func(s ClusterStats) uint64 { return s.RaftForwards }))
	m.counterFunc("streams_sent_total", "Messages sent to other nodes.", u(func(s ClusterStats) uint64 { return s.StreamsSent }))
	m.counterFunc("streams_delivered_total", "Messages received from other nodes and delivered.", u(func(s ClusterStats) uint64 { return s.StreamsDelivered }))
	m.counterFunc("streams_retransmitted_total", "Messages sent again after a reconnect.", u(func(s ClusterStats) uint64 { return s.StreamsRetransmitted }))
	m.counterFunc("streams_dropped_total", "Messages dropped at a queue bound or for a restarted peer.", u(func(s ClusterStats) uint64 { return s.StreamsDropped }))
	m.counterFunc("streams_lost_total", "Gaps in the sequence of messages received from other nodes.", u(func(s ClusterStats) uint64 { return s.StreamsLost }))
	m.counterFunc("streams_duplicates_total", "Duplicate messages from other nodes, dropped.", u(func(s ClusterStats) uint64 { return s.StreamsDuplicates }))
	m.counterFunc("streams_backpressure_total", "Sends refused because a peer's queue stayed full.", u(func(s ClusterStats) uint64 { return s.StreamsBackpressure }))
	m.counterFunc("streams_reconnects_total", "Reconnections to other nodes.", u(func(s ClusterStats) uint64 { return s.StreamsReconnects }))
	m.gaugeFunc("streams_queued_bytes", "Bytes queued for other nodes.", func() int { return get().StreamsQueuedBytes })
}
