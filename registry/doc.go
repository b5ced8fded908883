// Package registry is a secondary's tracking state as an operator sees it:
// one [Row] per replicated record with its sync [State] and
// [VerificationState], the reads and actions of admin tools and status
// pages ([Store]), the primary's checksum table ([Checksums]), and the
// embedded SQL migrations of the tracking and primary databases
// ([MigrateTracking], [MigratePrimary], and as files: [TrackingMigrations],
// [PrimaryMigrations]).
//
// Reads are [Store.Get], [Store.Counts], [Store.Failed],
// [Store.TopFailures], [Store.FailedWithReason] and [Store.Processes]. The
// actions are [Store.Resync] and [Store.Reverify] (some rows),
// [Store.ResyncBatches] and [Store.ReverifyBatches] (a type's failed rows
// or all of them, in batches that can be resumed), with dry-run counts,
// and [Store.Pause] and [Store.Resume]. They are safe beside running
// secondaries: a resync gives a row a new generation, so a sync in flight
// cannot settle it (R1), and a reverify takes away a verification in
// flight.
//
// The engines' side of the registry (claims, leases, staging and settles,
// which keep the rules R1–R7) is not here: it is geo's own. All times the
// actions record come from [Options].Now, never from the database clock.
//
// registry knows nothing of HTTP, storage, strategies or engines.
package registry
