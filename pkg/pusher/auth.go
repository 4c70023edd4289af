package pusher

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// authTimestampWindow is how far a signed request's auth_timestamp may be
// from the server clock, as in Pusher's HTTP API.
const authTimestampWindow = 600 * time.Second

// Sign returns hex(HMAC-SHA256(secret, msg)), the signature of every Pusher auth scheme.
func Sign(secret, msg string) string {
	h := hmac.New(sha256.New, []byte(secret))
	h.Write([]byte(msg))
	return hex.EncodeToString(h.Sum(nil))
}

// validToken checks a channel or user-authentication token "<key>:<signature>"
// in constant time.
func validToken(app *App, token, toSign string) bool {
	want := app.Key + ":" + Sign(app.Secret, toSign)
	return hmac.Equal([]byte(token), []byte(want))
}

// SignedQuery returns params with the Pusher HTTP API authentication added
// (auth_key, auth_timestamp, auth_version, body_md5 when there is a body,
// auth_signature), as the Pusher server SDKs sign a request.
func SignedQuery(key, secret, method, path string, params url.Values, body []byte, now time.Time) url.Values {
	q := url.Values{}
	for k, v := range params {
		q[k] = v
	}
	q.Set("auth_key", key)
	q.Set("auth_timestamp", strconv.FormatInt(now.Unix(), 10))
	q.Set("auth_version", "1.0")
	if len(body) > 0 {
		q.Set("body_md5", bodyMD5(body))
	}
	q.Set("auth_signature", Sign(secret, stringToSign(method, path, signedParams(q))))
	return q
}

func bodyMD5(body []byte) string {
	sum := md5.Sum(body)
	return hex.EncodeToString(sum[:])
}

// signedParams are the query parameters a signature covers: all but
// auth_signature, first value of each. body_md5 is among them, which is what
// lets the server check the signature before it reads the body.
func signedParams(q url.Values) map[string]string {
	params := make(map[string]string, len(q))
	for k, v := range q {
		if k == "auth_signature" || len(v) == 0 {
			continue
		}
		params[k] = v[0]
	}
	return params
}

// checkSignature is the whole check of a request whose body is in hand;
// the HTTP API runs its two halves on either side of reading the body.
func (s *Server) checkSignature(r *http.Request, app *App, body []byte) error {
	if err := s.checkQuerySignature(r, app); err != nil {
		return err
	}
	return checkBodyMD5(r.URL.Query(), body)
}

// checkQuerySignature verifies what the query alone can prove: auth_key,
// auth_version, a fresh auth_timestamp and the HMAC (over body_md5 as sent),
// compared in constant time. It reads nothing from the body.
func (s *Server) checkQuerySignature(r *http.Request, app *App) error {
	q := r.URL.Query()
	if q.Get("auth_key") != app.Key {
		return errors.New("auth_key does not match the app")
	}
	if v := q.Get("auth_version"); v != "1.0" {
		return errors.New("auth_version must be 1.0")
	}
	ts, err := strconv.ParseInt(q.Get("auth_timestamp"), 10, 64)
	if err != nil {
		return errors.New("auth_timestamp missing")
	}
	if d := s.clock().Sub(time.Unix(ts, 0)); math.Abs(float64(d)) > float64(authTimestampWindow) {
		return errors.New("auth_timestamp outside the 600 s window")
	}
	params := signedParams(q)
	got := []byte(q.Get("auth_signature"))
	for _, path := range candidatePaths(r) {
		want := Sign(app.Secret, stringToSign(r.Method, path, params))
		if hmac.Equal(got, []byte(want)) {
			return nil
		}
	}
	return errors.New("signature mismatch")
}

// checkBodyMD5 binds the body to the signed query: a request with a body, or
// one that names a body_md5, must carry the body's MD5. Without a body_md5 a
// non-empty body is refused, as soketi's signature check refuses it.
func checkBodyMD5(q url.Values, body []byte) error {
	if len(body) == 0 && !q.Has("body_md5") {
		return nil
	}
	if !q.Has("body_md5") {
		return errors.New("body without body_md5")
	}
	if !hmac.Equal([]byte(q.Get("body_md5")), []byte(bodyMD5(body))) {
		return errors.New("body_md5 does not match the body")
	}
	return nil
}

// candidatePaths are the spellings of the path a client may have signed.
func candidatePaths(r *http.Request) []string {
	p := r.URL.Path
	if ep := r.URL.EscapedPath(); ep != p {
		return []string{p, ep}
	}
	return []string{p}
}

// stringToSign is "METHOD\nPATH\nk1=v1&k2=v2…" with the keys sorted.
func stringToSign(method, path string, params map[string]string) string {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(method)
	b.WriteByte('\n')
	b.WriteString(path)
	b.WriteByte('\n')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(params[k])
	}
	return b.String()
}
