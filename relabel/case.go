package relabel

import (
	"unicode"
	"unicode/utf8"
)

// The lowercase and uppercase actions call strings.ToLower and
// strings.ToUpper, which map rune by rune with unicode.ToLower/ToUpper
// (strings.Map) and replace each invalid UTF-8 byte with U+FFFD. These
// functions do the same into a caller's buffer instead of a new string.

// caseChanges reports whether mapping b changes it.
func caseChanges(b []byte, upper bool) bool {
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			// Fast path: ASCII.
			if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
				return true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			return true // Invalid UTF-8 becomes U+FFFD.
		}
		if mapRune(r, upper) != r {
			return true
		}
		i += size
	}
	return false
}

// appendCase appends b mapped to lower or upper case to dst.
func appendCase(dst, b []byte, upper bool) []byte {
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			// Fast path: ASCII.
			if upper && 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			} else if !upper && 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			dst = append(dst, c)
			i++
			continue
		}
		// An invalid byte decodes as utf8.RuneError of size 1, which maps
		// to itself and is encoded as U+FFFD, as strings.Map does.
		r, size := utf8.DecodeRune(b[i:])
		dst = utf8.AppendRune(dst, mapRune(r, upper))
		i += size
	}
	return dst
}

func mapRune(r rune, upper bool) rune {
	if upper {
		return unicode.ToUpper(r)
	}
	return unicode.ToLower(r)
}
