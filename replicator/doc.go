// Package replicator turns the registry (what a secondary tracks) and the
// strategies (what an adopter says about each type) into replication.
//
// It holds the explicit [Set] of registered types and the wiring of both
// sites:
//
//   - [NewPrimary] serves the registered types over the transfer endpoint
//     ([Primary.Handler]), publishes their events ([Primary.Publisher],
//     called inside the application's transactions) and, in
//     [Primary.Run], keeps their checksums and prunes the outbox.
//   - [NewSecondary] runs, in [Secondary.Run], for every registered type,
//     the sync engine (claims due registry rows within one concurrency
//     budget, downloads, settles by the rules R1–R7), the consistency
//     engine (backfill of missing rows, removal of orphans), the event
//     consumer, verification and the existence scan.
//
// [PrimaryConfig] and [SecondaryConfig] name every default as a constant
// ([LeaseDefault], [SyncCapacityPerTypeDefault], ...); a bad field is an
// error matching [ErrInvalidConfig] that names it. An [Observer] (embed
// [NopObserver]) receives the engines' events, for metrics
// (replicator/metrics) and audits. [Secondary.Status] and [ReadStatus]
// report progress and health.
//
// Adopters implement strategies (package strategy), not the [Replicator]
// interface: the framework builds each type's Replicator from its
// strategy's kind.
//
// Several Secondary processes may share one tracking database: rows are
// claimed with FOR UPDATE SKIP LOCKED, and singleton loops run under
// PostgreSQL advisory locks. [geo architecture] gives the design and the
// rules; [Operating geo] every setting and what to watch.
//
// [geo architecture]: https://github.com/geoframework/geo/blob/main/docs/architecture.md
// [Operating geo]: https://github.com/geoframework/geo/blob/main/docs/operations.md
package replicator
