package replicator

import (
	"context"
	"errors"
	"time"
)

// ErrGone is returned (wrapped) by Replicator.Sync when the record no longer
// exists or has left the secondary's scope. The sync engine then removes
// the record's bytes and registry row (a row for it must not exist).
var ErrGone = errors.New("record gone or out of scope")

// Replicator is what the engines drive for one registered type. The
// framework builds one per registered strategy (see NewSecondary); a later
// data type (git repositories, database rows) implements it directly.
// Methods are called concurrently, for different records.
type Replicator interface {
	// Name is the replicable name, as registered.
	Name() string

	// Sync fetches record job.ModelID's current data from the primary and
	// stages it without making it visible. The engine commits the staged
	// data only while holding the registry row with its claim still
	// current, and aborts it otherwise: that is how an update (R1) or a
	// delete (R2) racing the sync wins. On error nothing is staged; errors
	// match ErrGone, transfer.ErrMissingOnPrimary (the row fails with the
	// longer backoff cap) or blob.ErrChecksumMismatch where those apply.
	Sync(ctx context.Context, job Job) (Staged, error)

	// Remove deletes record id's data from the secondary. key is the
	// storage key recorded at the last sync or carried by a deleted event
	// ("" when unknown). Removing what is not there is not an error.
	Remove(ctx context.Context, id int64, key string) error

	// Verify checks the data stored for record id at key against
	// primaryChecksum (lowercase hex SHA-256, "" when the primary has none)
	// and returns the local checksum. A mismatch is reported in the result,
	// not as an error; missing local data is an error matching ErrLocalMissing.
	Verify(ctx context.Context, id int64, key string, primaryChecksum string) (VerifyResult, error)
}

// ErrLocalMissing is returned (wrapped) by Replicator.Verify when the data
// is not on the secondary.
var ErrLocalMissing = errors.New("missing on secondary")

// errSkippedBytesGone is returned (wrapped) by a Staged's Commit when its
// sync skipped the download because the data was present, and the data
// was gone by the settle: the engine syncs the record again at once,
// downloading (Job.Redownload).
var errSkippedBytesGone = errors.New("data found at sync time was gone at settle")

// Job describes one claimed record for Replicator.Sync.
type Job struct {
	ModelID int64
	// Key is the record's storage key as the engine resolved it when it
	// claimed the record (replicators that resolve keys in batches), ""
	// when it did not: the replicator then looks it up itself.
	Key string
	// RecordedKey is the key recorded at the previous successful sync, ""
	// when there was none. The engine, not the replicator, removes data at
	// keys a row stops naming, when no other row names them (R7).
	RecordedKey string
	// Redownload is true when the data must be fetched even if a copy at
	// the target already matches the primary's checksum: an earlier try
	// under this claim skipped the download and found the copy gone when
	// it settled. Otherwise a replicator may skip the download whenever
	// the local copy matches (a restore, a re-added site, a key shared
	// with another record).
	Redownload bool
	// PrimaryChecksum is the primary's recorded checksum, "" when unknown.
	PrimaryChecksum string
}

// Staged is data fetched for one record and not yet visible.
type Staged interface {
	// Result describes what was fetched.
	Result() SyncResult
	// Commit makes the data durable and visible atomically. The engine
	// calls it at most once, with the registry row locked.
	Commit(ctx context.Context) error
	// Abort discards the data; safe after Commit (then it does nothing).
	Abort() error
}

// SyncResult describes a fetched record.
type SyncResult struct {
	Key             string        // storage key the data goes to
	Size            int64         // bytes
	Checksum        string        // lowercase hex SHA-256 of the bytes
	PrimaryChecksum string        // the primary's checksum the bytes matched; "" when it had none
	Skipped         bool          // true when nothing was downloaded (bytes already present and verified)
	Duration        time.Duration // transfer time
}

// VerifyResult is the outcome of checking stored data.
type VerifyResult struct {
	Checksum string // lowercase hex SHA-256 of the stored bytes
	Size     int64
	Match    bool // Checksum equals the primary checksum (false when that is unknown)
}
