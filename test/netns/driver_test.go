//go:build netns && linux

package netnstest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testutil"
)

// clients is one clients.js process holding pusher-js clients. It runs in
// the root namespace, which reaches every host over the bridge. Commands
// go as JSON lines on its stdin; replies and the frames its clients receive
// come back on stdout and are kept in order.
type clients struct {
	t      *testing.T
	stdin  io.WriteCloser
	stderr *testutil.LockedBuffer
	exited chan struct{}

	mu      sync.Mutex
	nextReq int
	pending map[int]chan reply
	events  []event
	changed chan struct{} // closed and replaced on every new event
}

// event is a frame received by a client, "state" for a connection state change
// or "error" for a connection error (clients.js).
type event struct {
	ID      string          `json:"id"`
	T       int64           `json:"t"` // ms since the epoch, in the Node process
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
}

// reply answers one command.
type reply struct {
	OK       bool                       `json:"ok"`
	Error    string                     `json:"error"`
	Status   int                        `json:"status"` // subscription_error status, HTTP status of a trigger
	MS       float64                    `json:"ms"`     // subscribe call to subscription_succeeded (or error)
	SocketID string                     `json:"socket_id"`
	Count    int                        `json:"count"` // presence members in subscription_succeeded / members
	IDs      []string                   `json:"ids"`
	Me       string                     `json:"me"`
	Members  map[string]json.RawMessage `json:"members"`
}

// commandTimeout bounds every command beyond its own timeout_ms.
const commandTimeout = 15 * time.Second

func startClients(t *testing.T) *clients {
	t.Helper()
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node (Node.js 20) is needed to run pusher-js clients")
	}
	if _, err := os.Stat(filepath.Join("..", "e2e", "node_modules", "pusher-js")); err != nil {
		t.Fatal("pusher-js is not installed: run `npm ci` in test/e2e (scripts/test.sh does)")
	}
	cmd := exec.Command(nodeBin, "clients.js")
	cmd.Env = append(os.Environ(), "CLIENTS_MAX_LIFETIME_MS=300000")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &clients{t: t, stdin: stdin, stderr: &testutil.LockedBuffer{}, exited: make(chan struct{}),
		pending: map[int]chan reply{}, changed: make(chan struct{})}
	cmd.Stderr = c.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	read := make(chan struct{})
	go func() { defer close(read); c.read(stdout) }()
	go func() { <-read; cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() {
		stdin.Close() // clients.js disconnects everyone and exits
		select {
		case <-c.exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-c.exited
		}
		if t.Failed() {
			t.Logf("--- clients.js stderr:\n%s", c.stderr.String())
		}
	})
	return c
}

func (c *clients) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var head struct {
			Req *int `json:"req"`
		}
		if json.Unmarshal(line, &head) != nil {
			continue
		}
		if head.Req != nil {
			var rep reply
			if err := json.Unmarshal(line, &rep); err != nil {
				rep = reply{Error: fmt.Sprintf("bad reply %q: %v", line, err)}
			}
			c.mu.Lock()
			ch := c.pending[*head.Req]
			delete(c.pending, *head.Req)
			c.mu.Unlock()
			if ch != nil {
				ch <- rep
			}
			continue
		}
		var ev event
		if json.Unmarshal(line, &ev) != nil {
			continue
		}
		c.mu.Lock()
		c.events = append(c.events, ev)
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
	}
}

// send issues a command; the reply arrives on the returned channel, or an
// error reply if the process is gone or commandTimeout passes.
func (c *clients) send(cmd map[string]any) <-chan reply {
	out := make(chan reply, 1)
	ch := make(chan reply, 1)
	c.mu.Lock()
	c.nextReq++
	req := c.nextReq
	c.pending[req] = ch
	c.mu.Unlock()
	cmd["req"] = req
	b, _ := json.Marshal(cmd)
	if _, err := c.stdin.Write(append(b, '\n')); err != nil {
		out <- reply{Error: "clients.js: " + err.Error()}
		return out
	}
	go func() {
		select {
		case r := <-ch:
			out <- r
		case <-c.exited:
			out <- reply{Error: "clients.js exited"}
		case <-time.After(commandTimeout):
			out <- reply{Error: fmt.Sprintf("no reply to %v within %s", cmd["op"], commandTimeout)}
		}
	}()
	return out
}

// do runs a command and fails the test unless it succeeds.
func (c *clients) do(cmd map[string]any) reply {
	c.t.Helper()
	r := <-c.send(cmd)
	if !r.OK {
		c.t.Fatalf("%v %v %v: %s", cmd["op"], cmd["id"], cmd["channel"], r.Error)
	}
	return r
}

func wsAddr(n *node) (string, int) { return n.host.Addr.String(), 6001 }

// connect opens pusher-js client id to node n.
func (c *clients) connect(id string, n *node) string {
	c.t.Helper()
	host, port := wsAddr(n)
	return c.do(map[string]any{"op": "connect", "id": id, "host": host, "port": port}).SocketID
}

// subscribe subscribes to a public or private channel.
func (c *clients) subscribe(id, channel string) {
	c.t.Helper()
	c.do(map[string]any{"op": "subscribe", "id": id, "channel": channel})
}

// joinCmd is the command that joins a presence channel as user with info.
func joinCmd(id, channel, user string, info any) map[string]any {
	return map[string]any{"op": "subscribe", "id": id, "channel": channel,
		"user": map[string]any{"user_id": user, "user_info": info}}
}

// join joins a presence channel and returns subscription_succeeded's summary.
func (c *clients) join(id, channel, user string, info any) reply {
	c.t.Helper()
	return c.do(joinCmd(id, channel, user, info))
}

func (c *clients) unsubscribe(id, channel string) {
	c.t.Helper()
	c.do(map[string]any{"op": "unsubscribe", "id": id, "channel": channel})
}

// signin signs client id in as user (its signed user data: id, watchlist).
func (c *clients) signin(id string, user map[string]any) {
	c.t.Helper()
	c.do(map[string]any{"op": "signin", "id": id, "user": user})
}

func (c *clients) disconnect(id string) {
	c.t.Helper()
	c.do(map[string]any{"op": "disconnect", "id": id})
}

func (c *clients) clientEvent(id, channel, name string, data any) {
	c.t.Helper()
	c.do(map[string]any{"op": "client_event", "id": id, "channel": channel, "event": name, "data": data})
}

// members is pusher-js's own member list of a presence channel.
func (c *clients) members(id, channel string) reply {
	c.t.Helper()
	return c.do(map[string]any{"op": "members", "id": id, "channel": channel})
}

// trigger publishes through node n's HTTP API with the pusher server SDK.
func (c *clients) trigger(n *node, channel, name string, data any) {
	c.t.Helper()
	host, port := wsAddr(n)
	c.do(map[string]any{"op": "trigger", "host": host, "port": port, "channel": channel, "event": name, "data": data})
}

// mark is the position of the next event, to look only at what follows.
func (c *clients) mark() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.events)
}

// matching returns the events from position from on that match.
func (c *clients) matching(from int, match func(event) bool) []event {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []event
	for _, ev := range c.events[min(from, len(c.events)):] {
		if match(ev) {
			out = append(out, ev)
		}
	}
	return out
}

// waitCount waits until at least n events from position from match, and
// returns them.
func (c *clients) waitCount(from int, timeout time.Duration, n int, what string, match func(event) bool) []event {
	c.t.Helper()
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		changed := c.changed
		c.mu.Unlock()
		if got := c.matching(from, match); len(got) >= n {
			return got
		}
		select {
		case <-changed:
		case <-c.exited:
			c.t.Fatalf("clients.js exited while waiting for %s", what)
		case <-deadline:
			got := c.matching(from, match)
			c.t.Fatalf("timed out after %s waiting for %d× %s; got %d: %s", timeout, n, what, len(got), describe(got))
		}
	}
}

// waitEvent waits for one matching event from position from on.
func (c *clients) waitEvent(from int, timeout time.Duration, what string, match func(event) bool) event {
	c.t.Helper()
	return c.waitCount(from, timeout, 1, what, match)[0]
}

func describe(evs []event) string {
	var b strings.Builder
	for i, ev := range evs {
		if i == 10 {
			fmt.Fprintf(&b, " … (%d more)", len(evs)-i)
			break
		}
		fmt.Fprintf(&b, " [%s %s %s %s]", ev.ID, ev.Event, ev.Channel, ev.Data)
	}
	return b.String()
}

// frame matches event name on channel received by client id ("" for any client).
func frame(id, channel, name string) func(event) bool {
	return func(ev event) bool {
		return (id == "" || ev.ID == id) && ev.Channel == channel && ev.Event == name
	}
}

// appEvent matches an app event whose data is the string data.
func appEvent(id, channel, name, data string) func(event) bool {
	return func(ev event) bool {
		if (id != "" && ev.ID != id) || ev.Channel != channel || ev.Event != name {
			return false
		}
		var s string
		return json.Unmarshal(ev.Data, &s) == nil && s == data
	}
}

// watchlistEvent matches pusher_internal:watchlist_events to client id
// with an event name ("online", "offline") listing exactly ids.
func watchlistEvent(id, name string, ids ...string) func(event) bool {
	want, _ := json.Marshal(ids)
	return func(ev event) bool {
		if ev.ID != id || ev.Event != "pusher_internal:watchlist_events" {
			return false
		}
		var d struct {
			Events []struct {
				Name    string          `json:"name"`
				UserIDs json.RawMessage `json:"user_ids"`
			} `json:"events"`
		}
		if json.Unmarshal(ev.Data, &d) != nil {
			return false
		}
		for _, e := range d.Events {
			if e.Name == name && string(e.UserIDs) == string(want) {
				return true
			}
		}
		return false
	}
}

// countEvent matches pusher_internal:subscription_count n on channel for client id.
func countEvent(id, channel string, n int) func(event) bool {
	return func(ev event) bool {
		if ev.ID != id || ev.Channel != channel || ev.Event != "pusher_internal:subscription_count" {
			return false
		}
		var d struct {
			N *int `json:"subscription_count"`
		}
		return json.Unmarshal(ev.Data, &d) == nil && d.N != nil && *d.N == n
	}
}

// memberEvent matches pusher_internal:member_added or member_removed of user.
func memberEvent(id, channel, name, user string) func(event) bool {
	return func(ev event) bool {
		if (id != "" && ev.ID != id) || ev.Channel != channel || ev.Event != name {
			return false
		}
		var d struct {
			UserID string `json:"user_id"`
		}
		return json.Unmarshal(ev.Data, &d) == nil && d.UserID == user
	}
}
