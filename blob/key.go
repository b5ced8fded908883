package blob

import (
	"fmt"
	"strings"
)

// MaxKeyLen is the longest key, in bytes, that ValidateKey accepts.
const MaxKeyLen = 1024

// ReservedPrefix starts every key that backends keep for themselves (Dir
// keeps its temporary files under "<root>/.geo-tmp/"). ValidateKey rejects
// keys that start with it.
const ReservedPrefix = ".geo-tmp"

// ValidateKey reports whether key can address a blob. A valid key is 1 to
// MaxKeyLen bytes of slash-separated, non-empty segments, none of them "."
// or "..", with no leading or trailing slash, no NUL byte, no backslash, and
// not starting with ReservedPrefix. For a valid key, filepath.Join(root, key)
// always lies inside root and filepath.Clean(key) == key.
//
// The error wraps ErrInvalidKey. It names the rule broken but never quotes
// the key, which may be hostile.
func ValidateKey(key string) error {
	reason := keyProblem(key)
	if reason == "" {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrInvalidKey, reason)
}

func keyProblem(key string) string {
	switch {
	case key == "":
		return "empty"
	case len(key) > MaxKeyLen:
		return fmt.Sprintf("longer than %d bytes", MaxKeyLen)
	case key[0] == '/':
		return "absolute"
	case strings.IndexByte(key, 0) >= 0:
		return "contains NUL"
	case strings.IndexByte(key, '\\') >= 0:
		return "contains a backslash"
	case strings.HasPrefix(key, ReservedPrefix):
		return "reserved prefix " + ReservedPrefix
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch seg {
		case "":
			return "empty segment"
		case ".", "..":
			return "dot segment"
		}
	}
	return ""
}
