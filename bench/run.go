package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"
)

// run executes one benchmark: connect, then either idle-measure or publish
// and drain, then report. It always returns a report for what was done, also
// when the deadline cut the run short.
func run(parent context.Context, cfg *config, log io.Writer) (*report, error) {
	ctx, cancel := context.WithTimeout(parent, cfg.deadline)
	defer cancel()

	st := newRunState(cfg)
	rep := newReport(cfg)
	self0 := getSelfUsage()
	srv := newServerProbe(cfg.serverPIDs)
	srv.sample("before_connect")

	subs, conn := connectAll(ctx, st, log)
	rep.Connect = conn
	srv.sample("after_connect")

	var (
		pres     *presence
		presErr  error
		pub      *publishers
		pubStart time.Time
		drained  time.Duration
	)
	dialer := newDialer(cfg)
	if cfg.presenceChurn > 0 && len(subs) > 0 && ctx.Err() == nil {
		pres = newPresence(st)
		presErr = pres.connect(ctx, dialer, log)
	}
	pinged := subs
	if pres != nil {
		pinged = slices.Concat(subs, pres.conns())
	}
	stopPing := startPinger(pinged, cfg.pingInterval)

	finish := func(err error) (*report, error) {
		stopPing()
		closeAll(st, subs)
		if pres != nil {
			pres.close()
			rep.Presence = pres.report()
		}
		if pub != nil {
			rep.Delivery, rep.Nodes = deliveryFigures(st, subs, pub, pubStart, drained)
			lat := totalLatency(st)
			rep.LatencyUS = &lat
			if len(cfg.targets) > 1 {
				rep.LatencySplit = splitFigures(st)
			}
			rep.Timeline = st.tl.rows()
			if pres != nil {
				for i := range rep.Nodes {
					j := pres.joinSummary(i)
					rep.Nodes[i].JoinLatencyUS = &j
				}
			}
		}
		rep.DeadlineHit = errors.Is(ctx.Err(), context.DeadlineExceeded)
		rep.Interrupted = parent.Err() != nil
		rep.ConnectionsLost = st.lost.Load()
		rep.Tool = toolFigures(self0, rep)
		rep.Server = srv.report(rep)
		srv.nodeCPU(rep.Nodes)
		rep.Errors = st.errs.list()
		if werr := writeOutputs(cfg, rep); werr != nil && err == nil {
			err = werr
		}
		return rep, err
	}

	if len(subs) == 0 {
		return finish(errors.New("no subscriber could connect and subscribe"))
	}
	if presErr != nil {
		return finish(presErr)
	}
	if cfg.idle {
		fmt.Fprintf(log, "idle: %d subscribed, waiting %v\n", len(subs), cfg.idleWait)
		sleepCtx(ctx, cfg.idleWait)
		rep.IdleSeconds = cfg.idleWait.Seconds()
		srv.sample("after_idle")
		return finish(nil)
	}
	if ctx.Err() != nil {
		return finish(nil)
	}

	subsOn := make([]int, cfg.channels)
	for _, s := range subs {
		subsOn[s.ch]++
	}
	pub = newPublishers(st, subsOn)
	srv.sample("before_publish")
	selfPub0 := getSelfUsage()
	pubStart = time.Now()
	st.tl.begin(pubStart)
	stopProgress := progress(log, time.Second, func() string { return pub.progressLine(pubStart) })
	presDone := make(chan struct{})
	if pres != nil {
		go func() {
			defer close(presDone)
			pres.run(ctx, dialer)
		}()
	} else {
		close(presDone)
	}
	pr := pub.run(ctx)
	rep.Publish = &pr
	<-presDone

	// Drain: wait for outstanding deliveries and member events, or give up
	// after -drain.
	drainStart := time.Now()
	expected := pub.expected()
	for st.unique.Load() < expected && time.Since(drainStart) < cfg.drain && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	for pres != nil && !pres.complete() && time.Since(drainStart) < cfg.drain && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	drained = time.Since(drainStart)
	stopProgress()
	srv.sample("after_publish")
	selfPub1 := getSelfUsage()
	rep.toolPublishCPU = (selfPub1.User + selfPub1.Sys) - (selfPub0.User + selfPub0.Sys)
	return finish(nil)
}

// writeOutputs writes the -timeseries CSV and the -plot SVG.
func writeOutputs(cfg *config, rep *report) error {
	if rep.Publish == nil {
		return nil
	}
	if cfg.timeseriesFile != "" {
		if err := writeFile(cfg.timeseriesFile, func(w io.Writer) error {
			return writeCSV(w, rep.Timeline, cfg.targets)
		}); err != nil {
			return fmt.Errorf("-timeseries: %w", err)
		}
	}
	if cfg.plotFile != "" {
		title := fmt.Sprintf("bench: %d subscribers on %d server(s), %s", rep.Connect.Subscribed, len(cfg.targets), rep.modeText())
		if cfg.presenceChurn > 0 {
			title += fmt.Sprintf(", presence churn %g/s", cfg.presenceChurn)
		}
		if err := writeFile(cfg.plotFile, func(w io.Writer) error {
			return writeSVG(w, rep.Timeline, title, cfg.targets)
		}); err != nil {
			return fmt.Errorf("-plot: %w", err)
		}
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

type deliveryReport struct {
	Expected         int64   `json:"expected"`
	Received         int64   `json:"received"` // distinct deliveries of accepted publishes
	Frames           int64   `json:"frames"`   // all data frames, duplicates included
	Seconds          float64 `json:"seconds"`  // publish start to last delivery
	DeliveriesPerSec float64 `json:"deliveries_per_sec"`
	Lost             int64   `json:"lost"`
	Duplicated       int64   `json:"duplicated"`
	OutOfOrder       int64   `json:"out_of_order"`
	Unacked          int64   `json:"unacked"` // delivered although the publish was not answered 200
	Foreign          int64   `json:"foreign"` // delivered on a connection not subscribed to that channel
	Invalid          int64   `json:"invalid"` // unparsable frames or unknown sequence numbers
	ServerErrors     int64   `json:"server_errors"`
	DrainSeconds     float64 `json:"drain_seconds"`
}

// serverProbe samples the server processes at named points of the run.
type serverProbe struct {
	pids    []int
	samples map[string]procSample
	err     error
}

func newServerProbe(pids []int) *serverProbe {
	return &serverProbe{pids: pids, samples: map[string]procSample{}}
}

func (p *serverProbe) sample(name string) {
	if len(p.pids) == 0 || p.err != nil {
		return
	}
	s, err := sampleProcs(p.pids)
	if err != nil {
		p.err = err
		return
	}
	p.samples[name] = s
}

type serverReport struct {
	PIDs               []int   `json:"pids"`
	RSSBeforeConnect   uint64  `json:"rss_before_connect_bytes"`
	RSSAfterConnect    uint64  `json:"rss_after_connect_bytes"`
	RSSAfterIdle       uint64  `json:"rss_after_idle_bytes,omitempty"`
	RSSAfterPublish    uint64  `json:"rss_after_publish_bytes,omitempty"`
	RSSPerConnection   float64 `json:"rss_per_connection_bytes"`
	CPUConnectMS       float64 `json:"cpu_connect_ms"`
	CPUPerConnectionUS float64 `json:"cpu_per_connection_us"`
	CPUPublishMS       float64 `json:"cpu_publish_ms,omitempty"`
	CPUPerDeliveryUS   float64 `json:"cpu_per_delivery_us,omitempty"`
	Error              string  `json:"error,omitempty"`
	ClockTicks         int     `json:"clock_ticks_assumed"`
}

func (p *serverProbe) report(rep *report) *serverReport {
	if len(p.pids) == 0 {
		return nil
	}
	r := &serverReport{PIDs: p.pids, ClockTicks: clockTicks}
	if p.err != nil {
		r.Error = p.err.Error()
	}
	b, okB := p.samples["before_connect"]
	a, okA := p.samples["after_connect"]
	n := float64(rep.Connect.Subscribed)
	if okB && okA {
		r.RSSBeforeConnect, r.RSSAfterConnect = b.RSS, a.RSS
		r.CPUConnectMS = ms(a.CPU - b.CPU)
		if n > 0 {
			r.RSSPerConnection = (float64(a.RSS) - float64(b.RSS)) / n
			r.CPUPerConnectionUS = float64((a.CPU-b.CPU)/time.Nanosecond) / 1e3 / n
		}
	}
	// In idle mode the settled figure is the one that matters.
	if i, ok := p.samples["after_idle"]; ok && okB {
		r.RSSAfterIdle = i.RSS
		if n > 0 {
			r.RSSPerConnection = (float64(i.RSS) - float64(b.RSS)) / n
		}
	}
	s0, ok0 := p.samples["before_publish"]
	s1, ok1 := p.samples["after_publish"]
	if ok0 && ok1 {
		r.RSSAfterPublish = s1.RSS
		r.CPUPublishMS = ms(s1.CPU - s0.CPU)
		if rep.Delivery != nil && rep.Delivery.Received > 0 {
			r.CPUPerDeliveryUS = float64(s1.CPU-s0.CPU) / 1e3 / float64(rep.Delivery.Received)
		}
	}
	return r
}

// nodeCPU fills in each server's publish-phase CPU when there is one PID per
// server (in -urls order).
func (p *serverProbe) nodeCPU(nodes []nodeReport) {
	s0, ok0 := p.samples["before_publish"]
	s1, ok1 := p.samples["after_publish"]
	if !ok0 || !ok1 || len(p.pids) != len(nodes) || len(nodes) < 2 {
		return
	}
	for i := range nodes {
		n := &nodes[i]
		cpu := s1.PerPID[i] - s0.PerPID[i]
		n.PID, n.CPUPublishMS = p.pids[i], ms(cpu)
		if n.Received > 0 {
			n.CPUPerDeliveryUS = float64(cpu) / 1e3 / float64(n.Received)
		}
	}
}

type toolReport struct {
	CPUUserMS        float64 `json:"cpu_user_ms"`
	CPUSysMS         float64 `json:"cpu_sys_ms"`
	CPUPublishMS     float64 `json:"cpu_publish_ms,omitempty"`
	CPUPerDeliveryUS float64 `json:"cpu_per_delivery_us,omitempty"`
	MaxRSS           uint64  `json:"max_rss_bytes"`
}

func toolFigures(before selfUsage, rep *report) toolReport {
	now := getSelfUsage()
	t := toolReport{
		CPUUserMS:    ms(now.User - before.User),
		CPUSysMS:     ms(now.Sys - before.Sys),
		CPUPublishMS: ms(rep.toolPublishCPU),
		MaxRSS:       now.MaxRSS,
	}
	if rep.Delivery != nil && rep.Delivery.Received > 0 {
		t.CPUPerDeliveryUS = float64(rep.toolPublishCPU) / 1e3 / float64(rep.Delivery.Received)
	}
	return t
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }
