package xfer

import (
	"strconv"
	"testing"
)

// FuzzParseID checks that the transfer path's id parser accepts exactly the
// canonical-or-zero-padded decimal int64s >= 0 and never panics.
func FuzzParseID(f *testing.F) {
	for _, s := range []string{"0", "1", "007", "-1", "+1", " 1", "1 ", "9223372036854775807", "9223372036854775808", "99999999999999999999", "0x1", "1e3", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := parseID(s)
		want, werr := strconv.ParseInt(s, 10, 64)
		canonical := werr == nil && want >= 0 && s != "" && s[0] != '+' && s[0] != '-' && len(s) <= 19
		if canonical != (err == nil) {
			t.Fatalf("parseID(%q) = %d, %v; strconv says %d, %v", s, id, err, want, werr)
		}
		if err == nil && id != want {
			t.Fatalf("parseID(%q) = %d, want %d", s, id, want)
		}
	})
}
