// Package events is the primary's outbox (replication events written in the
// application's own transactions) and the secondary's consumer, which reads
// the outbox in commit order through a read-only replica without ever
// skipping an event whose transaction committed late.
package events
