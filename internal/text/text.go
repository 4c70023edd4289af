// Package text holds the checks of operator-given names that several
// packages make alike.
package text

import (
	"unicode"
	"unicode/utf8"
)

// Printable reports whether s is valid UTF-8 without control characters.
func Printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}
