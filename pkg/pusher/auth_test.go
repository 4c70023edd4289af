package pusher

import (
	"net/http"
	"net/url"
	"strings"
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
	// The query alone proves the signature, body_md5 included: the body can
	// be read after it.
	if err := s.checkQuerySignature(r, app); err != nil {
		t.Fatalf("the server refuses the reference query: %v", err)
	}
	if err := s.checkSignature(r, app, body); err != nil {
		t.Fatalf("the server refuses the reference request: %v", err)
	}
}

func TestCheckBodyMD5(t *testing.T) {
	body := []byte(`{"name":"foo"}`)
	for _, tc := range []struct {
		name string
		q    url.Values
		body []byte
		ok   bool
	}{
		{"no body, no body_md5", url.Values{}, nil, true},
		{"matching", url.Values{"body_md5": {bodyMD5(body)}}, body, true},
		{"body without body_md5", url.Values{}, body, false},
		{"other body", url.Values{"body_md5": {bodyMD5([]byte("x"))}}, body, false},
		{"body_md5 of an absent body", url.Values{"body_md5": {bodyMD5(body)}}, nil, false},
		{"empty body named", url.Values{"body_md5": {bodyMD5(nil)}}, nil, true},
		{"upper-case hex", url.Values{"body_md5": {strings.ToUpper(bodyMD5(body))}}, body, false},
	} {
		if err := checkBodyMD5(tc.q, tc.body); (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}
