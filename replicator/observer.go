package replicator

import "time"

// SyncOutcome classifies how one sync attempt ended, for metrics.
type SyncOutcome string

// Sync outcomes reported to an Observer.
const (
	ResultSynced           SyncOutcome = "synced"             // data downloaded, verified and committed
	ResultSkipped          SyncOutcome = "skipped"            // data already present and matching: no download
	ResultFailed           SyncOutcome = "failed"             // will be retried with backoff
	ResultMissingOnPrimary SyncOutcome = "missing_on_primary" // failed: the primary lacks the data
	ResultRemoved          SyncOutcome = "removed"            // the record is gone or out of scope: row and data removed
	ResultSuperseded       SyncOutcome = "superseded"         // the row changed while syncing; the result was discarded
	ResultReleased         SyncOutcome = "released"           // shutdown interrupted the sync; the row was released
)

// SyncEvent is one finished sync attempt on a secondary.
type SyncEvent struct {
	Replicable string
	ModelID    int64
	Outcome    SyncOutcome
	// Bytes is the data transferred: the record's size when Outcome is
	// ResultSynced, 0 otherwise.
	Bytes int64
	// Duration is the attempt's time, from its start to its settle.
	Duration time.Duration
}

// VerifyEvent is one verification of a secondary's local copy.
type VerifyEvent struct {
	Replicable string
	ModelID    int64
	// OK says the copy matched the primary's checksum.
	OK       bool
	Duration time.Duration
}

// TransferEvent is one transfer the primary's endpoint served.
type TransferEvent struct {
	Replicable string
	ModelID    int64
	// Start is when the request arrived, End when the response was
	// written (or failed).
	Start, End time.Time
	// Bytes is the body bytes sent.
	Bytes int64
}

// Observer receives the engines' events, for metrics, audits and tests:
// PrimaryConfig.Observer the primary's, SecondaryConfig.Observer a
// secondary's. Implementations must be safe for concurrent use and fast
// (they run on the engines' paths). Embed NopObserver in an
// implementation: methods added to Observer in later versions then do
// nothing for it instead of breaking its build.
type Observer interface {
	// SyncDone reports one finished sync attempt (secondary).
	SyncDone(SyncEvent)
	// VerifyDone reports one verification of local data (secondary).
	VerifyDone(VerifyEvent)
	// EventsSkipped reports n outbox events skipped for reason:
	// events.SkipUnknownReplicable, events.SkipMalformed or
	// events.SkipInvalidKey
	// (secondary).
	EventsSkipped(reason string, n int)
	// LocalMissing reports n synced records of replicable whose data the
	// existence scan found missing from the site's storage; they are
	// downloaded again (secondary).
	LocalMissing(replicable string, n int)
	// TransferServed reports one transfer the endpoint served (primary).
	TransferServed(TransferEvent)
}

// NopObserver is an Observer that does nothing. Embed it in an Observer
// that handles only some events.
type NopObserver struct{}

// SyncDone does nothing.
func (NopObserver) SyncDone(SyncEvent) {}

// VerifyDone does nothing.
func (NopObserver) VerifyDone(VerifyEvent) {}

// EventsSkipped does nothing.
func (NopObserver) EventsSkipped(string, int) {}

// LocalMissing does nothing.
func (NopObserver) LocalMissing(string, int) {}

// TransferServed does nothing.
func (NopObserver) TransferServed(TransferEvent) {}

// observeTransfer adapts the transfer handler's callback to the Observer.
func (cfg *PrimaryConfig) observeTransfer(replicable string, id int64, start, end time.Time, bytes int64) {
	cfg.Observer.TransferServed(TransferEvent{Replicable: replicable, ModelID: id, Start: start, End: end, Bytes: bytes})
}
