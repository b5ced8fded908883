// Package events is the primary's outbox of replication events and the
// secondary's consumer of it.
//
// # Publishing (primary)
//
// The application calls a [Publisher] inside the same transaction that
// changes its own rows, so an event exists if and only if the change
// committed (the transactional outbox pattern). Each event names a
// registered replicable type, an [Op] ([OpCreated], [OpUpdated],
// [OpDeleted]), the
// record's id and, for deletes, the blob key, so the secondary can remove
// bytes of a record it can no longer look up. A key must pass
// [strategy.ValidateKey], checked at publish time so a bad key fails in the
// application's transaction, not later on a secondary. A publish also sends a
// NOTIFY on NotifyChannel at commit: a wake-up hint, never the delivery.
//
// # Consuming (secondary)
//
// A [Consumer] reads geo_events through a read-only handle to the primary (a
// streaming hot standby in production) and keeps its cursor in the
// secondary's tracking database. The cursor is (xid8 of the writing
// transaction, id), and a read only returns events whose xid is below the
// snapshot's xmin, i.e. whose transaction and every older one have ended.
// A bigserial id alone would skip an event whose transaction took its id
// early and committed late; the xmin bound never does, on a standby as on
// the primary (this is Watermill SQL's PostgreSQL offsets adapter's
// approach). Delivery is at least once and in (xid, id) order; an event
// only tells the secondary to re-check a record, so handlers are
// idempotent and the truth is re-read from the primary.
//
// # Positions
//
// [Publisher.Publish] returns the [Position] (xid, id) of the event it
// wrote, and a Consumer's cursor ([Stats].Cursor) is a Position: once the
// publishing transaction has committed, a cursor at or past it means the
// event, and every committed event before it, has been handled (see
// Position for the exact guarantee and its limits). Positions travel over
// HTTP in [PositionHeader], in the text form [ParsePosition] reads.
//
// One Consumer per tracking database and name is active, under a
// PostgreSQL session advisory lock; others wait and take over. A new
// consumer starts at the end of the log: earlier records are the
// consistency pass's (backfill's) job.
//
// # Retention (primary)
//
// [Prune] and [RunPruner] delete events older than the retention period whose
// transaction is below the snapshot's xmin (so an event is never pruned
// while an older transaction that may still publish is open), and record
// the highest (xid, id) deleted in geo_events_pruned. A consumer whose
// cursor is older than that mark has missed events: it reports
// Stats.FellBehind and calls [ConsumerConfig].OnFellBehind, still delivers
// every event that was not pruned, and moves its cursor to the mark once
// none is left before it. The pruned events are lost: a full consistency
// pass restores missed creates and deletes but not missed updates (see
// ConsumerConfig.OnFellBehind).
//
// The tables (geo_events, geo_events_pruned on the primary;
// geo_event_cursor on the tracking database) are created by the registry
// package's migrations (registry.MigratePrimary, registry.MigrateTracking).
//
// events is not where events are acted on: it neither touches registry rows
// nor moves bytes. The replicator's Handler does that.
package events
