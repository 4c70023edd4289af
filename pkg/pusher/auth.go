package pusher

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

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
		sum := md5.Sum(body)
		q.Set("body_md5", hex.EncodeToString(sum[:]))
	}
	flat := make(map[string]string, len(q))
	for k := range q {
		flat[k] = q.Get(k)
	}
	q.Set("auth_signature", Sign(secret, stringToSign(method, path, flat)))
	return q
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
