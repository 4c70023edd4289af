package pusher

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

func benchServer(b *testing.B) *Server {
	sa, _ := NewStaticApps([]*App{testApp()})
	s := New(Options{Apps: sa})
	b.Cleanup(s.Close)
	return s
}

// BenchmarkPublishFanout measures one publish to 1,000 subscribers through
// the local adapter, with sockets that accept every write. Allocations are
// per publish: the frame is built once and shared.
func BenchmarkPublishFanout(b *testing.B) {
	s := benchServer(b)
	const subs = 1000
	for i := 0; i < subs; i++ {
		c := s.Open(b.Context(), "app-key", &discardTransport{})
		s.HandleFrame(c, []byte(`{"event":"pusher:subscribe","data":{"channel":"hot"}}`))
	}
	data := json.RawMessage(`"` + string(make([]byte, 0)) + `{\"seq\":1}"`)
	app := testApp()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.broadcast(b.Context(), app, "hot", EventJSON("update", "hot", data, nil), "")
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*subs), "ns/delivery")
}

// BenchmarkSubscribeHotChannel measures subscribing open connections to one
// channel that already has many subscribers.
func BenchmarkSubscribeHotChannel(b *testing.B) {
	s := benchServer(b)
	conns := make([]*Conn, b.N)
	for i := range conns {
		conns[i] = s.Open(b.Context(), "app-key", &discardTransport{})
	}
	frame := []byte(`{"event":"pusher:subscribe","data":{"channel":"hot"}}`)
	b.ReportAllocs()
	b.ResetTimer()
	for _, c := range conns {
		s.HandleFrame(c, frame)
	}
	b.StopTimer()
	if n, _ := s.Adapter().Channel(b.Context(), "app-id", "hot"); n.SubscriptionCount != b.N {
		b.Fatalf("%d subscribed, want %d", n.SubscriptionCount, b.N)
	}
}

// BenchmarkPresenceJoin measures presence subscriptions with auth checks.
func BenchmarkPresenceJoin(b *testing.B) {
	s := benchServer(b)
	app := testApp()
	frames := make([][]byte, b.N)
	conns := make([]*Conn, b.N)
	for i := range conns {
		conns[i] = s.Open(b.Context(), "app-key", &discardTransport{})
		cd := `{"user_id":"` + strconv.Itoa(i%500) + `"}`
		f, _ := json.Marshal(map[string]any{"event": "pusher:subscribe", "data": map[string]any{
			"channel": "presence-room", "channel_data": cd, "auth": channelAuth(app, conns[i].ID, "presence-room", cd)}})
		frames[i] = f
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i, c := range conns {
		s.HandleFrame(c, frames[i])
	}
}

// BenchmarkPresenceJoinLargeChannel measures one presence join and leave
// in a channel of 99 members (the default limit is 100) with 2 KB of
// user_info each: the join's subscription_succeeded lists all of them,
// and the 99 others each get a member_added and a member_removed.
func BenchmarkPresenceJoinLargeChannel(b *testing.B) {
	s := benchServer(b)
	app := testApp()
	info := `,"user_info":{"bio":"` + strings.Repeat("x", 2000) + `"}`
	join := func(c *Conn, user string) {
		cd := `{"user_id":"` + user + `"` + info + `}`
		f, _ := json.Marshal(map[string]any{"event": "pusher:subscribe", "data": map[string]any{
			"channel": "presence-room", "channel_data": cd, "auth": channelAuth(app, c.ID, "presence-room", cd)}})
		s.HandleFrame(c, f)
	}
	for i := range 99 {
		join(s.Open(b.Context(), "app-key", &discardTransport{}), strconv.Itoa(i))
	}
	leave := []byte(`{"event":"pusher:unsubscribe","data":{"channel":"presence-room"}}`)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c := s.Open(b.Context(), "app-key", &discardTransport{})
		join(c, "newcomer")
		if ok, _ := c.isSubscribed("presence-room"); !ok {
			b.Fatal("the newcomer was not admitted")
		}
		s.HandleFrame(c, leave)
		s.Closed(c)
	}
}
