package gossip

import (
	"sync"
	"sync/atomic"
	"time"
)

// Stats are monotonically increasing counters since New.
type Stats struct {
	BeaconsSent      uint64 `json:"beacons_sent"`
	BeaconSendErrors uint64 `json:"beacon_send_errors"`
	// BeaconsReceived counts valid beacons of this cluster, own ones included.
	BeaconsReceived uint64 `json:"beacons_received"`
	// Dropped beacons, by reason.
	DroppedMalformed uint64 `json:"dropped_malformed"`
	DroppedOversized uint64 `json:"dropped_oversized"`
	DroppedVersion   uint64 `json:"dropped_version"`
	DroppedCluster   uint64 `json:"dropped_cluster"`
	// DroppedAuth counts beacons without a valid MAC at a node with a key;
	// DroppedKeyed counts beacons with a MAC at a node without one.
	DroppedAuth  uint64 `json:"dropped_auth"`
	DroppedKeyed uint64 `json:"dropped_keyed"`

	JoinAttempts uint64 `json:"join_attempts"`
	JoinFailures uint64 `json:"join_failures"`
	// JoinsDropped counts joins not attempted because the queue was full.
	JoinsDropped uint64 `json:"joins_dropped"`
	// EventsDropped counts events discarded because Events() was full.
	EventsDropped uint64 `json:"events_dropped"`
}

// Dropped is the total of beacons dropped for any reason.
func (s Stats) Dropped() uint64 {
	return s.DroppedMalformed + s.DroppedOversized + s.DroppedVersion + s.DroppedCluster + s.DroppedAuth + s.DroppedKeyed
}

type stats struct {
	beaconsSent, beaconSendErrors, beaconsReceived           atomic.Uint64
	droppedMalformed, droppedOversized, droppedVersion       atomic.Uint64
	droppedCluster, joinAttempts, joinFailures, joinsDropped atomic.Uint64
	droppedAuth, droppedKeyed                                atomic.Uint64
}

// logLimiter allows one log line per key per interval.
type logLimiter struct {
	mu   sync.Mutex
	last map[string]time.Time
}

func (l *logLimiter) allow(key string, every time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if t, ok := l.last[key]; ok && now.Sub(t) < every {
		return false
	}
	if l.last == nil {
		l.last = make(map[string]time.Time)
	}
	l.last[key] = now
	return true
}
