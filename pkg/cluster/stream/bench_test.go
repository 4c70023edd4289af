package stream

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testutil"
)

// benchPair connects a sender "a" to a receiver "b" whose deliver is f.
func benchPair(b *testing.B, key []byte, f func(string, Message)) *Streams {
	b.Helper()
	recv, err := New(Config{NodeID: "b", BindAddr: "127.0.0.1:0", SecretKey: key, Logger: testLogger(b)}, f)
	if err != nil {
		b.Fatal(err)
	}
	if err := recv.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = recv.Close() })
	send := newNode(b, "a", withKey(key))
	send.SetPeers(map[string]string{"b": recv.Addr()})
	testutil.WaitFor(b, 10*time.Second, "connection", func() bool { return send.peerStats("b").Connected })
	return send.Streams
}

var benchModes = []struct {
	name string
	key  []byte
}{{"plain", nil}, {"sealed", key1}}

// BenchmarkStreams_Throughput measures messages/s of 200-byte payloads
// from one node to another over loopback, from Send to deliver.
func BenchmarkStreams_Throughput(b *testing.B) {
	for _, mode := range benchModes {
		b.Run(mode.name, func(b *testing.B) {
			var got atomic.Int64
			done := make(chan struct{})
			n := int64(b.N)
			send := benchPair(b, mode.key, func(string, Message) {
				if got.Add(1) == n {
					close(done)
				}
			})
			m := Message{Kind: KindPublish, App: "app-id", Channel: "presence-room", Payload: make([]byte, 200)}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				for send.Send(ctx, "b", m) != nil {
				}
			}
			<-done
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// BenchmarkStreams_Latency measures one message at a time from Send to
// deliver on the other node, reporting the median and p99.
func BenchmarkStreams_Latency(b *testing.B) {
	for _, mode := range benchModes {
		b.Run(mode.name, func(b *testing.B) {
			delivered := make(chan struct{}, 1)
			send := benchPair(b, mode.key, func(string, Message) { delivered <- struct{}{} })
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
