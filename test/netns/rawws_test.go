//go:build netns && linux

package netnstest

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/soketi-go/soketi/pkg/pusher"
)

// rawSockets are bare WebSocket connections, spread over the nodes, that
// join presence channels without pusher-js: they show what the servers
// sustain when the client side costs next to nothing.
type rawSockets struct {
	conns   []*websocket.Conn
	sockets []string // socket ids
}

// dialRaw opens n connections, connection k to host k%3.
func dialRaw(t *testing.T, c *raftCluster, n int) *rawSockets {
	t.Helper()
	r := &rawSockets{}
	t.Cleanup(r.close)
	dialer := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	for k := range n {
		url := fmt.Sprintf("ws://%s:6001/app/app-key?protocol=7&client=go&version=1", c.nodes[k%3].host.Addr)
		ws, _, err := dialer.Dial(url, nil)
		if err != nil {
			t.Fatalf("dial %s: %v", url, err)
		}
		r.conns = append(r.conns, ws)
		ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		var m struct{ Event, Data string }
		if err := ws.ReadJSON(&m); err != nil || m.Event != "pusher:connection_established" {
			t.Fatalf("%s: first frame %q: %v", url, m.Event, err)
		}
		var d struct {
			SocketID string `json:"socket_id"`
		}
		json.Unmarshal([]byte(m.Data), &d)
		r.sockets = append(r.sockets, d.SocketID)
	}
	return r
}

// close closes every connection; the nodes see the sockets go.
func (r *rawSockets) close() {
	for _, ws := range r.conns {
		ws.Close()
	}
}

// joinAll makes connection k join channel as users[k] with info(users[k]),
// all at once, and
// returns the time until the last subscription_succeeded and each join's
// latency in ms. Connections keep reading (and discarding) afterwards.
func (r *rawSockets) joinAll(t *testing.T, channel string, users []string, info func(user string) any) (time.Duration, []float64) {
	t.Helper()
	lat := make([]float64, len(users))
	errs := make(chan error, len(users))
	var wg sync.WaitGroup
	start := time.Now()
	for k, user := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ws := r.conns[k]
			cd, _ := json.Marshal(map[string]any{"user_id": user, "user_info": info(user)})
			auth := "app-key:" + pusher.Sign("app-secret", r.sockets[k]+":"+channel+":"+string(cd))
			t0 := time.Now()
			ws.SetReadDeadline(t0.Add(commandTimeout))
			err := ws.WriteJSON(map[string]any{"event": "pusher:subscribe",
				"data": map[string]any{"channel": channel, "auth": auth, "channel_data": string(cd)}})
			for err == nil {
				var m struct{ Event, Channel string }
				if err = ws.ReadJSON(&m); err != nil || m.Channel != channel {
					continue
				}
				if m.Event == "pusher:subscription_error" {
					err = fmt.Errorf("subscription_error")
				}
				if m.Event == "pusher_internal:subscription_succeeded" {
					break
				}
			}
			if err != nil {
				errs <- fmt.Errorf("join %s: %w", user, err)
				return
			}
			lat[k] = float64(time.Since(t0).Microseconds()) / 1000
			go func() {
				ws.SetReadDeadline(time.Time{})
				for {
					if _, _, err := ws.NextReader(); err != nil {
						return
					}
				}
			}()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return elapsed, lat
}
