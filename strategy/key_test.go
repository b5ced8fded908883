package strategy

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidateKey(t *testing.T) {
	good := []string{"a", "a/b", "packages/1/2/3.tgz", "a.b", "..a", "a..", "a/.hidden", "é/ü", ".geo", "x/.geo-tmp", strings.Repeat("k", KeyLenMax)}
	for _, k := range good {
		if err := ValidateKey(k); err != nil {
			t.Errorf("ValidateKey(%q) = %v, want nil", k, err)
		}
	}
	bad := []string{"", "/abs", "/", "..", ".", "../../etc/passwd", "a/../../b", "a/..", "./a", "a/./b", "a//b", "a/", "a\x00b", "\x00", "a\\b", strings.Repeat("k", KeyLenMax+1)}
	for _, k := range bad {
		err := ValidateKey(k)
		if !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ValidateKey(%q) = %v, want ErrInvalidKey", k, err)
			continue
		}
		if len(k) > 1 && strings.Contains(err.Error(), k) {
			t.Errorf("ValidateKey error %q quotes the hostile key", err)
		}
	}
}

// FuzzValidateKey checks that every key ValidateKey accepts stays inside
// the root when joined to it and is already clean.
func FuzzValidateKey(f *testing.F) {
	for _, k := range []string{"a", "a/b", "../../etc/passwd", "/abs", "a/../../b", "a\x00b", "a//b", "a/", ".", "..", "a/./b", "a\\..\\b", ".geo-tmp/x", "..a/b..", "a/.../b"} {
		f.Add(k)
	}
	const root = "/srv/geo/root"
	f.Fuzz(func(t *testing.T, key string) {
		if err := ValidateKey(key); err != nil {
			if !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("ValidateKey(%q) = %v, want nil or ErrInvalidKey", key, err)
			}
			return
		}
		if c := filepath.Clean(key); c != key {
			t.Fatalf("valid key %q is not clean: Clean gives %q", key, c)
		}
		joined := filepath.Join(root, key)
		rel, err := filepath.Rel(root, joined)
		if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") || !strings.HasPrefix(joined, root+"/") {
			t.Fatalf("valid key %q escapes the root: Join = %q", key, joined)
		}
	})
}
