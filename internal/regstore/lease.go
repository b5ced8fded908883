package regstore

import (
	"errors"
	"fmt"
	"time"
)

// geo leases work in three queues, with one protocol:
//
//   - sync: registry rows due for a sync (Claim, RenewLeases, Release,
//     SettleSyncedBatch / SettleFailed / DeleteIfClaim);
//   - verification: synced rows due for a check of their local copy
//     (ClaimVerification, RenewVerification, ReleaseVerification,
//     SettleVerified / SettleVerifyPending / SettleVerifyFailed);
//   - checksums: the primary's geo_checksums rows due for a checksum
//     (ChecksumStore.ClaimChecksums, RenewChecksums, ReleaseChecksums,
//     SettleChecksum / FailChecksum / DeleteChecksumIfClaim).
//
// In each, a claim takes due rows with FOR UPDATE SKIP LOCKED in one
// statement and leases them to a Lease's owner until now + its Duration;
// the holder renews every Duration/3 while it works; a settle changes a
// row only if the claim is still current (same generation, still leased
// to the owner), so a row taken away (an update, a delete, an expired
// lease reclaimed by another process) is never settled by a stale
// claim; shutdown releases what was not settled; and every queue's claim
// also takes rows whose lease expired (a dead process's), so nothing
// stays claimed past a lease. Claims take a parameter struct with the
// Lease first.

// Lease is who holds claimed rows, and for how long without renewal.
type Lease struct {
	// Owner names the holding process, unique among live ones (for
	// example host, pid and a random suffix).
	Owner string
	// Duration is how long the rows stay leased without a renewal.
	Duration time.Duration
}

// validate reports a lease that cannot be used by op.
func (l Lease) validate(op string) error {
	if l.Owner == "" {
		return fmt.Errorf("registry: %s: %w", op, errEmptyOwner)
	}
	if l.Duration <= 0 {
		return fmt.Errorf("registry: %s: lease duration %v, want > 0", op, l.Duration)
	}
	return nil
}

// errEmptyOwner is the error for a Lease without an owner.
var errEmptyOwner = errors.New("lease has no owner")

// ClaimParams says what Claim takes for whom.
type ClaimParams struct {
	Lease Lease
	// Limits caps the rows claimed per type; entries naming the same type
	// add up, limits of 0 or less yield nothing.
	Limits []TypeLimit
}

// VerifyClaimParams says what ClaimVerification takes for whom.
type VerifyClaimParams struct {
	Lease      Lease
	Replicable string
	// Limit is the most rows claimed (at least 1).
	Limit int
	// ReverifyInterval is how long a verified copy stays trusted: rows
	// verified longer ago are due again (positive).
	ReverifyInterval time.Duration
}

// ChecksumClaimParams says what ChecksumStore.ClaimChecksums takes for
// whom.
type ChecksumClaimParams struct {
	Lease      Lease
	Replicable string
	// Limit is the most rows claimed (at least 1).
	Limit int
	// ReverifyInterval is how long a stored checksum stays trusted: rows
	// checksummed longer ago are due again (positive).
	ReverifyInterval time.Duration
}
