package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

type reportConfig struct {
	Targets     []string `json:"targets"`
	AppID       string   `json:"app_id"`
	Subscribers int      `json:"subscribers"`
	Channels    int      `json:"channels"`
	Mode        string   `json:"mode"` // "rate", "saturate" or "idle"
	Rate        float64  `json:"rate,omitempty"`
	Publishers  int      `json:"publishers"`
	Duration    string   `json:"duration"`
	Messages    int      `json:"messages,omitempty"`
	Payload     int      `json:"payload"`
}

type report struct {
	Config          reportConfig    `json:"config"`
	Connect         connectReport   `json:"connect"`
	IdleSeconds     float64         `json:"idle_seconds,omitempty"`
	Publish         *publishReport  `json:"publish,omitempty"`
	Delivery        *deliveryReport `json:"delivery,omitempty"`
	LatencyUS       *latencySummary `json:"latency_us,omitempty"`
	ConnectionsLost int64           `json:"connections_lost"`
	Server          *serverReport   `json:"server,omitempty"`
	Tool            toolReport      `json:"tool"`
	DeadlineHit     bool            `json:"deadline_hit"`
	Interrupted     bool            `json:"interrupted"`
	Errors          []string        `json:"errors,omitempty"`

	toolPublishCPU time.Duration
}

func newReport(cfg *config) *report {
	r := &report{Config: reportConfig{
		Targets:     cfg.targets,
		AppID:       cfg.appID,
		Subscribers: cfg.subscribers,
		Channels:    cfg.channels,
		Publishers:  cfg.publishers,
		Duration:    cfg.duration.String(),
		Messages:    cfg.messages,
		Payload:     cfg.payload,
	}}
	switch {
	case cfg.idle:
		r.Config.Mode = "idle"
	case cfg.saturate:
		r.Config.Mode = "saturate"
	default:
		r.Config.Mode, r.Config.Rate = "rate", cfg.rate
	}
	return r
}

func (r *report) writeText(w io.Writer) {
	c := r.Config
	mode := c.Mode
	if mode == "rate" {
		mode = fmt.Sprintf("rate %g/s", c.Rate)
	}
	fmt.Fprintf(w, "bench %s  subscribers=%d channels=%d publishers=%d mode=%s\n",
		strings.Join(c.Targets, ","), c.Subscribers, c.Channels, c.Publishers, mode)

	k := r.Connect
	fmt.Fprintf(w, "connect    %d/%d subscribed (%d connected, %d failed) in %.2fs: %.0f conn/s, %.0f sub/s\n",
		k.Subscribed, k.Attempted, k.Connected, k.Failed, k.Seconds, k.ConnectionsPerSec, k.SubscribesPerSec)
	fmt.Fprintf(w, "           connect %s   subscribe %s\n", latLine(k.ConnectLatencyUS), latLine(k.SubscribeLatencyUS))

	if p := r.Publish; p != nil {
		fmt.Fprintf(w, "publish    %d sent in %.2fs (%.1f/s): %d accepted, %d rejected (%d×429), %d errors; stopped by %s\n",
			p.Sent, p.Seconds, p.SentPerSec, p.Accepted, p.Rejected, p.Rejected429, p.Errors, p.StoppedBy)
		if len(p.Statuses) > 0 {
			codes := make([]string, 0, len(p.Statuses))
			for s, n := range p.Statuses {
				codes = append(codes, fmt.Sprintf("%s×%d", s, n))
			}
			sort.Strings(codes)
			fmt.Fprintf(w, "           statuses %s\n", strings.Join(codes, " "))
		}
		fmt.Fprintf(w, "           http %s\n", latLine(p.HTTPLatencyUS))
	}
	if d := r.Delivery; d != nil {
		fmt.Fprintf(w, "delivery   %d/%d received in %.2fs: %.0f deliveries/s (drain %.2fs)\n",
			d.Received, d.Expected, d.Seconds, d.DeliveriesPerSec, d.DrainSeconds)
		fmt.Fprintf(w, "           lost %d, duplicated %d, out-of-order %d, unacked %d, foreign %d, invalid %d, pusher:error %d\n",
			d.Lost, d.Duplicated, d.OutOfOrder, d.Unacked, d.Foreign, d.Invalid, d.ServerErrors)
	}
	if l := r.LatencyUS; l != nil {
		fmt.Fprintf(w, "latency    %s\n", latLine(*l))
	}
	if r.IdleSeconds > 0 {
		fmt.Fprintf(w, "idle       held %d connections for %.1fs\n", k.Subscribed, r.IdleSeconds)
	}
	if r.ConnectionsLost > 0 {
		fmt.Fprintf(w, "WARNING    %d connections dropped before shutdown\n", r.ConnectionsLost)
	}
	if s := r.Server; s != nil {
		fmt.Fprintf(w, "server     pids %v (CPU assumes %d ticks/s)\n", s.PIDs, s.ClockTicks)
		after := s.RSSAfterConnect
		if s.RSSAfterIdle > 0 {
			after = s.RSSAfterIdle
		}
		fmt.Fprintf(w, "           rss %s -> %s = %s per connection; connect cpu %.0fms = %.1fµs per connection\n",
			mib(s.RSSBeforeConnect), mib(after), kib(s.RSSPerConnection), s.CPUConnectMS, s.CPUPerConnectionUS)
		if r.Delivery != nil {
			fmt.Fprintf(w, "           publish cpu %.0fms = %.2fµs per delivery; rss after publish %s\n",
				s.CPUPublishMS, s.CPUPerDeliveryUS, mib(s.RSSAfterPublish))
		}
		if s.Error != "" {
			fmt.Fprintf(w, "           sampling error: %s\n", s.Error)
		}
	}
	t := r.Tool
	fmt.Fprintf(w, "tool       cpu user %.0fms sys %.0fms", t.CPUUserMS, t.CPUSysMS)
	if r.Delivery != nil {
		fmt.Fprintf(w, "; publish phase %.0fms = %.2fµs per delivery", t.CPUPublishMS, t.CPUPerDeliveryUS)
	}
	fmt.Fprintf(w, "; max rss %s\n", mib(float64(t.MaxRSS)))
	if r.DeadlineHit {
		fmt.Fprintln(w, "NOTE       the -deadline expired; figures cover the part that ran")
	}
	if r.Interrupted {
		fmt.Fprintln(w, "NOTE       interrupted; figures cover the part that ran")
	}
	for i, e := range r.Errors {
		if i == 0 {
			fmt.Fprintln(w, "errors")
		}
		fmt.Fprintf(w, "           %s\n", e)
	}
}

func latLine(l latencySummary) string {
	if l.Count == 0 {
		return "n=0"
	}
	return fmt.Sprintf("p50 %s p90 %s p99 %s p99.9 %s max %s (n=%d)",
		us(l.P50), us(l.P90), us(l.P99), us(l.P999), us(l.Max), l.Count)
}

func us(v uint64) string {
	switch {
	case v < 1000:
		return fmt.Sprintf("%dµs", v)
	case v < 1_000_000:
		return fmt.Sprintf("%.2fms", float64(v)/1e3)
	default:
		return fmt.Sprintf("%.2fs", float64(v)/1e6)
	}
}

func mib[T uint64 | float64](b T) string { return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20)) }

func kib(b float64) string { return fmt.Sprintf("%.2fKiB", b/1024) }
