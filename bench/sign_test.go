package main

import (
	"crypto/md5"
	"encoding/hex"
	"testing"
)

// The worked example from Pusher's HTTP API reference.
func TestSignedQueryPusherExample(t *testing.T) {
	const (
		key    = "278d425bdf160c739803"
		secret = "7ad3773142a6692b25b8"
		path   = "/apps/3/events"
		ts     = 1353088179
	)
	body := []byte(`{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}`)

	sum := md5.Sum(body)
	if got := hex.EncodeToString(sum[:]); got != "ec365a775a4cd0599faeb73354201b6f" {
		t.Fatalf("body_md5 = %s", got)
	}
	wantToSign := "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
	if got := stringToSign("POST", path, authParams(key, body, ts)); got != wantToSign {
		t.Fatalf("string to sign:\n got %q\nwant %q", got, wantToSign)
	}
	want := "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f" +
		"&auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
	if got := signedQuery("POST", path, key, secret, body, ts); got != want {
		t.Fatalf("signed query:\n got %s\nwant %s", got, want)
	}
}
