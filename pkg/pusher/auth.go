package pusher

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
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
