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
