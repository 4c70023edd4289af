package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"
)

// maxTimelineSeconds bounds the per-second buckets; later samples go into
// the last one.
const maxTimelineSeconds = 3600

// timeline collects per-second figures from the start of the publish phase:
// delivery latency and count (also per server) and presence joins. Seconds
// are allocated on first use, so memory follows the run's real length.
type timeline struct {
	start atomic.Int64 // unix nanos; 0 until begin
	secs  []atomic.Pointer[tlSecond]
	nodes int
}

type tlSecond struct {
	lat      shardedHist // delivery latency, µs
	perNode  []atomic.Int64
	join     histogram // presence join latency, µs
	joinErrs atomic.Int64
}

func newTimeline(nodes int, span time.Duration) *timeline {
	n := min(int(span/time.Second)+2, maxTimelineSeconds)
	return &timeline{secs: make([]atomic.Pointer[tlSecond], n), nodes: nodes}
}

func (t *timeline) begin(at time.Time) { t.start.Store(at.UnixNano()) }

// second returns the bucket for unix-nanos time now, or nil before begin.
func (t *timeline) second(now int64) *tlSecond {
	s0 := t.start.Load()
	if s0 == 0 {
		return nil
	}
	i := max(0, min(int((now-s0)/int64(time.Second)), len(t.secs)-1))
	if p := t.secs[i].Load(); p != nil {
		return p
	}
	p := &tlSecond{lat: newShardedHist(2), perNode: make([]atomic.Int64, t.nodes)}
	if t.secs[i].CompareAndSwap(nil, p) {
		return p
	}
	return t.secs[i].Load()
}

func (t *timeline) delivery(now int64, latUS uint64, node, shard int) {
	if s := t.second(now); s != nil {
		s.lat.shard(shard).record(latUS)
		s.perNode[node].Add(1)
	}
}

func (t *timeline) join(now int64, latUS uint64, failed bool) {
	s := t.second(now)
	switch {
	case s == nil:
	case failed:
		s.joinErrs.Add(1)
	default:
		s.join.record(latUS)
	}
}

// secondRow is one second of the timeline; latencies in µs.
type secondRow struct {
	Second     int     `json:"t"`
	Deliveries uint64  `json:"deliveries"`
	PerNode    []int64 `json:"per_node"`
	P50        uint64  `json:"p50_us"`
	P99        uint64  `json:"p99_us"`
	Max        uint64  `json:"max_us"`
	Joins      uint64  `json:"joins,omitempty"`
	JoinErrors int64   `json:"join_errors,omitempty"`
	JoinP50    uint64  `json:"join_p50_us,omitempty"`
	JoinP99    uint64  `json:"join_p99_us,omitempty"`
}

// rows returns one row per second up to the last second with data.
func (t *timeline) rows() []secondRow {
	last := -1
	for i := range t.secs {
		if t.secs[i].Load() != nil {
			last = i
		}
	}
	out := make([]secondRow, 0, last+1)
	for i := range last + 1 {
		r := secondRow{Second: i, PerNode: make([]int64, t.nodes)}
		if s := t.secs[i].Load(); s != nil {
			l := s.lat.snapshot()
			r.Deliveries, r.P50, r.P99, r.Max = l.n, l.quantile(0.5), l.quantile(0.99), l.max
			for n := range s.perNode {
				r.PerNode[n] = s.perNode[n].Load()
			}
			j := newSnapshot()
			j.add(&s.join)
			r.Joins, r.JoinP50, r.JoinP99 = j.n, j.quantile(0.5), j.quantile(0.99)
			r.JoinErrors = s.joinErrs.Load()
		}
		out = append(out, r)
	}
	return out
}

// writeCSV writes the rows with one deliveries column per server.
func writeCSV(w io.Writer, rows []secondRow, targets []string) error {
	bw := bufio.NewWriter(w)
	fmt.Fprint(bw, "t_s,deliveries,p50_us,p99_us,max_us,joins,join_errors,join_p50_us,join_p99_us")
	for _, t := range targets {
		fmt.Fprintf(bw, ",deliveries_%s", t)
	}
	fmt.Fprintln(bw)
	for _, r := range rows {
		fmt.Fprintf(bw, "%d,%d,%d,%d,%d,%d,%d,%d,%d", r.Second, r.Deliveries, r.P50, r.P99, r.Max,
			r.Joins, r.JoinErrors, r.JoinP50, r.JoinP99)
		for _, n := range r.PerNode {
			fmt.Fprintf(bw, ",%d", n)
		}
		fmt.Fprintln(bw)
	}
	return bw.Flush()
}

// writeFile creates path and fills it with write.
func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
