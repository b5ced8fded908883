package replicator

import (
	"context"
	"time"
)

// Timeouts of the statements that must finish even when the engine's
// context has ended: all of them are here. Each runs under detached, which
// keeps ctx's values but not its cancellation, so a shutdown never cuts a
// claim the server may have committed (the rows would stay claimed, unknown
// to this process, until their lease ran out) nor a settle that records
// what a sync or verification did. A statement that outlasts its timeout
// fails like any other, and the lease protocol recovers the rows.
const (
	// claimTimeout bounds a claim of sync or verification rows.
	claimTimeout = 30 * time.Second
	// settleTimeout bounds a settle: a sync's, a batch of syncs', a
	// verification's, a primary checksum's.
	settleTimeout = 30 * time.Second
	// releaseTimeout bounds the release of rows claimed but not worked on.
	releaseTimeout = 10 * time.Second
	// heartbeatRemoveTimeout bounds the removal of the process's heartbeat
	// row at shutdown.
	heartbeatRemoveTimeout = 5 * time.Second
)

// detached returns a context that keeps ctx's values, is not cancelled
// with it and ends after d.
func detached(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), d)
}
