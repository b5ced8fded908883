// Package replicator turns the registry (what a secondary tracks) and the
// strategies (what an adopter says about each type) into replication.
//
// It holds the Replicator interface the engines drive, the explicit Set of
// registered types, and the wiring of both sites:
//
//   - NewPrimary serves registered types over the transfer endpoint
//     (Primary.Handler) and publishes their events (Primary.Publisher).
//   - NewSecondary runs, for every registered type, the sync engine (claims
//     due registry rows within one concurrency budget, downloads, settles
//     by the rules R1–R6), the consistency engine (backfill of missing rows,
//     removal of orphans), the event consumer and verification.
//
// Several Secondary processes may share one tracking database: rows are
// claimed with FOR UPDATE SKIP LOCKED, and singleton loops run under
// PostgreSQL advisory locks. See docs/architecture.md for the design and
// the rules.
package replicator
