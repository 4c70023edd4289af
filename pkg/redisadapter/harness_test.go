package redisadapter_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/soketi-go/soketi/internal/testcluster"
	"github.com/soketi-go/soketi/internal/testredis"
	"github.com/soketi-go/soketi/internal/testutil"
	"github.com/soketi-go/soketi/pkg/pusher"
	"github.com/soketi-go/soketi/pkg/redisadapter"
	"github.com/soketi-go/soketi/pkg/redisconn"
	"github.com/soketi-go/soketi/pkg/wstransport"
)

// fleet is n nodes in this process sharing one real redis-server.
type fleet struct {
	t      *testing.T
	redis  *testredis.Server // nil on Redis Cluster
	open   redisconn.Options // how each node reaches Redis
	app    *pusher.App
	prefix string
	hooks  *testcluster.Webhooks // the webhook recorder the cluster tests use
	nodes  []*node
	gen    int // nodes started, for replacements' ids
}

type node struct {
	id      string
	adapter *redisadapter.Adapter
	server  *pusher.Server
	http    *httptest.Server
	rdb     redis.UniversalClient
	cancel  context.CancelFunc
	dead    bool
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// Short beats so that a dead node is reaped within a second.
const (
	beat    = 100 * time.Millisecond
	nodeTTL = 500 * time.Millisecond
)

func newFleet(t *testing.T, n int, mut ...func(*pusher.App)) *fleet {
	t.Helper()
	srv := testredis.Start(t)
	return newFleetOn(t, n, srv, redisconn.Options{Addr: srv.Addr, Timeout: time.Second}, mut...)
}

// newClusterFleet runs the nodes on a three-node Redis Cluster.
func newClusterFleet(t *testing.T, n int) *fleet {
	t.Helper()
	addrs := testredis.StartCluster(t, 3)
	return newFleetOn(t, n, nil, redisconn.Options{Cluster: true, ClusterNodes: addrs, Timeout: time.Second})
}

func newFleetOn(t *testing.T, n int, srv *testredis.Server, open redisconn.Options, mut ...func(*pusher.App)) *fleet {
	t.Helper()
	app, _ := pusher.ParseApp(map[string]any{"enableClientMessages": true}, pusher.DefaultAppLimits)
	app.Webhooks = []pusher.Webhook{{URL: "http://127.0.0.1:1", EventTypes: []string{
		pusher.WebhookChannelOccupied, pusher.WebhookChannelVacated, pusher.WebhookMemberAdded, pusher.WebhookMemberRemoved}}}
	for _, m := range mut {
		m(app)
	}
	f := &fleet{t: t, redis: srv, open: open, app: app, prefix: testredis.Prefix(t), hooks: &testcluster.Webhooks{}}
	for i := 0; i < n; i++ {
		f.nodes = append(f.nodes, f.start(i))
	}
	t.Cleanup(func() {
		for _, nd := range f.nodes {
			f.stop(nd, true)
		}
	})
	testutil.WaitFor(t, 5*time.Second, "every node ready", func() bool {
		for _, nd := range f.nodes {
			if !nd.adapter.Ready() {
				return false
			}
		}
		return true
	})
	return f
}

func (f *fleet) start(i int) *node {
	rdb, err := redisconn.Open(f.open)
	if err != nil {
		f.t.Fatal(err)
	}
	local := pusher.NewLocalAdapter()
	f.gen++
	id := fmt.Sprintf("node%d", i)
	if i < len(f.nodes) { // a replacement: a new process, a new id
		id = fmt.Sprintf("node%d-%d", i, f.gen)
	}
	ad := redisadapter.New(redisadapter.Config{NodeID: id, KeyPrefix: f.prefix, Logger: quiet,
		Prefix: strings.TrimSuffix(f.prefix, ":"), Timeout: time.Second, HeartbeatInterval: beat, NodeTTL: nodeTTL}, local, rdb)
	apps, _ := pusher.NewStaticApps([]*pusher.App{f.app})
	srv := pusher.New(pusher.Options{Apps: apps, Adapter: ad, Webhooks: f.hooks, WebSocket: wstransport.New(), Logger: quiet})
	ctx, cancel := context.WithCancel(context.Background())
	ad.Start(ctx)
	hs := httptest.NewServer(srv.Router())
	return &node{id: id, adapter: ad, server: srv, http: hs, rdb: rdb, cancel: cancel}
}

// stop ends a node: gracefully (its entries removed at once), or as a
// crash, leaving them for the reaper.
func (f *fleet) stop(nd *node, graceful bool) {
	if nd.dead {
		return
	}
	nd.dead = true
	if !graceful {
		// A crash: the process loses Redis first, so its sockets'
		// departures never reach the shared state; the reaper must.
		nd.cancel()
		_ = nd.rdb.Close()
	}
	nd.http.CloseClientConnections()
	nd.http.Close()
	nd.server.Close()
	if graceful {
		nd.adapter.Close()
		nd.cancel()
		_ = nd.rdb.Close()
	}
}

func (f *fleet) connect(i int) *testutil.Client {
	f.t.Helper()
	c := testutil.Dial(f.t, "ws"+strings.TrimPrefix(f.nodes[i].http.URL, "http")+"/app/"+f.app.Key+"?protocol=7")
	c.Established()
	return c
}

func subscribe(c *testutil.Client, channel string) {
	c.T.Helper()
	c.Send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": channel}})
	c.Expect("pusher_internal:subscription_succeeded")
}

func (f *fleet) joinPresence(c *testutil.Client, channel, userID string) map[string]any {
	c.T.Helper()
	cd := `{"user_id":` + userID + `,"user_info":{"n":` + userID + `}}`
	c.Send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": channel,
		"channel_data": cd, "auth": f.app.Key + ":" + pusher.Sign(f.app.Secret, c.SocketID+":"+channel+":"+cd)}})
	return c.ExpectEither("pusher_internal:subscription_succeeded", "pusher:subscription_error")
}

func (f *fleet) trigger(i int, channel, event, data string) (int, map[string]any) {
	f.t.Helper()
	return apiCall(f.t, f.nodes[i].http.URL, f.app, "POST", "/apps/"+f.app.ID+"/events", map[string]any{"name": event, "channel": channel, "data": data})
}
