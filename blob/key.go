package blob

import "github.com/geoframework/geo/strategy"

// MaxKeyLen is the longest key, in bytes, that ValidateKey accepts
// (strategy.MaxKeyLen).
const MaxKeyLen = strategy.MaxKeyLen

// ReservedPrefix starts every key that backends keep for themselves (Dir
// keeps its temporary files under "<root>/.geo-tmp/"). ValidateKey rejects
// keys that start with it (strategy.ReservedKeyPrefix).
const ReservedPrefix = strategy.ReservedKeyPrefix

// ErrInvalidKey is returned (wrapped) for a key that is empty, too long,
// absolute, has an empty, "." or ".." segment, a NUL byte or a backslash,
// or starts with ReservedPrefix. Such a key never touches the disk. It is
// strategy.ErrInvalidKey itself, so errors.Is matches either name.
var ErrInvalidKey = strategy.ErrInvalidKey

// ValidateKey reports whether key can address a blob. It is
// strategy.ValidateKey, the one rule the publisher, the storage backends,
// the transfer path and the engines share: a valid key is 1 to MaxKeyLen
// bytes of slash-separated, non-empty segments, none of them "." or "..",
// with no leading or trailing slash, no NUL byte, no backslash, and not
// starting with ReservedPrefix. For a valid key, filepath.Join(root, key)
// always lies inside root and filepath.Clean(key) == key.
//
// The error wraps ErrInvalidKey. It names the rule broken but never quotes
// the key, which may be hostile.
func ValidateKey(key string) error { return strategy.ValidateKey(key) }
