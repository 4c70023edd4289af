package stream

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testutil"
)

// benchTransports are the cluster port without CLUSTER_KEY (plain TCP) and
// with it (mutual TLS 1.3, ed25519 certificates).
var benchTransports = []struct {
	name string
	tr   func(b *testing.B, id string) func(*Config)
}{
	{"tcp", func(*testing.B, string) func(*Config) { return nil }},
	{"tls", func(b *testing.B, id string) func(*Config) { return withTLS(b, id) }},
}

// benchPair connects a sender "a" to a receiver "b" whose deliver is f.
func benchPair(b *testing.B, tr func(*testing.B, string) func(*Config), f func(string, Message)) *Streams {
	b.Helper()
	cfg := Config{NodeID: "b", Listener: listen(b, "127.0.0.1:0"), Logger: testLogger(b)}
	if m := tr(b, "b"); m != nil {
		m(&cfg)
	}
	recv, err := New(cfg, f)
	if err != nil {
		b.Fatal(err)
	}
	if err := recv.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = recv.Close() })
	send := newNode(b, "a", tr(b, "a"))
	send.SetPeers(map[string]Peer{"b": {Addr: cfg.Listener.Addr().String()}})
	testutil.WaitFor(b, 10*time.Second, "connection", func() bool { return send.peerStats("b").Connected })
	return send.Streams
}

// BenchmarkStreams_Throughput measures messages/s and payload MB/s from
// one node to another over loopback, from Send to deliver, over plain TCP
// and over mutual TLS. cpu-µs/msg is the CPU time of both ends per message,
// which other load on the machine disturbs far less than the rates.
func BenchmarkStreams_Throughput(b *testing.B) {
	for _, tr := range benchTransports {
		for _, size := range []int{256, 4 << 10} {
			b.Run(fmt.Sprintf("%s/%dB", tr.name, size), func(b *testing.B) {
				var got atomic.Int64
				done := make(chan struct{})
				n := int64(b.N)
				send := benchPair(b, tr.tr, func(string, Message) {
					if got.Add(1) == n {
						close(done)
					}
				})
				m := Message{Kind: KindPublish, App: "app-id", Channel: "presence-room", Payload: make([]byte, size)}
				ctx := context.Background()
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				start, cpu := time.Now(), processCPU()
				for range b.N {
					for send.Send(ctx, "b", m) != nil {
					}
				}
				<-done
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
				if cpu > 0 {
					b.ReportMetric(float64((processCPU()-cpu).Microseconds())/float64(b.N), "cpu-µs/msg")
				}
			})
		}
	}
}

// BenchmarkStreams_Latency measures one 200-byte message at a time from
// Send to deliver on the other node, reporting the median and p99.
func BenchmarkStreams_Latency(b *testing.B) {
	for _, tr := range benchTransports {
		b.Run(tr.name, func(b *testing.B) {
			delivered := make(chan struct{}, 1)
			send := benchPair(b, tr.tr, func(string, Message) { delivered <- struct{}{} })
			m := Message{Kind: KindPublish, App: "app-id", Channel: "presence-room", Payload: make([]byte, 200)}
			ctx := context.Background()
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				if err := send.Send(ctx, "b", m); err != nil {
					b.Fatal(err)
				}
				<-delivered
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
		})
	}
}
