package replicator

import "time"

// SyncOutcome classifies how one sync attempt ended, for metrics.
type SyncOutcome string

// Sync outcomes reported to an Observer.
const (
	ResultSynced           SyncOutcome = "synced"             // bytes downloaded, verified and committed
	ResultSkipped          SyncOutcome = "skipped"            // bytes already present and matching: no download
	ResultFailed           SyncOutcome = "failed"             // will be retried with backoff
	ResultMissingOnPrimary SyncOutcome = "missing_on_primary" // failed: the primary lacks the bytes
	ResultRemoved          SyncOutcome = "removed"            // the record is gone or out of scope: row and bytes removed
	ResultSuperseded       SyncOutcome = "superseded"         // the row changed while syncing; the result was discarded
	ResultReleased         SyncOutcome = "released"           // shutdown interrupted the sync; the row was released
)

// Observer receives engine events, for metrics. Implementations must be
// safe for concurrent use and fast (they run on the engines' paths).
type Observer interface {
	// SyncDone reports one finished sync attempt.
	SyncDone(replicable string, outcome SyncOutcome, bytes int64, d time.Duration)
	// VerifyDone reports one verification of local data.
	VerifyDone(replicable string, ok bool, d time.Duration)
	// EventsSkipped reports outbox events skipped as unknown or malformed.
	EventsSkipped(reason string, n int)
	// LocalMissing reports n synced records of replicable whose bytes the
	// existence scan found missing from the site's storage (they are
	// downloaded again).
	LocalMissing(replicable string, n int)
}

type nopObserver struct{}

func (nopObserver) SyncDone(string, SyncOutcome, int64, time.Duration) {}
func (nopObserver) VerifyDone(string, bool, time.Duration)             {}
func (nopObserver) EventsSkipped(string, int)                          {}
func (nopObserver) LocalMissing(string, int)                           {}
