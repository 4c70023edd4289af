// Package testcluster runs N full nodes (protocol server, gossip, Raft,
// streams) inside one test process, each on its own 127.0.0.x address, and
// gives tests WebSocket and HTTP API clients for them.
package testcluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testutil"
	"github.com/soketi-go/soketi/pkg/cluster"
	"github.com/soketi-go/soketi/pkg/clusternet"
	"github.com/soketi-go/soketi/pkg/gossip"
	"github.com/soketi-go/soketi/pkg/limiter"
	"github.com/soketi-go/soketi/pkg/pusher"
	"github.com/soketi-go/soketi/pkg/wstransport"
)

// App is the app every node serves.
var App = func() *pusher.App {
	a, _ := pusher.ParseApp(map[string]any{"enableClientMessages": true}, pusher.DefaultAppLimits)
	a.Webhooks = []pusher.Webhook{{URL: "http://127.0.0.1:1", EventTypes: []string{
		pusher.WebhookChannelOccupied, pusher.WebhookChannelVacated, pusher.WebhookMemberAdded, pusher.WebhookMemberRemoved}}}
	return a
}()

// Cluster is a set of in-process nodes.
type Cluster struct {
	t     testing.TB
	Nodes []*Node
	Hooks *Webhooks
	port  int
	ips   []string
	dir   string
	opts  Options
}

// Options adjust the nodes a cluster starts; the zero value is New's.
type Options struct {
	// App replaces App on every node. Keep App's id, key and secret: the
	// clients sign with them.
	App *pusher.App
	// ClusterLimiter gives every node the cluster rate limiter
	// (RATE_LIMITER_DRIVER=cluster); otherwise nothing is rate limited.
	ClusterLimiter bool
	// WrapLimiter, when set, wraps node i's limiter (nil without
	// ClusterLimiter), e.g. to count what it admits.
	WrapLimiter func(i int, l pusher.RateLimiter) pusher.RateLimiter
	// Open runs the cluster without a key, as ADAPTER_DRIVER=cluster alone
	// does. By default the nodes share Key: gossip is encrypted, beacons
	// are authenticated and the cluster port is mutual TLS.
	Open bool
}

// Key is the test clusters' CLUSTER_KEY.
var Key = []byte("testcluster-key-of-32-bytes-long")

// Node is one member.
type Node struct {
	Index   int
	IP      string
	URL     string // http://ip:port
	Server  *pusher.Server
	Cluster *cluster.Node
	Limiter *limiter.Cluster // with Options.ClusterLimiter
	http    *httptest.Server
	cancel  context.CancelFunc
	dead    bool
}

// Webhooks records webhook events sent by every node.
type Webhooks struct {
	mu     sync.Mutex
	Events []pusher.WebhookEvent
}

// Send records the event.
func (w *Webhooks) Send(_ *pusher.App, ev pusher.WebhookEvent) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.Events = append(w.Events, ev)
}

// Snapshot returns a copy of the events sent so far.
func (w *Webhooks) Snapshot() []pusher.WebhookEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]pusher.WebhookEvent(nil), w.Events...)
}

// Count returns how many events named name were sent for channel.
func (w *Webhooks) Count(name, channel string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, e := range w.Events {
		if e.Name == name && e.Channel == channel {
			n++
		}
	}
	return n
}

// New starts n nodes that discover each other by unicast and bootstrap one
// Raft group of n servers.
func New(t testing.TB, n int) *Cluster {
	t.Helper()
	return NewWithOptions(t, n, Options{})
}

// NewWithOptions is New with nodes adjusted by opts.
func NewWithOptions(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	c := &Cluster{t: t, Hooks: &Webhooks{}, dir: t.TempDir(), opts: opts}
	base := 10 + rand.IntN(200)
	for i := 0; i < n; i++ {
		c.ips = append(c.ips, fmt.Sprintf("127.0.%d.%d", base, 1+i))
	}
	c.port = freeUDPPort(t, c.ips)
	for i := 0; i < n; i++ {
		c.Nodes = append(c.Nodes, c.start(i))
	}
	t.Cleanup(c.Close)
	return c
}

func freeUDPPort(t testing.TB, ips []string) int {
	t.Helper()
	for try := 0; try < 50; try++ {
		port := 20000 + rand.IntN(30000)
		ok := true
		var held []net.PacketConn
		for _, ip := range ips {
			pc, err := net.ListenPacket("udp4", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			held = append(held, pc)
		}
		for _, pc := range held {
			pc.Close()
		}
		if ok {
			return port
		}
	}
	t.Fatal("no free UDP port on the test addresses")
	return 0
}

func (c *Cluster) start(i int) *Node {
	t := c.t
	ip := c.ips[i]
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("TESTCLUSTER_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", i)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("node %d: %v", i, err)
	}
	unicast := make([]string, len(c.ips))
	copy(unicast, c.ips)
	local := pusher.NewLocalAdapter()
	id := fmt.Sprintf("node%d", i)
	var key []byte
	var creds *clusternet.Credentials
	if !c.opts.Open {
		key = Key
		if creds, err = clusternet.DeriveCredentials(key, id); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cn, err := cluster.Start(ctx, cluster.NodeConfig{
		Gossip: gossip.Config{
			ClusterName: "test", NodeID: id, BindHost: ip, AdvertiseAddr: ip, SecretKey: key,
			DiscoveryPort: c.port, UnicastAddresses: unicast,
			KeepaliveInterval: 100 * time.Millisecond, CheckInterval: 200 * time.Millisecond,
			NodeTimeout: time.Second, MasterTimeout: time.Second,
			HTTPAddr: ln.Addr().String(),
		},
		DataDir:         fmt.Sprintf("%s/node%d", c.dir, i),
		ExpectedServers: len(c.ips),
		Credentials:     creds,
		MasterTimeout:   time.Second,
		ReapDelay:       2 * time.Second,
		RequestTimeout:  2 * time.Second,
		Logger:          logger,
	}, local)
	if err != nil {
		cancel()
		ln.Close()
		t.Fatalf("node %d: %v", i, err)
	}
	app := App
	if c.opts.App != nil {
		app = c.opts.App
	}
	apps, _ := pusher.NewStaticApps([]*pusher.App{app})
	var lim pusher.RateLimiter
	var cl *limiter.Cluster
	if c.opts.ClusterLimiter {
		cl = cn.RateLimiter(limiter.ClusterOptions{Logger: logger})
		lim = cl
	}
	if c.opts.WrapLimiter != nil {
		lim = c.opts.WrapLimiter(i, lim)
	}
	srv := pusher.New(pusher.Options{Apps: apps, Adapter: cn.Adapter(), Webhooks: c.Hooks, Limiter: lim, Logger: logger,
		WebSocket: wstransport.New()})
	hs := httptest.NewUnstartedServer(srv.Router())
	hs.Listener.Close()
	hs.Listener = ln
	hs.Start()
	return &Node{Index: i, IP: ip, URL: hs.URL, Server: srv, Cluster: cn, Limiter: cl, http: hs, cancel: cancel}
}

// Close stops every node.
func (c *Cluster) Close() {
	for _, n := range c.Nodes {
		c.stop(n, false)
	}
}

func (c *Cluster) stop(n *Node, leave bool) {
	if n.dead {
		return
	}
	n.dead = true
	n.http.CloseClientConnections()
	n.http.Close()
	n.Server.Close()
	if leave {
		n.Cluster.Leave()
	} else {
		n.Cluster.Close()
	}
	n.cancel()
}

// Kill stops node i as a crash would: no leave notice.
func (c *Cluster) Kill(i int) { c.stop(c.Nodes[i], false) }

// Alive returns the nodes not killed.
func (c *Cluster) Alive() []*Node {
	var out []*Node
	for _, n := range c.Nodes {
		if !n.dead {
			out = append(out, n)
		}
	}
	return out
}

// WaitReady waits until every alive node sees the others, one leader leads
// them all, and every node is registered in the replicated state.
func (c *Cluster) WaitReady(timeout time.Duration) {
	c.t.Helper()
	alive := c.Alive()
	testutil.WaitFor(c.t, timeout, "cluster ready", func() bool {
		leader := ""
		for _, n := range alive {
			st := n.Cluster.Status()
			if !st.Raft.Registered || st.Raft.LeaderID == "" {
				return false
			}
			if leader == "" {
				leader = st.Raft.LeaderID
			} else if st.Raft.LeaderID != leader {
				return false
			}
			up := 0
			for _, m := range st.Members {
				if m.State == gossip.StateAlive {
					up++
				}
			}
			if up < len(alive) {
				return false
			}
		}
		return true
	})
	// Every node must also route to every other: stream peers follow gossip
	// within a second of it seeing them.
	testutil.WaitFor(c.t, timeout, "streams between every pair of nodes", func() bool {
		for _, n := range alive {
			connected := 0
			for _, p := range n.Cluster.Figures().Streams.Peers {
				if p.Connected {
					connected++
				}
			}
			if connected < len(alive)-1 {
				return false
			}
		}
		return true
	})
}

// Leader returns the index of the Raft leader among alive nodes, or -1.
func (c *Cluster) Leader() int {
	for _, n := range c.Alive() {
		if n.Cluster.Raft().IsLeader() {
			return n.Index
		}
	}
	return -1
}

// Client is the shared raw test client with cluster-test helpers.
type Client struct{ *testutil.Client }

// Connect opens a connection to node n and waits for connection_established.
func (n *Node) Connect(t testing.TB) *Client {
	t.Helper()
	c := &Client{testutil.Dial(t, "ws"+strings.TrimPrefix(n.URL, "http")+"/app/"+App.Key+"?protocol=7")}
	c.Established()
	return c
}

// Subscribe subscribes to a public channel and waits for success.
func (c *Client) Subscribe(channel string) {
	c.T.Helper()
	c.Send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": channel}})
	c.Expect("pusher_internal:subscription_succeeded")
}

// SubscribePrivate subscribes to a private channel with a valid signature.
func (c *Client) SubscribePrivate(channel string) {
	c.T.Helper()
	c.Send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": channel,
		"auth": App.Key + ":" + pusher.Sign(App.Secret, c.SocketID+":"+channel)}})
	c.Expect("pusher_internal:subscription_succeeded")
}

// Presence is the presence part of subscription_succeeded.
type Presence struct {
	Count int                        `json:"count"`
	IDs   []json.RawMessage          `json:"ids"`
	Hash  map[string]json.RawMessage `json:"hash"`
}

// JoinPresence joins a presence channel as userID (a JSON value) and returns the members.
func (c *Client) JoinPresence(channel, userID string) Presence {
	c.T.Helper()
	cd := `{"user_id":` + userID + `,"user_info":{"n":` + userID + `}}`
	c.Send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": channel,
		"channel_data": cd, "auth": App.Key + ":" + pusher.Sign(App.Secret, c.SocketID+":"+channel+":"+cd)}})
	m := c.Expect("pusher_internal:subscription_succeeded")
	var d struct {
		Presence Presence `json:"presence"`
	}
	if err := json.Unmarshal([]byte(m["data"].(string)), &d); err != nil {
		c.T.Fatalf("presence data: %v", err)
	}
	return d.Presence
}

// Unsubscribe leaves a channel.
func (c *Client) Unsubscribe(channel string) {
	c.Send(map[string]any{"event": "pusher:unsubscribe", "data": map[string]any{"channel": channel}})
}

// MemberEvent decodes member_added / member_removed data.
func MemberEvent(m map[string]any) string {
	var d struct {
		UserID json.RawMessage `json:"user_id"`
	}
	_ = json.Unmarshal([]byte(m["data"].(string)), &d)
	return string(d.UserID)
}

// API calls the signed HTTP API of node n and decodes the JSON answer.
func (n *Node) API(t testing.TB, method, path string, params url.Values, body any) (int, map[string]any) {
	t.Helper()
	var raw []byte
	if body != nil {
		raw, _ = json.Marshal(body)
	}
	q := pusher.SignedQuery(App.Key, App.Secret, method, path, params, raw, time.Now())
	req, _ := http.NewRequest(method, n.URL+path+"?"+q.Encode(), strings.NewReader(string(raw)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s on node %d: %v", method, path, n.Index, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// Trigger publishes an event through node n.
func (n *Node) Trigger(t testing.TB, channel, event, data string) {
	t.Helper()
	if code, body := n.API(t, "POST", "/apps/"+App.ID+"/events", nil,
		map[string]any{"name": event, "channel": channel, "data": data}); code != 200 {
		t.Fatalf("trigger on node %d: %d %v", n.Index, code, body)
	}
}

// SignIn signs the connection in with userData (signed user data JSON) and
// waits for signin_success.
func (c *Client) SignIn(userData string) {
	c.T.Helper()
	c.Send(map[string]any{"event": "pusher:signin", "data": map[string]any{"user_data": userData,
		"auth": App.Key + ":" + pusher.Sign(App.Secret, c.SocketID+"::user::"+userData)}})
	c.Expect("pusher:signin_success")
}

// ExpectWatchlist waits for pusher_internal:watchlist_events and returns
// its events as name ("online", "offline") → user ids.
func (c *Client) ExpectWatchlist() map[string][]string {
	c.T.Helper()
	m := c.Expect("pusher_internal:watchlist_events")
	var d struct {
		Events []struct {
			Name    string   `json:"name"`
			UserIDs []string `json:"user_ids"`
		} `json:"events"`
	}
	s, _ := m["data"].(string)
	if err := json.Unmarshal([]byte(s), &d); err != nil {
		c.T.Fatalf("watchlist_events data %q: %v", s, err)
	}
	out := map[string][]string{}
	for _, e := range d.Events {
		out[e.Name] = append(out[e.Name], e.UserIDs...)
	}
	return out
}
