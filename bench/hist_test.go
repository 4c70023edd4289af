package main

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func TestHistIndexBounds(t *testing.T) {
	prev := -1
	for _, v := range []uint64{0, 1, 127, 128, 129, 130, 255, 256, 1000, 1 << 20, 123456789, histMax} {
		i := histIndex(v)
		lo, hi := histBounds(i)
		if v < lo || v > hi {
			t.Errorf("value %d in bucket %d [%d,%d]", v, i, lo, hi)
		}
		if v >= histSub && float64(hi-lo+1)/float64(lo) > 1.0/64+1e-9 {
			t.Errorf("bucket %d [%d,%d] wider than 1/64", i, lo, hi)
		}
		if i < prev {
			t.Errorf("index not monotonic at %d", v)
		}
		prev = i
	}
	if got := histIndex(histMax); got != histBuckets-1 {
		t.Errorf("histIndex(max) = %d, want %d", got, histBuckets-1)
	}
	if histIndex(histMax*4) != histBuckets-1 {
		t.Error("values above the maximum must clamp to the last bucket")
	}
	// Buckets tile the value range without gaps or overlaps.
	for i := 1; i < histBuckets; i++ {
		_, hiPrev := histBounds(i - 1)
		lo, _ := histBounds(i)
		if lo != hiPrev+1 {
			t.Fatalf("gap between bucket %d and %d: %d..%d", i-1, i, hiPrev, lo)
		}
	}
}

func TestHistQuantilesExactBelow128(t *testing.T) {
	var h histogram
	for v := uint64(1); v <= 100; v++ {
		h.record(v)
	}
	s := newSnapshot()
	s.add(&h)
	for _, c := range []struct {
		q    float64
		want uint64
	}{{0.5, 50}, {0.9, 90}, {0.99, 99}, {0.999, 100}, {1, 100}, {0, 1}} {
		if got := s.quantile(c.q); got != c.want {
			t.Errorf("quantile(%v) = %d, want %d", c.q, got, c.want)
		}
	}
	sum := s.summary()
	if sum.Count != 100 || sum.Min != 1 || sum.Max != 100 || sum.Mean != 50.5 {
		t.Errorf("summary = %+v", sum)
	}
}

func TestHistQuantilesRelativeError(t *testing.T) {
	sh := newShardedHist(4)
	r := rand.New(rand.NewPCG(1, 2))
	const n = 100_000
	vals := make([]uint64, n)
	for i := range vals {
		// Log-uniform over 1µs .. ~1s.
		v := uint64(1) << r.IntN(20)
		v += r.Uint64N(v)
		vals[i] = v
		sh.shard(i).record(v)
	}
	slices.Sort(vals)
	s := sh.snapshot()
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := vals[int(q*n)-1]
		got := s.quantile(q)
		if got < exact || float64(got-exact) > float64(exact)/64+1 {
			t.Errorf("quantile(%v) = %d, exact %d", q, got, exact)
		}
	}
	if s.max != vals[n-1] || s.min != vals[0] || s.n != n {
		t.Errorf("min/max/n = %d/%d/%d", s.min, s.max, s.n)
	}
}

func TestHistEmpty(t *testing.T) {
	s := newShardedHist(2).snapshot()
	if s.quantile(0.5) != 0 || s.summary() != (latencySummary{}) {
		t.Error("empty histogram should report zeros")
	}
}

func TestBitset(t *testing.T) {
	var a, b bitset
	for _, i := range []int64{0, 5, 63, 64, 1000} {
		if a.set(i) {
			t.Errorf("bit %d reported as already set", i)
		}
	}
	if !a.set(63) {
		t.Error("second set of 63 not reported")
	}
	b.set(5)
	b.set(1000)
	b.set(2000)
	if a.count() != 5 || andCount(a, b) != 2 || andCount(b, a) != 2 {
		t.Errorf("count=%d and=%d", a.count(), andCount(a, b))
	}
}

func TestMarkerRoundTrip(t *testing.T) {
	b := appendMarker(nil, 3, 12345, 1700000000123456789)
	b = append(b, "xxxx"...)
	pub, seq, ts, ok := parseMarker(b[len(markerPrefix):])
	if !ok || pub != 3 || seq != 12345 || ts != 1700000000123456789 {
		t.Fatalf("parseMarker(%s) = %d %d %d %v", b, pub, seq, ts, ok)
	}
	for _, bad := range []string{"", "1.2", "1..3.", "a.1.2.", "1.2.3"} {
		if _, _, _, ok := parseMarker([]byte(bad)); ok {
			t.Errorf("parseMarker(%q) accepted", bad)
		}
	}
}
