package pusher

import (
	"net"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// discardTransport accepts frames and counts them; it stands in for a socket.
type discardTransport struct {
	mu     sync.Mutex
	frames int
	closed bool
}

func (d *discardTransport) WriteBuffers(b *net.Buffers) error {
	d.mu.Lock()
	d.frames += len(*b)
	d.mu.Unlock()
	*b = nil
	return nil
}
func (d *discardTransport) TryWrite(b []byte) (int, error) { return len(b), nil }
func (d *discardTransport) CloseAfterFlush()               { _ = d.Close() }
func (d *discardTransport) Close() error                   { d.mu.Lock(); d.closed = true; d.mu.Unlock(); return nil }
func (d *discardTransport) RemoteAddr() string             { return "fuzz" }

func FuzzHandleFrame(f *testing.F) {
	for _, seed := range []string{
		`{"event":"pusher:ping","data":{}}`,
		`{"event":"pusher:subscribe","data":{"channel":"news"}}`,
		`{"event":"pusher:subscribe","data":{"channel":"presence-a","auth":"app-key:00","channel_data":"{\"user_id\":1}"}}`,
		`{"event":"pusher:subscribe","data":"{\"channel\":\"x\"}"}`,
		`{"event":"pusher:unsubscribe","data":{"channel":"news"}}`,
		`{"event":"client-x","channel":"private-a","data":{"a":1}}`,
		`{"event":"pusher:signin","data":{"user_data":"{\"id\":\"1\"}","auth":"app-key:00"}}`,
		`{"event":"pusher:subscribe","data":{"channel":"` + strings.Repeat("a", 300) + `"}}`,
		`{`, `null`, `[]`, `{"event":null}`, "\xff\xfe",
	} {
		f.Add([]byte(seed))
	}
	sa, _ := NewStaticApps([]*App{testApp()})
	s := New(Options{Apps: sa})
	f.Cleanup(s.Close)
	f.Fuzz(func(t *testing.T, raw []byte) {
		tr := &discardTransport{}
		c := s.Open(t.Context(), "app-key", tr)
		if c == nil {
			t.Fatal("connection refused")
		}
		s.HandleFrame(c, raw)
		s.HandleFrame(c, raw)
		s.Closed(c)
		if st := s.opts.Adapter.(*LocalAdapter).Stats(); st.Channels != 0 || st.Members != 0 || st.Sockets != 0 {
			t.Fatalf("state left behind after close: %+v", st)
		}
	})
}

func FuzzCheckSignature(f *testing.F) {
	f.Add("filter_by_prefix=presence-&info=user_count", []byte(""), "GET")
	f.Add("", []byte(`{"name":"a","channel":"b","data":"c"}`), "POST")
	f.Add("a=%ZZ&&b=1&b=2", []byte("\x00"), "PUT")
	app := testApp()
	s := New(Options{})
	f.Cleanup(s.Close)
	f.Fuzz(func(t *testing.T, rawQuery string, body []byte, method string) {
		if strings.ContainsAny(method, " \r\n\t/") || method == "" {
			return
		}
		// Arbitrary requests never panic and never pass without a signature.
		r := httptest.NewRequest("GET", "/apps/app-id/channels", nil)
		r.Method = method
		r.URL.RawQuery = rawQuery
		q := r.URL.Query()
		if q.Get("auth_signature") == "" && s.checkSignature(r, app, body) == nil {
			t.Fatalf("unsigned request accepted: %q", rawQuery)
		}
		// A properly signed request passes, and a changed body does not.
		params, err := url.ParseQuery(rawQuery)
		if err != nil {
			return
		}
		for k := range params {
			if strings.HasPrefix(k, "auth_") || k == "body_md5" || k == "" {
				delete(params, k)
			}
		}
		signed := signedURL("", app, method, "/apps/app-id/channels", params, body, time.Now())
		r = httptest.NewRequest("GET", signed, nil)
		r.Method = method
		if err := s.checkSignature(r, app, body); err != nil {
			t.Fatalf("signed request refused: %v (%s)", err, signed)
		}
		if s.checkSignature(r, app, append(append([]byte{}, body...), 'x')) == nil {
			t.Fatal("changed body accepted")
		}
	})
}
