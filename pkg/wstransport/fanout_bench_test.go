package wstransport

import (
	"context"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/soketi-go/soketi/pkg/pusher"
)

// BenchmarkFanoutRealSockets publishes to subscribers on real loopback
// sockets through each transport: the frame is built once per publish and
// written to every subscriber's socket, and the readers are in this process,
// reading into fixed buffers, so allocs/op counts the server's allocations
// per publish, whatever the number of subscribers.
//
//	go test -run '^$' -bench FanoutRealSockets -benchmem ./pkg/wstransport/
func BenchmarkFanoutRealSockets(b *testing.B) {
	for _, kind := range transports {
		for _, subs := range []int{100, 1000} {
			b.Run(kind+"/subscribers="+strconv.Itoa(subs), func(b *testing.B) { benchFanout(b, kind, subs) })
		}
	}
}

func benchFanout(b *testing.B, kind string, subs int) {
	var h pusher.WebSocketHandler = New()
	if kind != "goroutine" {
		e, err := NewEventLoop(nil, kind == "eventloop")
		if err != nil {
			b.Fatal(err)
		}
		defer e.Stop()
		h = e
	}
	app, err := pusher.ParseApp(map[string]any{}, pusher.DefaultAppLimits)
	if err != nil {
		b.Fatal(err)
	}
	apps, _ := pusher.NewStaticApps([]*pusher.App{app})
	srv := pusher.New(pusher.Options{Apps: apps, WebSocket: h})
	hs := httptest.NewServer(srv.Router())
	defer func() {
		hs.CloseClientConnections()
		hs.Close()
		srv.Close()
	}()

	var received atomic.Int64
	url := "ws" + strings.TrimPrefix(hs.URL, "http") + "/app/app-key?protocol=7"
	for range subs {
		ws, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer ws.Close()
		if _, _, err := ws.ReadMessage(); err != nil { // connection_established
			b.Fatal(err)
		}
		if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"event":"pusher:subscribe","data":{"channel":"hot"}}`)); err != nil {
			b.Fatal(err)
		}
		if _, _, err := ws.ReadMessage(); err != nil { // subscription_succeeded
			b.Fatal(err)
		}
		go func() {
			buf := make([]byte, 64<<10)
			for {
				n, err := ws.NetConn().Read(buf)
				received.Add(int64(n))
				if err != nil {
					return
				}
			}
		}()
	}
	payload := []byte(`{"event":"update","channel":"hot","data":"{\"seq\":1}"}`)
	frameSize := int64(len(pusher.TextFrame(payload)))
	ctx := context.Background()
	// Readers share the cores with the server: wait for them every so
	// often, so that queues stay far from their bounds.
	caughtUp := func(publishes int) {
		want := int64(publishes) * int64(subs) * frameSize
		for deadline := time.Now().Add(10 * time.Second); received.Load() < want; {
			if time.Now().After(deadline) {
				b.Fatalf("readers got %d of %d bytes", received.Load(), want)
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	// Warm up: each outbox's queue grows to the batches it sees once.
	const warmup = 512
	for range warmup {
		srv.Adapter().Publish(ctx, "app-id", "hot", pusher.TextFrame(payload), "")
	}
	caughtUp(warmup)
	received.Store(0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		f := pusher.TextFrame(payload) // one frame build per publish
		if n, err := srv.Adapter().Publish(ctx, "app-id", "hot", f, ""); err != nil || n != subs {
			b.Fatalf("published to %d, %v", n, err)
		}
		if i%64 == 63 {
			caughtUp(i + 1)
		}
	}
	caughtUp(b.N)
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*subs), "ns/delivery")
}
