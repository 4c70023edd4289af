package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/soketi-go/soketi/pkg/pusher"
)

type publishReport struct {
	Mode           string           `json:"mode"` // "rate" or "saturate"
	TargetRate     float64          `json:"target_rate,omitempty"`
	Publishers     int              `json:"publishers"`
	Seconds        float64          `json:"seconds"`
	Sent           int64            `json:"sent"`
	Accepted       int64            `json:"accepted"`
	Rejected       int64            `json:"rejected"` // non-200 responses
	Rejected429    int64            `json:"rejected_429"`
	Errors         int64            `json:"errors"` // no response (network error, timeout)
	Statuses       map[string]int64 `json:"statuses,omitempty"`
	SentPerSec     float64          `json:"sent_per_sec"`
	AcceptedPerSec float64          `json:"accepted_per_sec"`
	HTTPLatencyUS  latencySummary   `json:"http_latency_us"`
	PerServer      map[string]int64 `json:"accepted_per_server"`
	StoppedBy      string           `json:"stopped_by"`
}

// publishers drives the HTTP publish phase.
type publishers struct {
	st     *runState
	subsOn []int // subscribed connections per channel
	client *http.Client
	path   string
	prefix [][]byte // body up to the opening quote of "data", per channel

	stop     context.Context // ends the phase (duration, count, budget)
	stopWith func(reason string)
	reason   atomic.Pointer[string]

	counter  atomic.Int64 // publish attempts handed out
	budget   atomic.Int64 // expected deliveries reserved
	sent     atomic.Int64
	accepted atomic.Int64
	rejected atomic.Int64
	r429     atomic.Int64
	failed   atomic.Int64
	httpLat  histogram

	perTarget []atomic.Int64 // accepted publishes per publish server

	mu        sync.Mutex
	statuses  map[string]int64
	acceptSeq []bitset // per channel: sequence numbers answered with 200
	acceptN   []int64
}

func newPublishers(st *runState, subsOn []int) *publishers {
	cfg := st.cfg
	p := &publishers{
		st:     st,
		subsOn: subsOn,
		client: &http.Client{
			Transport: &http.Transport{
				Proxy:               nil,
				MaxIdleConnsPerHost: cfg.publishers,
				DisableCompression:  true,
			},
			Timeout: 10 * time.Second,
		},
		path:      "/apps/" + cfg.appID + "/events",
		statuses:  map[string]int64{},
		acceptSeq: make([]bitset, cfg.channels),
		acceptN:   make([]int64, cfg.channels),
		perTarget: make([]atomic.Int64, len(cfg.pubTargets)),
	}
	ev, _ := json.Marshal(cfg.event)
	for c := range cfg.channels {
		ch, _ := json.Marshal(st.chanNames[c])
		p.prefix = append(p.prefix, []byte(`{"name":`+string(ev)+`,"channel":`+string(ch)+`,"data":"`))
	}
	return p
}

// run publishes until the duration, message count or delivery budget is
// exhausted, or ctx ends. In-flight requests are allowed to finish (bounded by
// the client timeout) so their outcome is known.
func (p *publishers) run(ctx context.Context) publishReport {
	cfg := p.st.cfg
	stop, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()
	p.stop = stop
	p.stopWith = func(reason string) {
		p.reason.CompareAndSwap(nil, &reason)
		cancel()
	}

	// One token channel per publish server: paced publishes alternate
	// between the servers.
	var tokens []chan struct{}
	if !cfg.saturate {
		for range cfg.pubTargets {
			tokens = append(tokens, make(chan struct{}))
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	for id := range cfg.publishers {
		var tok chan struct{}
		if tokens != nil {
			tok = tokens[id%len(tokens)]
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.worker(id, tok)
		}()
	}
	if tokens != nil {
		pace(stop, cfg.rate, tokens)
	}
	wg.Wait()
	elapsed := time.Since(start)

	r := publishReport{
		Mode:        "saturate",
		Publishers:  cfg.publishers,
		Seconds:     elapsed.Seconds(),
		Sent:        p.sent.Load(),
		Accepted:    p.accepted.Load(),
		Rejected:    p.rejected.Load(),
		Rejected429: p.r429.Load(),
		Errors:      p.failed.Load(),
		Statuses:    p.statuses,
	}
	if !cfg.saturate {
		r.Mode, r.TargetRate = "rate", cfg.rate
	}
	if len(r.Statuses) == 0 {
		r.Statuses = nil
	}
	r.SentPerSec = float64(r.Sent) / elapsed.Seconds()
	r.AcceptedPerSec = float64(r.Accepted) / elapsed.Seconds()
	r.HTTPLatencyUS = snapshotOf(&p.httpLat).summary()
	r.PerServer = map[string]int64{}
	for i, t := range cfg.pubTargets {
		r.PerServer[t] = p.perTarget[i].Load()
	}
	switch {
	case p.reason.Load() != nil:
		r.StoppedBy = *p.reason.Load()
	case ctx.Err() != nil:
		r.StoppedBy = "deadline or interrupt"
	default:
		r.StoppedBy = "duration"
	}
	return r
}

// pace hands out tokens so that about rate*elapsed operations have started
// at any moment, round-robin over the channels. If workers fall behind, the
// backlog is handed out as soon as they are free, so the achieved rate shows
// in the report.
func pace(stop context.Context, rate float64, tokens []chan struct{}) {
	start := time.Now()
	var given int64
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		due := int64(time.Since(start).Seconds()*rate) + 1
		for given < due {
			select {
			case tokens[given%int64(len(tokens))] <- struct{}{}:
				given++
			case <-stop.Done():
				return
			}
		}
		next := start.Add(time.Duration(float64(given) / rate * float64(time.Second)))
		timer.Reset(time.Until(next))
		select {
		case <-timer.C:
		case <-stop.Done():
			return
		}
	}
}

func (p *publishers) worker(id int, tokens <-chan struct{}) {
	cfg := p.st.cfg
	node := id % len(cfg.pubTargets)
	base := "http://" + cfg.pubTargets[node] + p.path + "?"
	var body []byte
	for {
		if tokens != nil {
			select {
			case <-tokens:
			case <-p.stop.Done():
				return
			}
		} else if p.stop.Err() != nil {
			return
		}
		n := p.counter.Add(1) - 1
		if cfg.messages > 0 && n >= int64(cfg.messages) {
			p.stopWith("messages")
			return
		}
		c := int(n % int64(cfg.channels))
		if p.budget.Add(int64(p.subsOn[c])) > cfg.maxDeliveries {
			p.stopWith("max-deliveries")
			return
		}
		seq := p.st.issued[c].Add(1) - 1
		t0 := time.Now()
		body = append(body[:0], p.prefix[c]...)
		body = appendMarker(body, id, seq, t0.UnixNano())
		for range cfg.payload - (len(body) - len(p.prefix[c])) {
			body = append(body, 'x')
		}
		body = append(body, `"}`...)

		status, err := p.post(base, body, t0.Unix())
		p.sent.Add(1)
		p.httpLat.record(uint64(time.Since(t0) / time.Microsecond))
		switch {
		case err != nil:
			p.failed.Add(1)
			p.st.errs.add("publish: " + err.Error())
		case status == http.StatusOK:
			p.accepted.Add(1)
			p.perTarget[node].Add(1)
			p.mu.Lock()
			p.acceptSeq[c].set(seq)
			p.acceptN[c]++
			p.mu.Unlock()
		default:
			p.rejected.Add(1)
			p.mu.Lock()
			p.statuses[strconv.Itoa(status)]++
			p.mu.Unlock()
			if status == http.StatusTooManyRequests {
				p.r429.Add(1)
				if cfg.saturate {
					// Back off briefly so a rate-limited saturation run does
					// not turn into a tight loop of rejected requests.
					time.Sleep(10 * time.Millisecond)
				}
			}
		}
	}
}

func (p *publishers) post(base string, body []byte, ts int64) (int, error) {
	u := base + pusher.SignedQuery(p.st.cfg.key, p.st.cfg.secret, http.MethodPost, p.path, nil, body, time.Unix(ts, 0)).Encode()
	req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, err
	}
	// Drain so the keep-alive connection is reused.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}

// expected returns accepted publishes × subscribers of their channel.
func (p *publishers) expected() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var n int64
	for c, a := range p.acceptN {
		n += a * int64(p.subsOn[c])
	}
	return n
}

func (p *publishers) progressLine(start time.Time) string {
	return fmt.Sprintf("publish t=%.1fs sent=%d accepted=%d rejected=%d errors=%d received=%d/%d",
		time.Since(start).Seconds(), p.sent.Load(), p.accepted.Load(), p.rejected.Load(), p.failed.Load(),
		p.st.unique.Load(), p.expected())
}
