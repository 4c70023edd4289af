package limiter

import (
	"slices"
	"testing"
	"time"

	"github.com/soketi-go/soketi/pkg/pusher"
)

// benchNode is a follower of a remote master 200 µs away, already past the
// master's fenced first window.
func benchNode(b *testing.B) (*fakeNet, *Cluster) {
	net, nodes := newFakeNet(2, ClusterOptions{})
	net.delay = 200 * time.Microsecond
	nodes[0].SetLeading(true)
	time.Sleep(time.Until(windowEnd(WindowOf(time.Now()))))
	nodes[1].Consume("app-id", pusher.LimitBackendEvents, 1, 1<<30) // first lease
	b.ResetTimer()
	return net, nodes[1]
}

// BenchmarkClusterConsume is an allowed request on a follower; compare with
// BenchmarkLocalConsume.
func BenchmarkClusterConsume(b *testing.B) {
	net, n := benchNode(b)
	b.ReportAllocs()
	start := net.msgs.Load()
	for b.Loop() {
		n.Consume("app-id", pusher.LimitBackendEvents, 1, 1<<30)
	}
	b.ReportMetric(float64(net.msgs.Load()-start)*1000/float64(b.N), "msgs/1000req")
}

func BenchmarkClusterConsumeParallel(b *testing.B) {
	_, n := benchNode(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n.Consume("app-id", pusher.LimitBackendEvents, 1, 1<<30)
		}
	})
}

// BenchmarkConsumeLatency times each allowed call, over window boundaries,
// and reports the p50, p99 and p999 of the cluster and local drivers.
func BenchmarkConsumeLatency(b *testing.B) {
	run := func(b *testing.B, l pusher.RateLimiter) {
		lat := make([]time.Duration, 0, 1<<20)
		for b.Loop() {
			t0 := time.Now()
			l.Consume("app-id", pusher.LimitBackendEvents, 1, 1<<30)
			if len(lat) < cap(lat) {
				lat = append(lat, time.Since(t0))
			}
		}
		slices.Sort(lat)
		q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Nanoseconds()) }
		b.ReportMetric(q(0.50), "p50-ns")
		b.ReportMetric(q(0.99), "p99-ns")
		b.ReportMetric(q(0.999), "p999-ns")
	}
	b.Run("cluster", func(b *testing.B) { _, n := benchNode(b); run(b, n) })
	b.Run("local", func(b *testing.B) { run(b, NewLocal(Options{})) })
}
