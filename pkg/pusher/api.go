package pusher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
)

// Router returns the HTTP handler for the WebSocket endpoint and the HTTP API,
// mounted under the configured path prefix.
func (s *Server) Router() http.Handler {
	r := chi.NewRouter()
	r.Use(s.cors)
	r.NotFound(notFound)
	r.MethodNotAllowed(notFound)
	r.Route(s.opts.PathPrefix+"/", func(r chi.Router) {
		r.Get("/", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("OK")) })
		r.Get("/ready", s.ready)
		r.Get("/accept-traffic", s.acceptTraffic)
		r.Get("/usage", s.usage)
		r.Get("/app/{key}", func(w http.ResponseWriter, r *http.Request) { s.ServeWS(w, r, chi.URLParam(r, "key")) })
		r.Route("/apps/{appId}", func(r chi.Router) {
			r.Use(s.appAuth)
			r.With(s.rateLimit(LimitReadRequests, readPoints)).Get("/channels", s.getChannels)
			r.With(s.rateLimit(LimitReadRequests, readPoints)).Get("/channels/{channel}", s.getChannel)
			r.With(s.rateLimit(LimitReadRequests, readPoints)).Get("/channels/{channel}/users", s.getUsers)
			r.Post("/events", s.postEvents)
			r.Post("/batch_events", s.postBatchEvents)
			r.Post("/users/{userId}/terminate_connections", s.terminate)
		})
	})
	return r
}

// HTTPTimeouts bound how long a client may take over a request; zero fields
// take the defaults.
type HTTPTimeouts struct {
	ReadHeader     time.Duration // request line and headers, 10 s
	Body           time.Duration // an HTTP API body, from the end of the headers, 30 s
	Idle           time.Duration // a keep-alive connection between requests, 60 s
	MaxHeaderBytes int           // request line and headers, 64 KiB
}

func (t HTTPTimeouts) withDefaults() HTTPTimeouts {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.ReadHeader, 10*time.Second)
	def(&t.Body, 30*time.Second)
	def(&t.Idle, 60*time.Second)
	if t.MaxHeaderBytes <= 0 {
		t.MaxHeaderBytes = 64 << 10
	}
	return t
}

type bodyTimeoutKey struct{}

// bodyTimeout is the API body deadline of the server serving ctx's request;
// the default when it was not built by NewHTTPServer.
func bodyTimeout(ctx context.Context) time.Duration {
	if d, ok := ctx.Value(bodyTimeoutKey{}).(time.Duration); ok {
		return d
	}
	return HTTPTimeouts{}.withDefaults().Body
}

// NewHTTPServer returns the http.Server for h with the bounds of t. It sets no
// ReadTimeout or WriteTimeout: the WebSocket connections hijacked from it must
// not inherit deadlines, so the API handlers bound their own body reads with
// t.Body, which reaches them through the server's base context.
func NewHTTPServer(h http.Handler, t HTTPTimeouts, logger *slog.Logger) *http.Server {
	t = t.withDefaults()
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: t.ReadHeader,
		IdleTimeout:       t.Idle,
		MaxHeaderBytes:    t.MaxHeaderBytes,
		BaseContext: func(net.Listener) context.Context {
			return context.WithValue(context.Background(), bodyTimeoutKey{}, t.Body)
		},
	}
	if logger != nil {
		srv.ErrorLog = slog.NewLogLogger(logger.Handler(), slog.LevelDebug)
	}
	return srv
}

func notFound(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNotFound) }

func (s *Server) cors(next http.Handler) http.Handler {
	origin := strings.Join(s.opts.CORSOrigin, ", ")
	methods := strings.Join(s.opts.CORSMethods, ", ")
	headers := strings.Join(s.opts.CORSHeaders, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Methods", methods)
		h.Set("Access-Control-Allow-Headers", headers)
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// apiError writes soketi's error shape {"error":..., "code":...}.
func apiError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"error": msg, "code": status})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	if s.closing.Load() {
		apiError(w, http.StatusInternalServerError, "The server is closing. Choose another server. :)")
		return
	}
	if s.opts.Ready != nil && !s.opts.Ready() {
		apiError(w, http.StatusServiceUnavailable, "The node is joining its cluster. Choose another server. :)")
		return
	}
	_, _ = w.Write([]byte("OK"))
}

func (s *Server) acceptTraffic(w http.ResponseWriter, _ *http.Request) {
	if s.closing.Load() {
		apiError(w, http.StatusInternalServerError, "The server is closing. Choose another server. :)")
		return
	}
	m := ReadMemory()
	if m.Percent > s.opts.MemoryThresholdPct {
		apiError(w, http.StatusInternalServerError, "Low on memory here. Choose another server. :)")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"memory": map[string]any{
		"usedSize": m.Used, "totalSize": m.Total, "percentUsage": m.Percent}})
}

func (s *Server) usage(w http.ResponseWriter, _ *http.Request) {
	m := ReadMemory()
	writeJSON(w, http.StatusOK, map[string]any{"memory": map[string]any{
		"free": m.Total - m.Used, "used": m.Used, "total": m.Total, "percent": m.Percent}})
}

type ctxKey int

const (
	ctxApp ctxKey = iota
	ctxBody
)

func appFrom(r *http.Request) *App    { return r.Context().Value(ctxApp).(*App) }
func bodyFrom(r *http.Request) []byte { b, _ := r.Context().Value(ctxBody).([]byte); return b }
func readPoints(*http.Request) int    { return 1 }

// appAuth finds the app and checks the request signature from the query
// alone, so an unsigned request costs no body; only then does it read the
// body, within the size limit and a deadline, and check its body_md5.
func (s *Server) appAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := chi.URLParam(r, "appId")
		app, err := s.opts.Apps.FindByID(r.Context(), id)
		if err != nil {
			refuseUnread(w, r, http.StatusInternalServerError, "A server error has occurred.")
			return
		}
		if app == nil {
			s.opts.Metrics.Rejected("unknown_app")
			refuseUnread(w, r, http.StatusNotFound, fmt.Sprintf("The app %s could not be found.", id))
			return
		}
		if err := s.checkQuerySignature(r, app); err != nil {
			s.opts.Metrics.Rejected("api_auth")
			s.log.Debug("api signature rejected", "app_id", app.ID, "reason", err.Error())
			refuseUnread(w, r, http.StatusUnauthorized, "The secret authentication failed")
			return
		}
		body, err := s.readBody(w, r)
		if errors.Is(err, errBodyTooLarge) {
			s.opts.Metrics.Rejected("body_too_large")
			refuseUnread(w, r, http.StatusRequestEntityTooLarge, "The payload size is too big.")
			return
		}
		if err != nil {
			s.opts.Metrics.Rejected("bad_body")
			s.log.Debug("api body read failed", "app_id", app.ID, "err", err)
			refuseUnread(w, r, http.StatusBadRequest, "The received data is incorrect.")
			return
		}
		if err := checkBodyMD5(r.URL.Query(), body); err != nil {
			s.opts.Metrics.Rejected("api_auth")
			s.log.Debug("api signature rejected", "app_id", app.ID, "reason", err.Error())
			apiError(w, http.StatusUnauthorized, "The secret authentication failed")
			return
		}
		cw := &countingWriter{ResponseWriter: w}
		ctx := context.WithValue(context.WithValue(r.Context(), ctxApp, app), ctxBody, body)
		next.ServeHTTP(cw, r.WithContext(ctx))
		s.opts.Metrics.HTTPCall(app.ID, len(body), cw.n)
	})
}

var errBodyTooLarge = errors.New("request body over the limit")

// readBody reads the whole body under RequestLimitBytes and the body deadline
// of HTTPTimeouts. A declared length over the limit is refused unread and an
// undeclared one is cut off at the limit, so no over-limit body is buffered.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	limit := s.opts.RequestLimitBytes
	if r.ContentLength > limit {
		return nil, errBodyTooLarge
	}
	// Set here rather than as the http.Server's ReadTimeout or WriteTimeout,
	// which reach every connection, the hijacked WebSocket ones among them.
	rc := http.NewResponseController(w)
	if err := rc.SetReadDeadline(time.Now().Add(bodyTimeout(r.Context()))); err != nil {
		s.log.Debug("api body deadline not set", "err", err)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, errBodyTooLarge
		}
		return nil, fmt.Errorf("read api body: %w", err)
	}
	// A deadline left running would end the server's background read of the
	// connection, which cancels the request context mid-handler.
	_ = rc.SetReadDeadline(time.Time{})
	return body, nil
}

// refuseUnread answers a request whose body has not been read to the end.
// The connection is closed after the reply instead of drained, so a refused
// client cannot make the server read, or wait for, the rest of its body.
func refuseUnread(w http.ResponseWriter, r *http.Request, status int, msg string) {
	if r.ContentLength != 0 {
		w.Header().Set("Connection", "close")
	}
	apiError(w, status, msg)
}

type countingWriter struct {
	http.ResponseWriter
	n int
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n += n
	return n, err
}

// rateLimit charges points to the app's limiter for key; over the limit the
// request gets 429 with soketi's body.
func (s *Server) rateLimit(key string, points func(*http.Request) int) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			app := appFrom(r)
			if !s.consume(w, app, key, points(r)) {
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// consume charges the limiter and writes the rate-limit headers or a 429.
func (s *Server) consume(w http.ResponseWriter, app *App, key string, points int) bool {
	limit := app.MaxReadRequestsPerSecond
	if key == LimitBackendEvents {
		limit = app.MaxBackendEventsPerSecond
	}
	if limit < 0 {
		return true
	}
	res := s.opts.Limiter.Consume(app.ID, key, points, limit)
	if !res.Allowed {
		s.opts.Metrics.Rejected("rate_limited")
		apiError(w, http.StatusTooManyRequests, "Too many requests.")
		return false
	}
	h := w.Header()
	h.Set("X-RateLimit-Limit", strconv.Itoa(res.Limit))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(max(res.Remaining, 0)))
	h.Set("Retry-After", strconv.FormatFloat(res.ResetIn.Seconds(), 'f', -1, 64))
	return true
}

func parseInfo(r *http.Request) map[string]bool {
	out := map[string]bool{}
	for _, f := range strings.Split(r.URL.Query().Get("info"), ",") {
		if f = strings.TrimSpace(f); f != "" {
			out[f] = true
		}
	}
	return out
}

func (s *Server) getChannels(w http.ResponseWriter, r *http.Request) {
	app := appFrom(r)
	prefix := r.URL.Query().Get("filter_by_prefix")
	info := parseInfo(r)
	if info["user_count"] && !strings.HasPrefix(prefix, PrefixPresence) {
		apiError(w, http.StatusBadRequest, "user_count may only be requested with filter_by_prefix=presence-")
		return
	}
	chans, err := s.opts.Adapter.Channels(r.Context(), app.ID)
	if err != nil {
		apiError(w, http.StatusInternalServerError, "A server error has occurred.")
		return
	}
	out := make(map[string]map[string]any, len(chans))
	for name, ci := range chans {
		if !strings.HasPrefix(name, prefix) || ci.SubscriptionCount == 0 {
			continue
		}
		entry := map[string]any{"subscription_count": ci.SubscriptionCount, "occupied": true}
		if info["user_count"] {
			entry["user_count"] = ci.UserCount
		}
		out[name] = entry
	}
	writeJSON(w, http.StatusOK, map[string]any{"channels": out})
}

func (s *Server) getChannel(w http.ResponseWriter, r *http.Request) {
	app := appFrom(r)
	channel := chi.URLParam(r, "channel")
	info := parseInfo(r)
	presence := strings.HasPrefix(channel, PrefixPresence)
	if info["user_count"] && !presence {
		apiError(w, http.StatusBadRequest, "user_count may only be requested for presence channels")
		return
	}
	ci, err := s.opts.Adapter.Channel(r.Context(), app.ID, channel)
	if err != nil {
		apiError(w, http.StatusInternalServerError, "A server error has occurred.")
		return
	}
	out := map[string]any{"subscription_count": ci.SubscriptionCount, "occupied": ci.SubscriptionCount > 0}
	if presence {
		out["user_count"] = ci.UserCount
	}
	if info["cache"] && IsCacheChannel(channel) {
		if f := s.cachedEvent(r.Context(), app.ID, channel); f != nil {
			out["cache"] = json.RawMessage(f.Payload())
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getUsers(w http.ResponseWriter, r *http.Request) {
	app := appFrom(r)
	channel := chi.URLParam(r, "channel")
	if !strings.HasPrefix(channel, PrefixPresence) {
		apiError(w, http.StatusBadRequest, "The channel must be a presence channel.")
		return
	}
	members, err := s.opts.Adapter.Members(r.Context(), app.ID, channel)
	if err != nil {
		apiError(w, http.StatusInternalServerError, "A server error has occurred.")
		return
	}
	withInfo := r.URL.Query().Get("with_user_info") != ""
	users := make([]map[string]json.RawMessage, 0, len(members))
	for _, m := range members {
		u := map[string]json.RawMessage{"id": m.UserID}
		if withInfo && m.UserInfo != nil {
			u["user_info"] = m.UserInfo
		}
		users = append(users, u)
	}
	writeJSON(w, http.StatusOK, map[string]any{"users": users})
}

// eventRequest is one event of /events or /batch_events.
type eventRequest struct {
	Name     *string         `json:"name"`
	Data     json.RawMessage `json:"data"`
	Channel  *string         `json:"channel"`
	Channels []string        `json:"channels"`
	SocketID *string         `json:"socket_id"`
	Info     string          `json:"info"`
}

var socketIDPattern = regexp.MustCompile(`^\d+\.\d+$`)

type apiFailure struct {
	status int
	msg    string
}

// validate applies soketi's checks, plus Pusher's channel-name and socket-id rules.
func (e *eventRequest) validate(app *App) ([]string, *apiFailure) {
	channels := e.Channels
	if channels == nil && e.Channel != nil {
		channels = []string{*e.Channel}
	}
	if len(channels) == 0 || e.Name == nil || *e.Name == "" || len(e.Data) == 0 || string(e.Data) == "null" {
		return nil, &apiFailure{400, "The received data is incorrect"}
	}
	if len(channels) > app.MaxEventChannelsAtOnce {
		return nil, &apiFailure{400, fmt.Sprintf("Cannot broadcast to more than %d channels at once", app.MaxEventChannelsAtOnce)}
	}
	if utf16Len(*e.Name) > app.MaxEventNameLength {
		return nil, &apiFailure{400, fmt.Sprintf("Event name is too long. Maximum allowed size is %d.", app.MaxEventNameLength)}
	}
	for _, ch := range channels {
		name := strings.TrimPrefix(ch, PrefixServerToUser)
		if name == "" || !ValidChannelName(name) || utf16Len(ch) > app.MaxChannelNameLength {
			return nil, &apiFailure{400, fmt.Sprintf("Invalid channel name %q", truncate(ch, 64))}
		}
	}
	if e.SocketID != nil && *e.SocketID != "" && !socketIDPattern.MatchString(*e.SocketID) {
		return nil, &apiFailure{400, "Invalid socket_id"}
	}
	if payloadKB(e.Data) > app.MaxEventPayloadInKB {
		return nil, &apiFailure{413, fmt.Sprintf("The event data should be less than %s KB.", formatNumber(app.MaxEventPayloadInKB))}
	}
	return channels, nil
}

func (s *Server) postEvents(w http.ResponseWriter, r *http.Request) {
	app := appFrom(r)
	var e eventRequest
	if json.Unmarshal(bodyFrom(r), &e) != nil {
		s.opts.Metrics.Rejected("bad_event")
		apiError(w, http.StatusBadRequest, "The received data is incorrect")
		return
	}
	channels, fail := e.validate(app)
	if fail != nil {
		s.opts.Metrics.Rejected("bad_event")
		apiError(w, fail.status, fail.msg)
		return
	}
	if !s.consume(w, app, LimitBackendEvents, len(channels)) {
		return
	}
	if err := s.publishEvent(r.Context(), app, &e, channels); err != nil {
		s.unavailable(w)
		return
	}
	info := strings.TrimSpace(e.Info)
	if info == "" {
		info = r.URL.Query().Get("info")
	}
	if info == "" {
		writeJSON(w, http.StatusOK, map[string]any{"ok": true})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "channels": s.channelsInfo(r.Context(), app, channels, info)})
}

func (s *Server) postBatchEvents(w http.ResponseWriter, r *http.Request) {
	app := appFrom(r)
	var body struct {
		Batch []eventRequest `json:"batch"`
	}
	if json.Unmarshal(bodyFrom(r), &body) != nil || body.Batch == nil {
		s.opts.Metrics.Rejected("bad_event")
		apiError(w, http.StatusBadRequest, "The received data is incorrect")
		return
	}
	if len(body.Batch) > app.MaxEventBatchSize {
		s.opts.Metrics.Rejected("batch_too_large")
		apiError(w, http.StatusBadRequest, fmt.Sprintf("Cannot batch-send more than %d messages at once", app.MaxEventBatchSize))
		return
	}
	all := make([][]string, len(body.Batch))
	points := 0
	for i := range body.Batch {
		channels, fail := body.Batch[i].validate(app)
		if fail != nil {
			s.opts.Metrics.Rejected("bad_event")
			apiError(w, fail.status, fail.msg)
			return
		}
		all[i] = channels
		points += len(channels)
	}
	if !s.consume(w, app, LimitBackendEvents, max(points, 1)) {
		return
	}
	wantInfo := false
	var unavailable error
	for i := range body.Batch {
		if err := s.publishEvent(r.Context(), app, &body.Batch[i], all[i]); err != nil {
			unavailable = err
		}
		wantInfo = wantInfo || body.Batch[i].Info != ""
	}
	if unavailable != nil {
		s.unavailable(w)
		return
	}
	if !wantInfo {
		writeJSON(w, http.StatusOK, map[string]any{"ok": true})
		return
	}
	batch := make([]map[string]any, len(body.Batch))
	for i, e := range body.Batch {
		batch[i] = map[string]any{}
		if e.Info != "" {
			for _, v := range s.channelsInfo(r.Context(), app, all[i], e.Info) {
				batch[i] = v
			}
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "batch": batch})
}

// channelsInfo answers the info= attributes of an event request, per channel.
func (s *Server) channelsInfo(ctx context.Context, app *App, channels []string, info string) map[string]map[string]any {
	want := map[string]bool{}
	for _, f := range strings.Split(info, ",") {
		want[strings.TrimSpace(f)] = true
	}
	out := make(map[string]map[string]any, len(channels))
	for _, ch := range channels {
		ci, err := s.opts.Adapter.Channel(ctx, app.ID, ch)
		if err != nil {
			continue
		}
		entry := map[string]any{}
		if want["subscription_count"] {
			entry["subscription_count"] = ci.SubscriptionCount
		}
		if want["user_count"] && strings.HasPrefix(ch, PrefixPresence) {
			entry["user_count"] = ci.UserCount
		}
		out[ch] = entry
	}
	return out
}

// publishEvent frames the event once per channel and delivers it, to every
// channel even when a node refuses it for one; the error then wraps
// ErrUnavailable. Other adapter errors are logged, as for client events.
func (s *Server) publishEvent(ctx context.Context, app *App, e *eventRequest, channels []string) error {
	except := ""
	if e.SocketID != nil {
		except = *e.SocketID
	}
	var unavailable error
	for _, ch := range channels {
		f := TextFrame(EventJSON(*e.Name, ch, e.Data, nil))
		var n int
		var err error
		if user, ok := strings.CutPrefix(ch, PrefixServerToUser); ok {
			n, err = s.opts.Adapter.SendToUser(ctx, app.ID, user, f)
		} else {
			if IsCacheChannel(ch) {
				s.storeEvent(ctx, app.ID, ch, f)
				if cs, ok := s.opts.Adapter.(CacheSharer); ok && !s.cache.Shared() {
					cs.ShareCache(ctx, app.ID, ch, f)
				}
			}
			n, err = s.opts.Adapter.Publish(ctx, app.ID, ch, f, except)
		}
		switch {
		case errors.Is(err, ErrUnavailable):
			unavailable = err // the adapter logs these, a few at most
			s.log.Debug("publish refused", "app_id", app.ID, "channel", ch, "err", err)
		case err != nil:
			s.log.Warn("publish failed", "app_id", app.ID, "channel", ch, "err", err)
		}
		if n > 0 {
			s.opts.Metrics.FramesSent(app.ID, n, len(f))
		}
	}
	return unavailable
}

// unavailable answers a publish that a node could not take (ErrUnavailable).
func (s *Server) unavailable(w http.ResponseWriter) {
	s.opts.Metrics.Rejected("unavailable")
	msg := "Another node could not take the event in time. Retry shortly; subscribers that got it may get it twice."
	if s.closing.Load() {
		msg = "The server is closing and could not forward the event. Retry through another server. :)"
	}
	w.Header().Set("Retry-After", "1")
	apiError(w, http.StatusServiceUnavailable, msg)
}

func (s *Server) terminate(w http.ResponseWriter, r *http.Request) {
	app := appFrom(r)
	if err := s.opts.Adapter.TerminateUser(r.Context(), app.ID, chi.URLParam(r, "userId")); err != nil {
		apiError(w, http.StatusInternalServerError, "A server error has occurred.")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true})
}
