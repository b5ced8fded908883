package blob

import (
	"errors"
	"strings"
	"testing"

	"github.com/geoframework/geo/strategy"
)

// TestValidateKeyIsStrategys: blob's key check is strategy's (the rules
// are tested, and fuzzed, there), and its sentinel is the same value, so
// errors.Is matches an invalid key with either name whoever checked it.
func TestValidateKeyIsStrategys(t *testing.T) {
	if ErrInvalidKey != strategy.ErrInvalidKey {
		t.Fatal("blob.ErrInvalidKey is not strategy.ErrInvalidKey")
	}
	for _, k := range []string{"a", "a/b", "", "/abs", "../../etc/passwd", "a//b", "a\x00b", "a\\b", ".geo-tmp/x", strings.Repeat("k", MaxKeyLen+1)} {
		got, want := ValidateKey(k), strategy.ValidateKey(k)
		if (got == nil) != (want == nil) {
			t.Errorf("ValidateKey(%q) = %v, strategy.ValidateKey = %v: want the same verdict", k, got, want)
			continue
		}
		if got != nil && (!errors.Is(got, ErrInvalidKey) || !errors.Is(got, strategy.ErrInvalidKey)) {
			t.Errorf("ValidateKey(%q) = %v, want an error matching blob.ErrInvalidKey and strategy.ErrInvalidKey", k, got)
		}
	}
}
