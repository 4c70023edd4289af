// Package jsonx holds the project's one way to normalise JSON values that
// serve as keys (presence user ids) and to encode them unchanged.
package jsonx

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
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

// AppendQuoted appends text as a JSON string: what Pusher's internal
// events carry as their data, a JSON document inside a string. It does the
// work of json.Marshal(string(text)) in one pass without reflection, for
// the largest frames the server builds (a presence channel's member list):
// '"', '\' and control characters are escaped, invalid UTF-8 becomes
// U+FFFD, and U+2028 and U+2029 are escaped for JavaScript's sake. HTML
// characters are kept, as JSON.stringify keeps them.
func AppendQuoted(dst, text []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(text); {
		c := text[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, text[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(text[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, text[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, text[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, text[start:]...)
	return append(dst, '"')
}
