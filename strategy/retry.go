package strategy

import (
	"math/rand/v2"
	"time"
)

// RetryPolicy decides when a failed sync or verification is tried again.
type RetryPolicy interface {
	// NextRetry returns the delay before attempt number failures+1, given
	// that failures consecutive attempts (failures >= 1, counting the one
	// that just failed) have failed. missingOnPrimary says the last failure
	// was the primary lacking the bytes.
	NextRetry(failures int, missingOnPrimary bool) time.Duration
}

// Backoff is the default RetryPolicy: exponential growth with jitter up to
// a cap. The delay for the n-th consecutive failure is
// Base·2^(n-1), plus up to Jitter of that (uniformly random), capped at Max
// (MaxMissing when the bytes are missing on the primary).
type Backoff struct {
	Base       time.Duration // first delay; 0 means BackoffBaseDefault
	Max        time.Duration // cap; 0 means BackoffMaxDefault
	MaxMissing time.Duration // cap when missing on primary; 0 means BackoffMaxMissingDefault
	Jitter     float64       // fraction of the delay added at random; 0 means BackoffJitterDefault, negative means none
}

// Backoff's defaults.
const (
	BackoffBaseDefault       = 10 * time.Second
	BackoffMaxDefault        = time.Hour
	BackoffMaxMissingDefault = 4 * time.Hour
	BackoffJitterDefault     = 0.25
)

// DefaultBackoff is the policy the engines use unless configured otherwise.
func DefaultBackoff() Backoff { return Backoff{} }

// NextRetry implements RetryPolicy.
func (b Backoff) NextRetry(failures int, missingOnPrimary bool) time.Duration {
	base, limit := b.Base, b.Max
	if base <= 0 {
		base = BackoffBaseDefault
	}
	if limit <= 0 {
		limit = BackoffMaxDefault
	}
	if missingOnPrimary {
		limit = b.MaxMissing
		if limit <= 0 {
			limit = BackoffMaxMissingDefault
		}
	}
	if failures < 1 {
		failures = 1
	}
	d := base
	for i := 1; i < failures && d < limit; i++ {
		d *= 2
	}
	jitter := b.Jitter
	if jitter == 0 {
		jitter = BackoffJitterDefault
	}
	if jitter > 0 {
		d += time.Duration(rand.Float64() * jitter * float64(d))
	}
	if d > limit {
		d = limit
	}
	return d
}
