package replicator

import (
	"context"
	"errors"
	"time"
)

// ErrGone is returned (wrapped) by Replicator.Sync when the record no longer
// exists or has left the secondary's scope. The sync engine then removes
// the record's data and registry row (a row for it must not exist).
var ErrGone = errors.New("record gone or out of scope")

// Replicator is the secondary side of one registered type: what the
// engines drive for it, whatever its kind. The framework builds one per
// registered strategy, from the strategy's kind (see [Set.Register] and
// "Kinds of replicable" in [geo architecture]); adopters implement
// strategies, not Replicators. Methods are called concurrently, for
// different records.
//
// A record's data lives at a locator: the storage key of a blob, the
// relative path of a repository. Records naming the same locator at the
// same time name the same data, and the engine, not the Replicator,
// decides when the data at a locator may go (R7: when no registry row
// records or stages it).
//
// [geo architecture]: https://github.com/geoframework/geo/blob/main/docs/architecture.md
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

	// Remove deletes the data at locator from the secondary, for record id
	// ("" when the locator is unknown: then nothing is removed). The
	// engine calls it only once no registry row records or stages the
	// locator. Removing what is not there is not an error.
	Remove(ctx context.Context, id int64, locator string) error

	// Verify checks the data stored for record id at locator against
	// primaryChecksum (lowercase hex SHA-256, "" when the primary has none)
	// and returns the local checksum. A mismatch is reported in the result,
	// not as an error; missing local data is an error matching
	// ErrLocalMissing.
	Verify(ctx context.Context, id int64, locator string, primaryChecksum string) (VerifyResult, error)
}

// ErrLocalMissing is returned (wrapped) by Replicator.Verify when the data
// is not on the secondary.
var ErrLocalMissing = errors.New("missing on secondary")

// errSkippedBytesGone is returned (wrapped) by a Staged's Commit when its
// sync skipped the download because the data was present, and the data
// was gone by the settle: the engine syncs the record again at once,
// downloading (Job.Redownload).
var errSkippedBytesGone = errors.New("data found at sync time was gone at settle")

// errStaleStage is returned (wrapped) by a Staged's Commit when the local
// copy its sync fetched against changed before the commit (a repository
// stage whose live copy was replaced or removed): nothing was published,
// and the engine syncs the record again at once (Job.Redownload).
var errStaleStage = errors.New("the local copy changed between the fetch and the commit")

// errLocalDamaged is returned (wrapped) by Replicator.Verify when the
// local copy is there but damaged in a way its checksum does not show (a
// repository whose refs match the primary's, with objects missing or
// corrupt): verification fails and the record is synced again, with
// Job.Repair set.
var errLocalDamaged = errors.New("local copy damaged")

// Job describes one claimed record for Replicator.Sync.
type Job struct {
	ModelID int64
	// Locator is where the record's data lives (a blob's storage key) as
	// the engine resolved it when it claimed the record, "" when it did
	// not: the replicator then looks it up itself.
	Locator string
	// RecordedLocator is the locator recorded at the previous successful
	// sync, "" when there was none. The engine, not the replicator,
	// removes data at locators a row stops naming, when no other row
	// names them (R7).
	RecordedLocator string
	// Redownload is true when the data must be fetched even if a copy at
	// the target already matches the primary's checksum: an earlier try
	// under this claim skipped the download and found the copy gone when
	// it settled. Otherwise a replicator may skip the download whenever
	// the local copy matches (a restore, a re-added site, a locator shared
	// with another record).
	Redownload bool
	// PrimaryChecksum is the primary's recorded checksum, "" when unknown.
	PrimaryChecksum string
	// Repair is true when the row's last verification failed (a mismatch,
	// or a copy missing or damaged): the replicator must not trust the
	// local copy, neither to skip the transfer nor to fetch only what it
	// lacks (a repository is fetched whole and replaces the copy).
	Repair bool
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
	Locator         string        // where the data goes (a blob's storage key)
	Size            int64         // bytes transferred or found
	Checksum        string        // lowercase hex SHA-256 of the data (a kind defines what it hashes)
	PrimaryChecksum string        // the primary's checksum the data matched; "" when it had none
	Skipped         bool          // true when nothing was downloaded (data already present and verified)
	Duration        time.Duration // transfer time
}

// VerifyResult is the outcome of checking stored data.
type VerifyResult struct {
	Checksum string // lowercase hex SHA-256 of the stored data
	Size     int64
	Match    bool // Checksum equals the primary checksum (false when that is unknown)
}
