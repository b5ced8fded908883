package registry

import (
	"strconv"
	"time"
)

// State is a registry row's sync state, stored as a smallint.
type State int16

// Sync states. The numbers are persisted and never change.
const (
	// StatePending: the record must be synced; claimable at once.
	StatePending State = 0
	// StateStarted: a worker holds the row under a lease.
	StateStarted State = 1
	// StateSynced: the bytes at BlobKey are complete and durable.
	StateSynced State = 2
	// StateFailed: the last attempt failed; claimable again at RetryAt.
	StateFailed State = 3
)

// String returns the state's lowercase name ("pending"), or "state(N)" for
// an unknown value.
func (s State) String() string {
	switch s {
	case StatePending:
		return "pending"
	case StateStarted:
		return "started"
	case StateSynced:
		return "synced"
	case StateFailed:
		return "failed"
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// VerificationState is a registry row's verification state, stored as a
// smallint.
type VerificationState int16

// Verification states. The numbers are persisted and never change.
const (
	VerificationPending   VerificationState = 0
	VerificationStarted   VerificationState = 1
	VerificationSucceeded VerificationState = 2
	VerificationFailed    VerificationState = 3
	VerificationDisabled  VerificationState = 4
)

// String returns the verification state's lowercase name ("succeeded"), or
// "verification_state(N)" for an unknown value.
func (s VerificationState) String() string {
	switch s {
	case VerificationPending:
		return "pending"
	case VerificationStarted:
		return "started"
	case VerificationSucceeded:
		return "succeeded"
	case VerificationFailed:
		return "failed"
	case VerificationDisabled:
		return "disabled"
	}
	return "verification_state(" + strconv.Itoa(int(s)) + ")"
}

// Key identifies a registry row: a replicable type's name and the id of a
// record of that type on the primary.
type Key struct {
	Replicable string
	ModelID    int64
}

// Row is a registry row with every column. Nullable columns map to their
// zero value when NULL: "" for text, the zero time.Time for timestamps, 0
// for numbers.
type Row struct {
	Replicable       string
	ModelID          int64
	State            State
	Seq              int64
	RetryCount       int
	RetryAt          time.Time
	LastSyncedAt     time.Time
	LastSyncFailure  string
	MissingOnPrimary bool
	BlobKey          string
	BlobSize         int64
	LeaseOwner       string
	LeaseExpiresAt   time.Time

	VerificationState              VerificationState
	VerificationChecksum           string
	VerificationChecksumMismatched string
	ChecksumMismatch               bool
	VerifiedAt                     time.Time
	VerificationRetryCount         int
	VerificationRetryAt            time.Time
	VerificationFailure            string
	VerificationStartedAt          time.Time

	CreatedAt time.Time
	UpdatedAt time.Time
}

// Key returns the row's key.
func (r Row) Key() Key { return Key{Replicable: r.Replicable, ModelID: r.ModelID} }

// Counts summarizes one replicable type's registry rows. Its JSON names
// are snake_case, as the rest of a status report's.
type Counts struct {
	Total   int64 `json:"total"`
	Pending int64 `json:"pending"`
	Started int64 `json:"started"`
	Synced  int64 `json:"synced"`
	Failed  int64 `json:"failed"`

	VerificationPending   int64 `json:"verification_pending"`
	VerificationStarted   int64 `json:"verification_started"`
	VerificationSucceeded int64 `json:"verification_succeeded"`
	VerificationFailed    int64 `json:"verification_failed"`
	VerificationDisabled  int64 `json:"verification_disabled"`

	// ChecksumMismatch counts rows whose bytes differ from the primary's.
	ChecksumMismatch int64 `json:"checksum_mismatch"`
	// MissingOnPrimary counts rows whose last failure was the primary
	// lacking the bytes.
	MissingOnPrimary int64 `json:"missing_on_primary"`
}
