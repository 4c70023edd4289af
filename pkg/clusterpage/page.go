// Package clusterpage serves the operators' live cluster page: an HTML page
// whose CSS and JavaScript are embedded in the binary (nothing comes from
// elsewhere, so it works offline), fed by a Server-Sent Events stream that
// pushes the node's view of the cluster four times a second.
//
// The page shows what its Snapshot returns and nothing more, so it is as
// private as the JSON at the same path: on the public port of a secured
// cluster that is the summary, on the metrics port the whole view.
package clusterpage

import (
	"context"
	"embed"
	"encoding/json"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

//go:embed assets
var assets embed.FS

// Defaults for Options.
const (
	DefaultInterval   = 250 * time.Millisecond
	DefaultMaxStreams = 32
	// writeTimeout drops a viewer that stops reading, so an open page can
	// never hold a goroutine and a buffer forever.
	writeTimeout = 10 * time.Second
)

// Options configure a Page.
type Options struct {
	// Snapshot returns what the page shows, encoded as JSON. It should
	// return within about Interval.
	Snapshot func(ctx context.Context) any
	// Interval between pushes; DefaultInterval when zero.
	Interval time.Duration
	// MaxStreams bounds the open live streams; more get 503.
	MaxStreams int
	Logger     *slog.Logger
}

// Page serves the HTML, its assets and the live stream.
type Page struct {
	opts    Options
	streams chan struct{} // one token per open stream
	done    chan struct{}
	once    sync.Once

	mu     sync.Mutex // held while a snapshot is taken, so viewers share one
	last   []byte
	lastAt time.Time
}

// New returns a page over opts.Snapshot.
func New(opts Options) *Page {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = DefaultMaxStreams
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Page{opts: opts, streams: make(chan struct{}, opts.MaxStreams), done: make(chan struct{})}
}

// Close ends every live stream (the browsers' EventSource then retries),
// so that a server shutdown does not wait on open pages.
func (p *Page) Close() { p.once.Do(func() { close(p.done) }) }

// WantsHTML reports whether a request prefers the page to JSON: its Accept
// header names text/html, and ranks it at least as high as
// application/json. Browsers do; curl, fetch and the SDKs do not.
func WantsHTML(r *http.Request) bool {
	html, jsonQ := -1.0, -1.0
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		q := 1.0
		if s, ok := params["q"]; ok {
			q = parseQ(s)
		}
		switch mt {
		case "text/html":
			html = max(html, q)
		case "application/json":
			jsonQ = max(jsonQ, q)
		}
	}
	return html > 0 && html >= jsonQ
}

// parseQ reads an RFC 9110 quality value; anything malformed counts as 0.
func parseQ(s string) float64 {
	q, err := strconv.ParseFloat(s, 64)
	if err != nil || q < 0 || q > 1 {
		return 0
	}
	return q
}

// Routes under base (the JSON's path, e.g. "/cluster"): the HTML itself
// is served by ServeHTML from the JSON's handler when WantsHTML says so.
const (
	scriptPath = "/page.js"
	stylePath  = "/page.css"
	livePath   = "/live"
)

// Assets lists the paths, relative to base, that Handle must be mounted on.
func Assets() []string { return []string{scriptPath, stylePath, livePath} }

// ServeHTML writes the page.
func (p *Page) ServeHTML(w http.ResponseWriter, r *http.Request) {
	p.serveFile(w, "assets/page.html", "text/html; charset=utf-8")
}

// Handle serves the page's assets and its live stream; mount it on every
// path of Assets under base.
func (p *Page) Handle(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasSuffix(r.URL.Path, scriptPath):
		p.serveFile(w, "assets/page.js", "text/javascript; charset=utf-8")
	case strings.HasSuffix(r.URL.Path, stylePath):
		p.serveFile(w, "assets/page.css", "text/css; charset=utf-8")
	case strings.HasSuffix(r.URL.Path, livePath):
		p.serveLive(w, r)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func (p *Page) serveFile(w http.ResponseWriter, name, contentType string) {
	b, err := assets.ReadFile(name)
	if err != nil {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	h := w.Header()
	securityHeaders(h)
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", "no-cache")
	h.Set("Vary", "Accept")
	_, _ = w.Write(b)
}

// securityHeaders keep the page to its own origin's files: no inline
// script, no framing, and node ids (which peers choose) only ever reach
// the document as text.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; "+
		"connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}

// serveLive streams a snapshot every Interval until the viewer leaves, a
// write stalls past writeTimeout, or Close.
func (p *Page) serveLive(w http.ResponseWriter, r *http.Request) {
	select {
	case p.streams <- struct{}{}:
		defer func() { <-p.streams }()
	default:
		http.Error(w, "too many open cluster pages", http.StatusServiceUnavailable)
		return
	}
	rc := http.NewResponseController(w)
	h := w.Header()
	securityHeaders(h)
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // proxies must not hold events back
	w.WriteHeader(http.StatusOK)

	ctx := r.Context()
	tick := time.NewTicker(p.opts.Interval)
	defer tick.Stop()
	// EventSource reconnects after retry ms when the stream ends.
	first := true
	for {
		b := p.snapshot(ctx)
		if b == nil {
			return
		}
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		var err error
		if first {
			_, err = w.Write([]byte("retry: 1000\n\n"))
			first = false
		}
		if err == nil {
			_, err = w.Write(append(append([]byte("data: "), b...), '\n', '\n'))
		}
		if err == nil {
			err = rc.Flush()
		}
		if err != nil {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		case <-p.done:
			return
		}
	}
}

// snapshot returns the latest encoded view, taking a new one when the
// last is older than half an interval: open pages share one.
func (p *Page) snapshot(ctx context.Context) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last != nil && time.Since(p.lastAt) < p.opts.Interval/2 {
		return p.last
	}
	if ctx.Err() != nil {
		return nil
	}
	// json.Marshal escapes <, > and & and never writes a newline, so
	// one line is one SSE event.
	b, err := json.Marshal(p.opts.Snapshot(ctx))
	if err != nil {
		p.opts.Logger.Warn("cluster page: encode", "err", err)
		return nil
	}
	p.last, p.lastAt = b, time.Now()
	return b
}
