package main

import (
	"errors"
	"strconv"
	"testing"
)

// FuzzParseAfter checks the parser of geoctl's --after cursor ("TYPE:ID",
// or "ID" with --type), the CLI's one hand-written parser of record ids
// (--id goes through pflag's int64 slice): it never panics, an error is a
// usage error (exit code 2), and an accepted cursor prints back to one
// that parses to the same key.
func FuzzParseAfter(f *testing.F) {
	for _, s := range []struct{ after, typ string }{
		{"item:5", ""}, {"5", "item"}, {"5", ""}, {":5", ""}, {"item:", ""}, {"item:-1", ""}, {"item:+1", ""},
		{"item:9223372036854775808", ""}, {"a:b:3", ""}, {"item: 5", ""}, {"", "item"}, {"item:0x10", ""},
	} {
		f.Add(s.after, s.typ)
	}
	f.Fuzz(func(t *testing.T, after, typ string) {
		k, err := parseAfter(after, typ)
		if err != nil {
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Fatalf("parseAfter(%q, %q) = %v, want a usage error", after, typ, err)
			}
			return
		}
		if k.Replicable == "" {
			t.Fatalf("parseAfter(%q, %q) accepted an empty type", after, typ)
		}
		again, err := parseAfter(k.Replicable+":"+strconv.FormatInt(k.ModelID, 10), "")
		if err != nil || again != k {
			t.Fatalf("parseAfter(%q, %q) = %+v, which prints to a cursor parsing to %+v, %v", after, typ, k, again, err)
		}
	})
}
