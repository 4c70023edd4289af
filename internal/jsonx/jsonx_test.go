package jsonx

import (
	"encoding/json"
	"testing"
)

func TestCanonical(t *testing.T) {
	for in, want := range map[string]string{
		`"<b>"`:           `"<b>"`,
		`"\u003cb\u003e"`: `"<b>"`,
		` "a&b" `:         `"a&b"`,
		`"\u0041"`:        `"A"`,
		`"line\nbreak"`:   `"line\nbreak"`,
		`1`:               `1`,
		`1.0`:             `1.0`,
		`{ "a" : 1 }`:     `{"a":1}`,
		`not json`:        `not json`,
		`"unterminated`:   `"unterminated`,
	} {
		if got := string(Canonical(json.RawMessage(in))); got != want {
			t.Errorf("Canonical(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestMarshalKeepsRawValues(t *testing.T) {
	b, err := Marshal(struct {
		ID json.RawMessage `json:"id"`
	}{json.RawMessage(`"<b>&"`)})
	if err != nil || string(b) != `{"id":"<b>&"}` {
		t.Fatalf("Marshal = %s, %v", b, err)
	}
}

// AppendQuoted must decode to exactly its input wherever the input is
// valid UTF-8, and to what json.Marshal makes of it where it is not.
func TestAppendQuoted(t *testing.T) {
	for _, in := range []string{
		``, `plain`, `{"a":"b\"c","d":[1,2]}`, "tab\tnl\ncr\r\x00\x1f\x7f",
		`back\slash`, "<b>&</b>", "é漢字🎉", "\u2028\u2029", "bad\xffutf8\xc3", "\xed\xa0\x80",
	} {
		got := AppendQuoted([]byte("x"), []byte(in))
		if got[0] != 'x' {
			t.Fatalf("%q: prefix lost", in)
		}
		var back, want string
		if err := json.Unmarshal(got[1:], &back); err != nil {
			t.Fatalf("%q: %s is not a JSON string: %v", in, got[1:], err)
		}
		std, _ := json.Marshal(in)
		json.Unmarshal(std, &want)
		if back != want {
			t.Errorf("%q: decodes to %q, json.Marshal's to %q", in, back, want)
		}
	}
}

func FuzzAppendQuoted(f *testing.F) {
	f.Add([]byte(`{"user_id":"1","user_info":{"name":"é"}}`))
	f.Add([]byte("\xff\x00\u2028"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var back, want string
		if err := json.Unmarshal(AppendQuoted(nil, in), &back); err != nil {
			t.Fatalf("%q: not a JSON string: %v", in, err)
		}
		std, _ := json.Marshal(string(in))
		json.Unmarshal(std, &want)
		if back != want {
			t.Fatalf("%q: decodes to %q, json.Marshal's to %q", in, back, want)
		}
	})
}
