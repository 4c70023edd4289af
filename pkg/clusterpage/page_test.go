package clusterpage

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestWantsHTML(t *testing.T) {
	for accept, want := range map[string]bool{
		"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8": true, // a browser
		"*/*":                                   false, // curl, fetch
		"":                                      false,
		"application/json":                      false,
		"application/json, text/html;q=0.5":     false,
		"text/html;q=0.9, application/json;q=1": false,
		"text/html, application/json":           true,
		"text/html;q=0":                         false,
		"text/html;q=abc":                       false,
		"text/html;q=2":                         false,
		"text/html;;;":                          false,
	} {
		r := httptest.NewRequest(http.MethodGet, "/cluster", nil)
		r.Header.Set("Accept", accept)
		if got := WantsHTML(r); got != want {
			t.Errorf("Accept %q: WantsHTML = %v, want %v", accept, got, want)
		}
	}
}

func newTestServer(t *testing.T, p *Page) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/cluster", p.ServeHTML)
	for _, a := range Assets() {
		mux.HandleFunc("/cluster"+a, p.Handle)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Cleanup(p.Close)
	return srv
}

// The page and its files come from the binary, under a policy that allows
// nothing from elsewhere and no inline script.
func TestPage_ServesEmbeddedFilesUnderAStrictPolicy(t *testing.T) {
	p := New(Options{Snapshot: func(context.Context) any { return map[string]int{} }})
	srv := newTestServer(t, p)
	for path, want := range map[string]string{
		"/cluster":          "text/html",
		"/cluster/page.js":  "text/javascript",
		"/cluster/page.css": "text/css",
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), want) || len(body) < 100 {
			t.Fatalf("%s: %d %q, %d bytes", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
		}
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self'") {
			t.Fatalf("%s: CSP %q", path, csp)
		}
		if strings.Contains(string(body), "http://") || strings.Contains(string(body), "https://") {
			t.Fatalf("%s refers to another origin", path)
		}
	}
	html, _ := assets.ReadFile("assets/page.html")
	if strings.Contains(string(html), "<script>") || strings.Contains(string(html), "style=") {
		t.Fatal("the page has inline script or style, which its policy refuses")
	}
}

// readEvents reads n SSE data lines from a live stream.
func readEvents(t *testing.T, body io.Reader, n int) []string {
	t.Helper()
	sc := bufio.NewScanner(body)
	var out []string
	for len(out) < n && sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			out = append(out, d)
		}
	}
	if len(out) < n {
		t.Fatalf("stream ended after %d events: %v", len(out), sc.Err())
	}
	return out
}

// The stream pushes a fresh snapshot every interval; viewers share
// snapshots; past MaxStreams a viewer gets 503; Close ends the streams.
func TestLive_PushesSharesBoundsAndCloses(t *testing.T) {
	var taken atomic.Int64
	p := New(Options{Interval: 50 * time.Millisecond, MaxStreams: 2, Snapshot: func(context.Context) any {
		return map[string]int64{"n": taken.Add(1)}
	}})
	srv := newTestServer(t, p)
	open := func() *http.Response {
		resp, err := http.Get(srv.URL + "/cluster/live")
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	a, b := open(), open()
	defer a.Body.Close()
	defer b.Body.Close()
	if a.StatusCode != 200 || a.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("live: %d %q", a.StatusCode, a.Header.Get("Content-Type"))
	}
	evA := readEvents(t, a.Body, 4)
	readEvents(t, b.Body, 4)
	if evA[0] == evA[3] {
		t.Fatalf("the snapshot never changed: %v", evA)
	}
	// Two viewers for ~4 intervals took about one snapshot per interval, not two.
	if n := taken.Load(); n > 7 {
		t.Fatalf("%d snapshots for two viewers over 4 intervals", n)
	}
	c := open()
	c.Body.Close()
	if c.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third stream over a bound of 2: %d", c.StatusCode)
	}

	p.Close()
	done := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, a.Body); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not end an open stream")
	}
}

// A viewer that leaves frees its place at once.
func TestLive_ALeavingViewerFreesItsPlace(t *testing.T) {
	p := New(Options{Interval: 20 * time.Millisecond, MaxStreams: 1, Snapshot: func(context.Context) any { return 1 }})
	srv := newTestServer(t, p)
	for i := 0; i < 5; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/cluster/live", nil)
		var resp *http.Response
		var err error
		for try := 0; try < 100; try++ {
			if resp, err = http.DefaultClient.Do(req); err == nil && resp.StatusCode == 200 {
				break
			}
			if resp != nil {
				resp.Body.Close()
			}
			time.Sleep(10 * time.Millisecond)
			req, _ = http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/cluster/live", nil)
		}
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("viewer %d never got the one place: %v", i, err)
		}
		readEvents(t, resp.Body, 1)
		cancel()
		resp.Body.Close()
	}
}
