// Package registry is the secondary's tracking state: one row per
// replicated record with its sync and verification state machines, the
// PostgreSQL store that claims and settles work, and the embedded SQL
// migrations for the tracking and primary databases.
//
// registry knows nothing of HTTP, storage or strategies.
package registry
