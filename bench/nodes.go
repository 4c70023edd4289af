package main

import "time"

// nodeReport is the delivery side of one server: what its subscribers
// (the connections made to it) were owed and received, and, when -server-pid
// lists one PID per server in -urls order, its CPU per delivery.
type nodeReport struct {
	Target           string          `json:"target"`
	Subscribers      int             `json:"subscribers"`
	Published        int64           `json:"published"` // publishes accepted by this server
	Expected         int64           `json:"expected"`
	Received         int64           `json:"received"`
	DeliveriesPerSec float64         `json:"deliveries_per_sec"`
	Lost             int64           `json:"lost"`
	Duplicated       int64           `json:"duplicated"`
	OutOfOrder       int64           `json:"out_of_order"`
	LatencyUS        latencySummary  `json:"latency_us"`
	PID              int             `json:"pid,omitempty"`
	CPUPublishMS     float64         `json:"cpu_publish_ms,omitempty"`
	CPUPerDeliveryUS float64         `json:"cpu_per_delivery_us,omitempty"`
	JoinLatencyUS    *latencySummary `json:"presence_join_latency_us,omitempty"`

	lastRecv int64
}

// deliveryFigures compares what every subscriber received with what was
// accepted on its channel, in total and per server. It runs after all read
// loops have exited.
func deliveryFigures(st *runState, subs []*subscriber, pub *publishers, pubStart time.Time, drained time.Duration) (*deliveryReport, []nodeReport) {
	cfg := st.cfg
	d := &deliveryReport{Expected: pub.expected(), DrainSeconds: drained.Seconds()}
	nodes := make([]nodeReport, len(cfg.targets))
	for i, t := range cfg.targets {
		nodes[i].Target = t
		for j, pt := range cfg.pubTargets {
			if pt == t {
				nodes[i].Published += pub.perTarget[j].Load()
			}
		}
		nodes[i].LatencyUS = st.latNode[i].snapshot().summary()
	}
	var last int64
	for _, s := range subs {
		n := &nodes[s.node]
		valid := int64(andCount(s.recv, pub.acceptSeq[s.ch]))
		lost := pub.acceptN[s.ch] - valid
		n.Subscribers++
		n.Expected += pub.acceptN[s.ch]
		n.Received += valid
		n.Lost += lost
		n.Duplicated += s.dups
		n.OutOfOrder += s.ooo
		n.lastRecv = max(n.lastRecv, s.lastRecv)

		d.Received += valid
		d.Unacked += int64(s.recv.count()) - valid
		d.Lost += lost
		d.Frames += s.frames
		d.Duplicated += s.dups
		d.OutOfOrder += s.ooo
		d.Foreign += s.foreign
		d.Invalid += s.invalid
		d.ServerErrors += s.errors
		last = max(last, s.lastRecv)
	}
	d.Seconds, d.DeliveriesPerSec = perSecond(d.Received, last, pubStart)
	for i := range nodes {
		_, nodes[i].DeliveriesPerSec = perSecond(nodes[i].Received, nodes[i].lastRecv, pubStart)
	}
	return d, nodes
}

// perSecond is n over the time from start to the last receive (unix nanos).
func perSecond(n, last int64, start time.Time) (secs, rate float64) {
	if last == 0 {
		return 0, 0
	}
	secs = time.Unix(0, last).Sub(start).Seconds()
	if secs > 0 {
		rate = float64(n) / secs
	}
	return secs, rate
}

// latencySplit is delivery latency by whether the publish went through the
// subscriber's own server.
type latencySplit struct {
	Local              latencySummary `json:"local"`
	Cross              latencySummary `json:"cross_node"`
	CrossMinusLocalP50 int64          `json:"cross_minus_local_p50_us"`
}

func splitFigures(st *runState) *latencySplit {
	l := &latencySplit{Local: st.latLocal.snapshot().summary(), Cross: st.latCross.snapshot().summary()}
	if l.Local.Count == 0 || l.Cross.Count == 0 {
		return nil
	}
	l.CrossMinusLocalP50 = int64(l.Cross.P50) - int64(l.Local.P50)
	return l
}

// totalLatency merges the per-server histograms.
func totalLatency(st *runState) latencySummary {
	s := newSnapshot()
	for _, sh := range st.latNode {
		for i := range sh {
			s.add(&sh[i])
		}
	}
	return s.summary()
}
