package main

import (
	"math"
	"math/bits"
	"sync/atomic"
)

// Log-linear histogram of microsecond values, in the spirit of HdrHistogram:
// values below histSub are exact, above that every power of two is split into
// histHalf buckets, so the relative error stays under 1/64 (about 1.6%).
// It has a fixed size and lock-free atomic counters, so receive goroutines can
// record into it without allocating or taking locks.
const (
	histSubBits = 7
	histSub     = 1 << histSubBits // values below this get one bucket each
	histHalf    = histSub / 2      // buckets per power of two above histSub
	histMaxBits = 36               // values are clamped to 2^36-1 µs (about 19 h)
	histMax     = 1<<histMaxBits - 1
	histBuckets = histSub + (histMaxBits-histSubBits)*histHalf
)

func histIndex(v uint64) int {
	if v > histMax {
		v = histMax
	}
	if v < histSub {
		return int(v)
	}
	shift := bits.Len64(v) - histSubBits
	return histSub + (shift-1)*histHalf + int(v>>uint(shift)) - histHalf
}

// histBounds returns the smallest and largest value that map to bucket i.
func histBounds(i int) (lo, hi uint64) {
	if i < histSub {
		return uint64(i), uint64(i)
	}
	j := i - histSub
	shift := uint(j/histHalf + 1)
	top := uint64(j%histHalf + histHalf)
	lo = top << shift
	return lo, lo + (1 << shift) - 1
}

type histogram struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64
	max    atomic.Uint64
	min    atomic.Uint64 // stored as ^v so the zero value means "no minimum yet"
}

func (h *histogram) record(v uint64) {
	if v > histMax {
		v = histMax
	}
	h.counts[histIndex(v)].Add(1)
	h.n.Add(1)
	h.sum.Add(v)
	for {
		cur := h.max.Load()
		if v <= cur || h.max.CompareAndSwap(cur, v) {
			break
		}
	}
	for {
		cur := h.min.Load()
		if ^v <= cur || h.min.CompareAndSwap(cur, ^v) {
			break
		}
	}
}

// histSnapshot is a plain, mergeable copy of one or more histograms.
type histSnapshot struct {
	counts   []uint64
	n, sum   uint64
	min, max uint64
}

func newSnapshot() *histSnapshot {
	return &histSnapshot{counts: make([]uint64, histBuckets), min: math.MaxUint64}
}

func (s *histSnapshot) add(h *histogram) {
	n := h.n.Load()
	if n == 0 {
		return
	}
	for i := range h.counts {
		s.counts[i] += h.counts[i].Load()
	}
	s.n += n
	s.sum += h.sum.Load()
	s.max = max(s.max, h.max.Load())
	s.min = min(s.min, ^h.min.Load())
}

// quantile returns the value at quantile q (0..1): the upper bound of the
// bucket holding the rank ceil(q*n), clamped to the exact recorded min and max.
func (s *histSnapshot) quantile(q float64) uint64 {
	if s.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(s.n)))
	rank = max(rank, 1)
	var cum uint64
	for i, c := range s.counts {
		cum += c
		if cum >= rank {
			_, hi := histBounds(i)
			return min(max(hi, s.min), s.max)
		}
	}
	return s.max
}

// latencySummary is what the report shows for a histogram, in microseconds.
type latencySummary struct {
	Count uint64  `json:"count"`
	Min   uint64  `json:"min"`
	Mean  float64 `json:"mean"`
	P50   uint64  `json:"p50"`
	P90   uint64  `json:"p90"`
	P99   uint64  `json:"p99"`
	P999  uint64  `json:"p99_9"`
	Max   uint64  `json:"max"`
}

func (s *histSnapshot) summary() latencySummary {
	if s.n == 0 {
		return latencySummary{}
	}
	return latencySummary{
		Count: s.n,
		Min:   s.min,
		Mean:  math.Round(float64(s.sum)/float64(s.n)*10) / 10,
		P50:   s.quantile(0.50),
		P90:   s.quantile(0.90),
		P99:   s.quantile(0.99),
		P999:  s.quantile(0.999),
		Max:   s.max,
	}
}

// shardedHist spreads writers over several histograms to limit cache-line
// contention between receive goroutines running on different cores.
type shardedHist []histogram

func newShardedHist(n int) shardedHist { return make(shardedHist, n) }

func (sh shardedHist) shard(i int) *histogram { return &sh[i%len(sh)] }

func (sh shardedHist) snapshot() *histSnapshot {
	s := newSnapshot()
	for i := range sh {
		s.add(&sh[i])
	}
	return s
}

// bitset records which sequence numbers were seen; it grows on demand.
type bitset []uint64

// set marks i and reports whether it was already marked.
func (b *bitset) set(i int64) bool {
	w := int(i >> 6)
	if w >= len(*b) {
		n := max(w+1, 2*len(*b), 4)
		grown := make(bitset, n)
		copy(grown, *b)
		*b = grown
	}
	m := uint64(1) << uint(i&63)
	was := (*b)[w]&m != 0
	(*b)[w] |= m
	return was
}

func (b bitset) count() int {
	n := 0
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return n
}

// andCount returns the number of bits set in both a and b.
func andCount(a, b bitset) int {
	n := 0
	for i := range min(len(a), len(b)) {
		n += bits.OnesCount64(a[i] & b[i])
	}
	return n
}
