package gossip

import (
	"testing"
	"time"
)

func TestDeriveTiming(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name           string
		check, timeout time.Duration
		probe          time.Duration
		mult           int
		gossip         time.Duration
	}{
		{"soketi defaults", 500 * ms, 2000 * ms, 500 * ms, 1, 100 * ms},
		{"timeout equals check", 500 * ms, 500 * ms, 138 * ms, 1, 69 * ms},
		{"generous timeout", 500 * ms, 5000 * ms, 500 * ms, 7, 100 * ms},
		{"fast probes", 100 * ms, 2000 * ms, 100 * ms, 17, 50 * ms},
		{"slow checks", 5000 * ms, 10000 * ms, 3300 * ms, 1, 100 * ms},
		{"tiny", ms, ms, ms, 1, ms},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := DeriveTiming(tt.check, tt.timeout)
			if got.ProbeInterval.Truncate(ms) != tt.probe || got.SuspicionMult != tt.mult || got.GossipInterval.Truncate(ms) != tt.gossip {
				t.Fatalf("got probe=%s mult=%d gossip=%s, want probe=%s mult=%d gossip=%s",
					got.ProbeInterval, got.SuspicionMult, got.GossipInterval, tt.probe, tt.mult, tt.gossip)
			}
			if got.ProbeInterval > tt.check {
				t.Errorf("probe interval %s exceeds check interval %s", got.ProbeInterval, tt.check)
			}
			if got.ProbeTimeout <= 0 || got.ProbeTimeout > got.ProbeInterval {
				t.Errorf("probe timeout %s not within (0, %s]", got.ProbeTimeout, got.ProbeInterval)
			}
			if got.SuspicionMaxTimeoutMult != 1 {
				t.Errorf("suspicion max timeout mult = %d, want 1", got.SuspicionMaxTimeoutMult)
			}
			want := time.Duration(2+got.SuspicionMult)*got.ProbeInterval + got.GossipInterval
			if got.DetectionBound != want {
				t.Errorf("detection bound %s, want %s", got.DetectionBound, want)
			}
			if tt.timeout >= 3*ms && got.DetectionBound > tt.timeout {
				t.Errorf("detection bound %s exceeds node timeout %s", got.DetectionBound, tt.timeout)
			}
		})
	}
}
