// Package ascii compares and lower-cases strings by their ASCII letters only, as HTTP
// does for header values, schemes and media types; other bytes compare as they are
// (strings.EqualFold would also fold Unicode, e.g. "ſ" with "s").
package ascii

// EqualFold reports whether s and t are equal ignoring the case of ASCII letters.
func EqualFold(s, t string) bool {
	return len(s) == len(t) && HasPrefixFold(s, t)
}

// HasPrefixFold reports whether s begins with prefix, ignoring the case of ASCII letters.
func HasPrefixFold(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		if lower(s[i]) != lower(prefix[i]) {
			return false
		}
	}
	return true
}

// ToLower lower-cases the ASCII letters of s; s itself when it has none to change.
func ToLower(s string) string {
	for i := 0; i < len(s); i++ {
		if isUpper(s[i]) {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				b[j] = lower(b[j])
			}
			return string(b)
		}
	}
	return s
}

func isUpper(c byte) bool { return 'A' <= c && c <= 'Z' }

func lower(c byte) byte {
	if isUpper(c) {
		return c + 'a' - 'A'
	}
	return c
}
