package main

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
)

// authParams returns the unsigned Pusher HTTP API query parameters, already in
// the sorted-by-key order the signature requires
// (auth_key < auth_timestamp < auth_version < body_md5).
func authParams(key string, body []byte, ts int64) string {
	sum := md5.Sum(body)
	return "auth_key=" + key +
		"&auth_timestamp=" + strconv.FormatInt(ts, 10) +
		"&auth_version=1.0" +
		"&body_md5=" + hex.EncodeToString(sum[:])
}

// stringToSign is "METHOD\nPATH\nsorted query".
func stringToSign(method, path, params string) string {
	return method + "\n" + path + "\n" + params
}

func hmacHex(secret, msg string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(msg))
	return hex.EncodeToString(m.Sum(nil))
}

// signedQuery returns the full query string (without '?') for a signed
// Pusher HTTP API request.
func signedQuery(method, path, key, secret string, body []byte, ts int64) string {
	params := authParams(key, body, ts)
	return params + "&auth_signature=" + hmacHex(secret, stringToSign(method, path, params))
}
