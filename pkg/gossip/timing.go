package gossip

import "time"

// Timing is the memberlist timing derived from soketi's CLUSTER_CHECK_INTERVAL
// and CLUSTER_NODE_TIMEOUT.
//
// A node's death is noticed in three steps, each bounded for clusters of up
// to ten nodes (memberlist scales suspicion by max(1, log10(n)), which is 1
// there):
//
//  1. wait until some member next probes it: about one ProbeInterval, since
//     the n-1 survivors each probe one member per interval;
//  2. the probe fails: one ProbeInterval (direct ack within ProbeTimeout,
//     indirect probes and the TCP fallback until the interval ends);
//  3. suspicion times out: SuspicionMult * ProbeInterval, then the dead
//     message reaches the others within about one GossipInterval.
//
// So DetectionBound = (2 + SuspicionMult) * ProbeInterval + GossipInterval,
// and SuspicionMult is the largest integer >= 1 keeping it <= NodeTimeout.
// ProbeInterval is CheckInterval unless NodeTimeout leaves no room for three
// intervals plus gossip, in which case it shrinks to fit. GossipInterval is
// half the probe interval, at most 100ms.
//
// SuspicionMaxTimeoutMult is 1: memberlist would otherwise start the
// suspicion timer at that multiple and only shorten it as independent
// confirmations arrive, which small clusters cannot supply, breaking the
// bound. Suspicion still tolerates a lost probe: the suspect refutes it as
// soon as it hears the suspicion, within the suspicion timeout.
type Timing struct {
	ProbeInterval           time.Duration
	ProbeTimeout            time.Duration
	SuspicionMult           int
	SuspicionMaxTimeoutMult int
	GossipInterval          time.Duration
	GossipToTheDeadTime     time.Duration
	PushPullInterval        time.Duration
	TCPTimeout              time.Duration
	// DetectionBound is the expected worst case from death to "dead" everywhere.
	DetectionBound time.Duration
}

// DeriveTiming maps soketi's check interval and node timeout onto memberlist.
// Both must be positive with nodeTimeout >= checkInterval (Config validates).
func DeriveTiming(checkInterval, nodeTimeout time.Duration) Timing {
	gossip := clampDur(min(checkInterval, nodeTimeout/3)/2, time.Millisecond, 100*time.Millisecond)
	probe := max(min(checkInterval, (nodeTimeout-gossip)/3), time.Millisecond)
	gossip = clampDur(probe/2, time.Millisecond, gossip)

	mult := 1
	if budget := nodeTimeout - 2*probe - gossip; budget > probe {
		mult = int(budget / probe)
	}
	return Timing{
		ProbeInterval: probe,
		// LAN round trips are well under a millisecond; 40% of the interval
		// leaves the rest for indirect probes. Capped at memberlist's LAN default.
		ProbeTimeout:            clampDur(probe*2/5, time.Millisecond, 500*time.Millisecond),
		SuspicionMult:           mult,
		SuspicionMaxTimeoutMult: 1,
		GossipInterval:          gossip,
		// Keep gossiping to dead nodes long enough for a healed partition to
		// refute its death without waiting for a beacon-triggered join.
		GossipToTheDeadTime: 15 * time.Second,
		// Full state sync repairs anything gossip missed; beacons re-seed too.
		PushPullInterval: 15 * time.Second,
		// Bounds a join or push/pull to an unreachable peer.
		TCPTimeout:     clampDur(2*nodeTimeout, time.Second, 10*time.Second),
		DetectionBound: time.Duration(2+mult)*probe + gossip,
	}
}

func clampDur(d, lo, hi time.Duration) time.Duration {
	return max(lo, min(d, hi))
}
