// Package jsonx holds the project's one way to normalise JSON values that
// serve as keys (presence user ids) and to encode them unchanged.
package jsonx

import (
	"bytes"
	"encoding/json"
)

// Canonical returns one form for each JSON value, so that equal values get
// equal keys wherever they came from: compact, and a string re-encoded
// with its escapes resolved (a client's "\u003cb\u003e" and "<b>" are one
// user id, and so are old log entries that encoding/json HTML-escaped).
// Numbers keep their text (1 and 1.0 stay distinct, as before). Invalid
// JSON is returned unchanged, for validation to reject.
func Canonical(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return raw
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) != nil {
		return raw
	}
	out := buf.Bytes()
	if out[0] != '"' || bytes.IndexByte(out, '\\') < 0 {
		return out
	}
	var s string
	if json.Unmarshal(out, &s) != nil {
		return out
	}
	b, err := Marshal(s)
	if err != nil {
		return out
	}
	return b
}

// Marshal is json.Marshal without HTML escaping, so that raw values inside
// v (json.RawMessage) are written as they are.
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
