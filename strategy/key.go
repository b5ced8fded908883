package strategy

import (
	"errors"
	"fmt"
	"strings"
)

// KeyLenMax is the longest storage key, in bytes, that ValidateKey
// accepts.
const KeyLenMax = 1024

// ErrInvalidKey is returned (wrapped) by ValidateKey for a storage key
// that is empty, too long, absolute, has an empty, "." or ".." segment, a
// NUL byte or a backslash. Such a key never touches a disk. blob.ErrInvalidKey
// is the same value, so errors.Is matches either name.
var ErrInvalidKey = errors.New("invalid blob key")

// ValidateKey reports whether key can address a blob: the one rule shared
// by the publisher (events), the portable storage type (blob.Bucket), the
// transfer path and the engines. A valid key is 1 to KeyLenMax bytes of
// slash-separated, non-empty segments, none of them "." or "..", with no
// leading or trailing slash, no NUL byte and no backslash. For a valid key,
// filepath.Join(root, key) always lies inside root and
// filepath.Clean(key) == key. A backend may reserve some keys for itself
// (blob/dirblob: those starting with ".geo-tmp") and refuse them.
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
	case len(key) > KeyLenMax:
		return fmt.Sprintf("longer than %d bytes", KeyLenMax)
	case key[0] == '/':
		return "absolute"
	case strings.IndexByte(key, 0) >= 0:
		return "contains NUL"
	case strings.IndexByte(key, '\\') >= 0:
		return "contains a backslash"
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
