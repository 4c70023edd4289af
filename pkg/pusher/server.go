package pusher

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/soketi-go/soketi/internal/logevery"
)

// Options configures a Server. Zero values get soketi's defaults.
type Options struct {
	Apps     AppManager
	Adapter  Adapter
	Webhooks WebhookSink
	Metrics  Metrics
	Limiter  RateLimiter
	Logger   *slog.Logger
	// WebSocket serves /app/{key}; main sets wstransport's. Without it the
	// endpoint answers 501.
	WebSocket WebSocketHandler

	UserAuthenticationTimeout time.Duration // 30 s
	// ActivityTimeout is how long a client may stay silent before the server
	// sends pusher:ping; PongTimeout is how long it then has to answer (4201).
	ActivityTimeout time.Duration // 120 s
	PongTimeout     time.Duration // 30 s
	MaxQueuedBytes  int           // per connection, 1 MiB
	ChannelCacheTTL time.Duration // 1 h
	MaxCacheEntries int           // cache channels remembered, 100,000
	// ChannelCache keeps cache channels' last events; nil: this process's
	// memory, bounded by MaxCacheEntries.
	ChannelCache ChannelCache

	// HTTP side.
	PathPrefix         string
	RequestLimitBytes  int64 // 100 MB
	CORSOrigin         []string
	CORSMethods        []string
	CORSHeaders        []string
	MemoryThresholdPct float64 // /accept-traffic, 85
	// Ready, when set, gates /ready beyond shutdown: a cluster node answers
	// 503 until it is in its group, so that load balancers never route to a
	// node that is still joining (and could be wiped by a merge).
	Ready func() bool
}

// Server runs the Pusher protocol over connections handed to it by a transport.
type Server struct {
	opts    Options
	log     *slog.Logger
	closing atomic.Bool
	cache   ChannelCache
	watch   *watchers        // connections by the users on their watchlists
	counts  *subCounts       // nil when the adapter cannot count (subcount.go)
	clock   func() time.Time // request signatures' timestamp window; tests set it

	connsMu sync.Mutex
	conns   map[*Conn]struct{}
	drained chan struct{} // closed when closing and the last connection is gone

	stopSweep chan struct{}
	stopOnce  sync.Once

	cacheLog logevery.Limiter // channel cache failures
}

// New returns a Server; call Close to stop its background sweeper.
func New(opts Options) *Server {
	if opts.Adapter == nil {
		opts.Adapter = NewLocalAdapter()
	}
	if opts.Webhooks == nil {
		opts.Webhooks = nopWebhooks{}
	}
	if opts.Metrics == nil {
		opts.Metrics = nopMetrics{}
	}
	if opts.Limiter == nil {
		opts.Limiter = unlimited{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opts.UserAuthenticationTimeout, 30*time.Second)
	def(&opts.ActivityTimeout, 120*time.Second)
	def(&opts.PongTimeout, 30*time.Second)
	def(&opts.ChannelCacheTTL, time.Hour)
	if opts.MaxQueuedBytes <= 0 {
		opts.MaxQueuedBytes = DefaultMaxQueuedBytes
	}
	if opts.MaxCacheEntries <= 0 {
		opts.MaxCacheEntries = 100_000
	}
	if opts.RequestLimitBytes <= 0 {
		opts.RequestLimitBytes = 100 << 20
	}
	if opts.MemoryThresholdPct <= 0 {
		opts.MemoryThresholdPct = 85
	}
	if len(opts.CORSOrigin) == 0 {
		opts.CORSOrigin = []string{"*"}
	}
	if len(opts.CORSMethods) == 0 {
		opts.CORSMethods = []string{"GET", "POST", "PUT", "DELETE", "OPTIONS"}
	}
	if len(opts.CORSHeaders) == 0 {
		opts.CORSHeaders = []string{"Origin", "Content-Type", "X-Auth-Token", "X-Requested-With", "Accept",
			"Authorization", "X-CSRF-TOKEN", "XSRF-TOKEN", "X-Socket-Id"}
	}
	if opts.ChannelCache == nil {
		opts.ChannelCache = newMemoryCache(opts.MaxCacheEntries)
	}
	s := &Server{
		opts:      opts,
		log:       opts.Logger.With("component", "pusher"),
		cache:     opts.ChannelCache,
		watch:     newWatchers(),
		clock:     time.Now,
		conns:     map[*Conn]struct{}{},
		drained:   make(chan struct{}),
		stopSweep: make(chan struct{}),
	}
	if hs, ok := opts.Adapter.(HandlerSetter); ok {
		hs.SetHandler(s)
	}
	if sc, ok := opts.Adapter.(SubscriptionCounter); ok {
		s.counts = newSubCounts(sc)
		go s.countsLoop()
	}
	go s.sweep()
	return s
}

// Announce tells a channel's subscribers on every node about a transition
// decided elsewhere, and sends its webhooks.
func (s *Server) Announce(ctx context.Context, appID string, t Transition) {
	app, err := s.opts.Apps.FindByID(ctx, appID)
	if err != nil || app == nil {
		return
	}
	if m := t.MemberAdded; m != nil {
		if !t.WebhooksOnly {
			s.broadcast(ctx, app, t.Channel, MemberAddedJSON(t.Channel, *m), "")
		}
		s.webhook(app, WebhookEvent{Name: WebhookMemberAdded, Channel: t.Channel, UserID: m.UserID, ID: eventID(t.ID, "member_added")})
	}
	if m := t.MemberRemoved; m != nil {
		if !t.WebhooksOnly {
			s.broadcast(ctx, app, t.Channel, MemberRemovedJSON(t.Channel, *m), "")
		}
		s.webhook(app, WebhookEvent{Name: WebhookMemberRemoved, Channel: t.Channel, UserID: m.UserID, ID: eventID(t.ID, "member_removed")})
	}
	if t.Occupied {
		s.webhook(app, WebhookEvent{Name: WebhookChannelOccupied, Channel: t.Channel, ID: eventID(t.ID, "channel_occupied")})
	}
	if t.Vacated {
		s.webhook(app, WebhookEvent{Name: WebhookChannelVacated, Channel: t.Channel, ID: eventID(t.ID, "channel_vacated")})
	}
}

// UserStatus tells this node's watchers of a change decided by the adapter.
func (s *Server) UserStatus(appID, userID string, online bool) {
	s.watch.notify(appID, userID, online)
}

// userChanged tells the watchers of a change the adapter did not announce.
func (s *Server) userChanged(appID string, uc UserChange) {
	if uc.Announced {
		return
	}
	if uc.Offline != "" {
		s.watch.notify(appID, uc.Offline, false)
	}
	if uc.Online != "" {
		s.watch.notify(appID, uc.Online, true)
	}
}

// Metrics returns the metrics sink, for the transport's rejections.
func (s *Server) Metrics() Metrics { return s.opts.Metrics }

// Logger returns the logger the server was configured with.
func (s *Server) Logger() *slog.Logger { return s.opts.Logger }

// Adapter returns the adapter the server delivers through.
func (s *Server) Adapter() Adapter { return s.opts.Adapter }

// Closing reports whether Shutdown has begun.
func (s *Server) Closing() bool { return s.closing.Load() }

// ConnectionCount returns the number of open local connections.
func (s *Server) ConnectionCount() int {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	return len(s.conns)
}

// Shutdown refuses new connections, sends 4200 to every connection and waits
// until all are gone or ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.connsMu.Lock()
	conns := make([]*Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	if len(s.conns) == 0 {
		s.closeDrained()
	}
	s.connsMu.Unlock()
	for _, c := range conns {
		c.CloseWith(ErrServerClosed)
	}
	select {
	case <-s.drained:
		return nil
	case <-ctx.Done():
		for _, c := range conns {
			_ = c.transport.Close()
		}
		return ctx.Err()
	}
}

// Close stops background work. Connections are not touched; see Shutdown.
func (s *Server) Close() {
	s.stopOnce.Do(func() { close(s.stopSweep) })
}

func (s *Server) closeDrained() {
	select {
	case <-s.drained:
	default:
		close(s.drained)
	}
}

// sweep pings silent clients and closes those that do not answer, so that
// no timer is armed per connection.
func (s *Server) sweep() {
	every := s.opts.PongTimeout / 4
	if every > 5*time.Second {
		every = 5 * time.Second
	}
	if every < 10*time.Millisecond {
		every = 10 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stopSweep:
			return
		case now := <-t.C:
			s.checkActivity(now)
			if m, ok := s.cache.(*memoryCache); ok {
				m.expire(now)
			}
		}
	}
}

func (s *Server) checkActivity(now time.Time) {
	s.connsMu.Lock()
	conns := make([]*Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.connsMu.Unlock()
	for _, c := range conns {
		idle := now.Sub(time.Unix(0, c.lastSeen.Load()))
		switch {
		case c.pinged.Load() && idle > s.opts.ActivityTimeout+s.opts.PongTimeout:
			c.closeSilently(ErrPongNotReceived)
		case !c.pinged.Load() && idle > s.opts.ActivityTimeout:
			c.pinged.Store(true)
			c.sendJSON(pingJSON)
		}
	}
}

// Open runs the connection checks for a new transport and, if they pass,
// returns the registered connection. On refusal it returns nil after telling
// the client why.
func (s *Server) Open(ctx context.Context, appKey string, t Transport) *Conn {
	if s.closing.Load() {
		s.reject(t, ErrServerClosing, "closing")
		return nil
	}
	app, err := s.opts.Apps.FindByKey(ctx, appKey)
	if err != nil || app == nil {
		s.reject(t, errUnknownApp(appKey), "unknown_app")
		return nil
	}
	if !app.Enabled {
		s.reject(t, ErrAppDisabled, "app_disabled")
		return nil
	}
	c := newConn(s, app, t)
	if err := s.opts.Adapter.AddSocket(ctx, c); err != nil {
		s.reject(t, ErrOverQuota, "connection_quota")
		return nil
	}
	s.connsMu.Lock()
	s.conns[c] = struct{}{}
	s.connsMu.Unlock()
	s.opts.Metrics.ConnectionOpened(app.ID)

	c.sendJSON(EventJSON("pusher:connection_established", "",
		stringData(map[string]any{"socket_id": c.ID, "activity_timeout": 30}), nil))
	if app.EnableUserAuthentication {
		c.mu.Lock()
		c.authTimer = time.AfterFunc(s.opts.UserAuthenticationTimeout, func() {
			if c.UserID() == "" {
				c.CloseWith(ErrAuthTimeout)
			}
		})
		c.mu.Unlock()
	}
	return c
}

func (s *Server) reject(t Transport, e *Error, reason string) {
	s.opts.Metrics.Rejected(reason)
	bufs := net.Buffers{TextFrame(errorJSON(e, "")), CloseFrame(e.Code, e.Message)}
	if t.WriteBuffers(&bufs) != nil {
		_ = t.Close()
		return
	}
	t.CloseAfterFlush()
}

// Closed cleans up after a connection ended, however it ended.
func (s *Server) Closed(c *Conn) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	if c.authTimer != nil {
		c.authTimer.Stop()
		c.authTimer = nil
	}
	c.mu.Unlock()
	ctx := context.Background()
	for _, ch := range c.Channels() {
		s.leave(ctx, c, ch)
	}
	s.watch.unwatch(c)
	s.userChanged(c.App.ID, s.opts.Adapter.RemoveSocket(c))
	s.opts.Metrics.ConnectionClosed(c.App.ID)
	s.connsMu.Lock()
	delete(s.conns, c)
	if s.closing.Load() && len(s.conns) == 0 {
		s.closeDrained()
	}
	s.connsMu.Unlock()
}

// HandleFrame processes one text or binary message from the client. raw is
// not retained after it returns, so a transport may pass its read buffer.
func (s *Server) HandleFrame(c *Conn, raw []byte) {
	c.Touch()
	s.opts.Metrics.FrameReceived(c.App.ID, len(raw))
	var m inbound
	if err := json.Unmarshal(raw, &m); err != nil {
		s.opts.Metrics.Rejected("bad_json")
		s.log.Debug("dropping malformed frame", "app_id", c.App.ID, "socket_id", c.ID)
		return
	}
	ctx := context.Background()
	switch {
	case m.Event == "pusher:ping":
		c.sendJSON(pongJSON)
		if s.closing.Load() {
			c.CloseWith(ErrServerClosed)
		}
	case m.Event == "pusher:pong":
	case m.Event == "pusher:subscribe":
		s.subscribe(ctx, c, &m)
	case m.Event == "pusher:unsubscribe":
		var d struct {
			Channel string `json:"channel"`
		}
		if m.object(&d) == nil && d.Channel != "" {
			if ok, _ := c.isSubscribed(d.Channel); ok {
				s.leave(ctx, c, d.Channel)
			}
		}
	case m.Event == "pusher:signin":
		s.signin(ctx, c, &m)
	case strings.HasPrefix(m.Event, "client-"):
		s.clientEvent(ctx, c, &m)
	default:
		s.opts.Metrics.Rejected("unknown_event")
		s.log.Debug("ignoring unknown event", "app_id", c.App.ID, "socket_id", c.ID, "event", truncate(m.Event, 64))
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// eventID names one webhook event of a transition; "" when the transition has no id.
func eventID(transition, name string) string {
	if transition == "" {
		return ""
	}
	return transition + "/" + name
}

// StoreCache keeps the last event of a cache channel published on another
// node. A shared cache has it already.
func (s *Server) StoreCache(appID, channel string, f Frame) {
	if IsCacheChannel(channel) && !s.cache.Shared() {
		s.storeEvent(context.Background(), appID, channel, f)
	}
}

// Delivered counts the local deliveries of a message from another node.
func (s *Server) Delivered(appID string, n int, f Frame) {
	if n > 0 {
		s.opts.Metrics.FramesSent(appID, n, len(f))
	}
}
