package main

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"
)

type reportConfig struct {
	Targets     []string `json:"targets"`
	PubTargets  []string `json:"publish_targets"`
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
	LatencySplit    *latencySplit   `json:"latency_local_cross_us,omitempty"`
	Nodes           []nodeReport    `json:"nodes,omitempty"`
	Presence        *presenceReport `json:"presence,omitempty"`
	Timeline        []secondRow     `json:"timeline,omitempty"`
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
		PubTargets:  cfg.pubTargets,
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

func (r *report) modeText() string {
	if r.Config.Mode == "rate" {
		return fmt.Sprintf("rate %g/s", r.Config.Rate)
	}
	return r.Config.Mode
}

func (r *report) writeText(w io.Writer) {
	c := r.Config
	fmt.Fprintf(w, "bench %s  subscribers=%d channels=%d publishers=%d mode=%s\n",
		strings.Join(c.Targets, ","), c.Subscribers, c.Channels, c.Publishers, r.modeText())
	if !slices.Equal(c.PubTargets, c.Targets) {
		fmt.Fprintf(w, "           publishing to %s\n", strings.Join(c.PubTargets, ","))
	}

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
	if l := r.LatencySplit; l != nil {
		fmt.Fprintf(w, "           local      %s\n", latLine(l.Local))
		fmt.Fprintf(w, "           cross-node %s\n", latLine(l.Cross))
		fmt.Fprintf(w, "           cross-node minus local at p50: %+.2fms\n", float64(l.CrossMinusLocalP50)/1e3)
	}
	if len(r.Nodes) > 1 {
		for _, n := range r.Nodes {
			fmt.Fprintf(w, "node %s  subs %d, published %d: received %d/%d, %.0f/s, lost %d, dup %d, ooo %d; p50 %s p99 %s",
				n.Target, n.Subscribers, n.Published, n.Received, n.Expected, n.DeliveriesPerSec,
				n.Lost, n.Duplicated, n.OutOfOrder, us(n.LatencyUS.P50), us(n.LatencyUS.P99))
			if n.PID > 0 {
				fmt.Fprintf(w, "; pid %d cpu %.0fms = %.2fµs/delivery", n.PID, n.CPUPublishMS, n.CPUPerDeliveryUS)
			}
			if j := n.JoinLatencyUS; j != nil && j.Count > 0 {
				fmt.Fprintf(w, "; presence join p50 %s p99 %s", us(j.P50), us(j.P99))
			}
			fmt.Fprintln(w)
		}
	}
	if p := r.Presence; p != nil {
		fmt.Fprintf(w, "presence   %s: %d/%d joined (%.1f/s, target %g/s, hold %s, %d sockets), %d failed, %d left\n",
			p.Channel, p.Joined, p.Attempted, p.JoinsPerSec, p.TargetRate, p.Hold, p.Sockets, p.Failed, p.Left)
		fmt.Fprintf(w, "           join %s\n", latLine(p.JoinLatencyUS))
		fmt.Fprintf(w, "           member_added %d/%d seen (missing %d, extra %d), member_removed %d/%d (missing %d, extra %d) on %d observers; mismatches %d\n",
			p.MemberAdded.Seen, p.MemberAdded.Expected, p.MemberAdded.Missing, p.MemberAdded.Extra,
			p.MemberRemoved.Seen, p.MemberRemoved.Expected, p.MemberRemoved.Missing, p.MemberRemoved.Extra,
			len(p.Observers), p.Mismatches)
		if p.FailedJoinEvent > 0 || p.UnknownEvents > 0 {
			fmt.Fprintf(w, "           %d member events for failed joins, %d for unknown users\n", p.FailedJoinEvent, p.UnknownEvents)
		}
		for _, o := range p.Observers {
			if o.MemberAdded.Missing+o.MemberAdded.Extra+o.MemberRemoved.Missing+o.MemberRemoved.Extra > 0 || o.ConnLost {
				fmt.Fprintf(w, "           observer on %s: added missing %d extra %d, removed missing %d extra %d, connection lost %v\n",
					o.Target, o.MemberAdded.Missing, o.MemberAdded.Extra, o.MemberRemoved.Missing, o.MemberRemoved.Extra, o.ConnLost)
			}
		}
		fmt.Fprintf(w, "           join -> member_added %s\n", latLine(p.AddedLatencyUS))
		fmt.Fprintf(w, "           leave -> member_removed %s\n", latLine(p.RemovedLatencyUS))
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
