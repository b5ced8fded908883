// Package regstore is the engines' side of the registry: the PostgreSQL
// statements that claim, lease, stage and settle rows of the sync,
// verification and checksum queues (one lease protocol for the three: see
// Lease), mark rows pending, backfill them, remove them with their keys'
// bytes under the key-reference rule (R7), and keep the processes'
// heartbeats. The rules R1–R7 (docs/architecture.md) are kept here, so
// only geo's engines may call it; adopters read the registry and act on it
// through the public package registry.
//
// Not a stable API: it changes with the engines.
package regstore
