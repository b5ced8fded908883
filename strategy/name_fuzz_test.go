package strategy

import (
	"errors"
	"strings"
	"testing"
)

// FuzzValidateName checks the replicable name check that guards names
// arriving from outside (the transfer path, outbox events, geoctl flags):
// it accepts exactly 1 to 63 characters of [a-z0-9_] starting with a
// letter, so an accepted name is always safe as a URL path segment and a
// label, and it never panics.
func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"package_file", "a", "", "A", "1abc", "_x", "a-b", "a/b", "a..b", strings.Repeat("a", 63), strings.Repeat("a", 64), "é", "a\x00", "item\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := ValidateName(s)
		want := len(s) >= 1 && len(s) <= 63 && s[0] >= 'a' && s[0] <= 'z'
		for i := 0; i < len(s) && want; i++ {
			c := s[i]
			want = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_'
		}
		if (err == nil) != want {
			t.Fatalf("ValidateName(%q) = %v, want ok=%v", s, err, want)
		}
		if err != nil && !errors.Is(err, ErrInvalidName) {
			t.Fatalf("ValidateName(%q) = %v, want an error matching ErrInvalidName", s, err)
		}
	})
}
