// Package registry is the secondary's tracking state: one row per
// replicated record with its sync and verification state machines, the
// PostgreSQL store that claims and settles work, and the embedded SQL
// migrations for the tracking and primary databases.
//
// The Store enforces the registry's rules in the database: a row's seq is
// a generation re-assigned whenever it becomes pending, and every settle
// checks it, so an event during a sync is never lost (R1); settles publish
// bytes and deletes remove them while holding the row lock, so a deleted
// record is never resurrected (R2); claims carry leases that another owner
// takes over once expired (R3); failures back off per the configured
// strategy.RetryPolicy with a retry_count only success resets (R4). All
// times come from Options.Now, never from the database clock.
//
// registry knows nothing of HTTP, storage or strategies: callers pass
// publish and remove callbacks that move bytes.
package registry
