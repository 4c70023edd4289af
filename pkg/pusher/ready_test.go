package pusher

import (
	"net/http"
	"sync/atomic"
	"testing"
)

// A cluster node says it is not ready until it is in its group.
func TestAPI_ReadyFollowsTheAdapter(t *testing.T) {
	var joined atomic.Bool
	ts := newTestServer(t, Options{Ready: joined.Load})
	get := func() int {
		resp, err := http.Get(ts.http.URL + "/ready")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(); code != http.StatusServiceUnavailable {
		t.Fatalf("joining: GET /ready = %d, want 503", code)
	}
	joined.Store(true)
	if code := get(); code != http.StatusOK {
		t.Fatalf("joined: GET /ready = %d, want 200", code)
	}
}
