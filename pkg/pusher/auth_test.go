package pusher

import (
	"net/http"
	"net/url"
	"testing"
	"time"
)

// The worked example of Pusher's HTTP API reference: the signer and the
// server's checker must both agree with it.
func TestSignedQuery_PusherReferenceExample(t *testing.T) {
	app := &App{ID: "3", Key: "278d425bdf160c739803", Secret: "7ad3773142a6692b25b8"}
	body := []byte(`{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}`)
	ts := time.Unix(1353088179, 0)
	q := SignedQuery(app.Key, app.Secret, "POST", "/apps/3/events", nil, body, ts)
	if got := q.Get("body_md5"); got != "ec365a775a4cd0599faeb73354201b6f" {
		t.Fatalf("body_md5 = %s", got)
	}
	const wantToSign = "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
	params := map[string]string{}
	for k := range q {
		if k != "auth_signature" {
			params[k] = q.Get(k)
		}
	}
	if got := stringToSign("POST", "/apps/3/events", params); got != wantToSign {
		t.Fatalf("string to sign:\n got %q\nwant %q", got, wantToSign)
	}
	if got := q.Get("auth_signature"); got != "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c" {
		t.Fatalf("auth_signature = %s", got)
	}

	s := New(Options{})
	defer s.Close()
	s.clock = func() time.Time { return ts.Add(time.Minute) }
	r := &http.Request{Method: "POST", URL: &url.URL{Path: "/apps/3/events", RawQuery: q.Encode()}}
	if err := s.checkSignature(r, app, body); err != nil {
		t.Fatalf("the server refuses the reference request: %v", err)
	}
}
