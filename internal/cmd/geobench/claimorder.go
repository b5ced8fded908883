package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// claimOrderTarget is the claim-order target: a dead worker's row and a
// due retry are reached within Lease + PollInterval (defaults 30s + 1s).
const claimOrderTarget = float64(30*time.Second+time.Second) / float64(time.Millisecond)

// runClaimOrder: a backlog of N pending rows (records deleted on the
// primary, so each sync is a key lookup and a delete: the engine claims as
// fast as it can), one row claimed by a worker that died, whose lease
// expires 2 s into the run, and one failed row whose retry falls due then.
// The value is the longer of the times from that moment until each of the
// two is claimed by the running secondary, in ms, against the target
// Lease + PollInterval (issue 20, item 2). Before the claim took expired
// leases and a share of due retries first, both waited until the pending
// backlog drained.
func runClaimOrder(ctx context.Context, b *bench, res *result) error {
	n := b.o.n
	b.logf("claim-order: creating %d pending registry rows", n)
	if _, err := b.trackingDB.ExecContext(ctx, `
INSERT INTO geo_registry (replicable, model_id, created_at, updated_at)
SELECT $1, g, now(), now() FROM generate_series(1, $2::bigint) g`, typeName, n); err != nil {
		return err
	}
	due := time.Now().Add(2 * time.Second)
	dead, failed := int64(n+1), int64(n+2)
	if _, err := b.trackingDB.ExecContext(ctx, `
INSERT INTO geo_registry (replicable, model_id, created_at, updated_at, state, lease_owner, lease_expires_at, retry_count, retry_at)
VALUES ($1, $2, now(), now(), 1, 'dead-worker', $4, 0, NULL),
       ($1, $3, now(), now(), 3, NULL, NULL, 1, $4)`, typeName, dead, failed, due); err != nil {
		return err
	}
	if _, err := b.trackingDB.ExecContext(ctx, `VACUUM ANALYZE geo_registry`); err != nil {
		return err
	}
	cfg := b.secondaryConfig(nil)
	cfg.ConsistencyInterval = time.Hour // the backlog is the registry's, not a pass's
	r, err := b.start(cfg)
	if err != nil {
		return err
	}
	// reached reports whether the row left the state it was put in.
	reached := func(id int64, state int16) (bool, error) {
		var st int16
		var owner sql.NullString
		err := b.trackingDB.QueryRowContext(ctx, `SELECT state, lease_owner FROM geo_registry WHERE replicable = $1 AND model_id = $2`,
			typeName, id).Scan(&st, &owner)
		if errors.Is(err, sql.ErrNoRows) {
			return true, nil // synced and removed (the record is gone)
		}
		if err != nil {
			return false, err
		}
		return st != state || (state == 1 && owner.String != "dead-worker"), nil
	}
	var deadAt, failedAt time.Time
	deadline := due.Add(10 * time.Minute)
	for (deadAt.IsZero() || failedAt.IsZero()) && time.Now().Before(deadline) {
		if deadAt.IsZero() {
			if ok, err := reached(dead, 1); err != nil {
				return err
			} else if ok {
				deadAt = time.Now()
			}
		}
		if failedAt.IsZero() {
			if ok, err := reached(failed, 3); err != nil {
				return err
			} else if ok {
				failedAt = time.Now()
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	if deadAt.IsZero() || failedAt.IsZero() {
		return fmt.Errorf("claim-order: not reached within 10 minutes of falling due (expired lease %v, due retry %v)", !deadAt.IsZero(), !failedAt.IsZero())
	}
	var left int64
	if err := b.trackingDB.GetContext(ctx, &left, `SELECT count(*) FROM geo_registry WHERE state = 0`); err != nil {
		return err
	}
	if err := r.stop(); err != nil {
		return err
	}
	ms := func(t time.Time) float64 { return float64(max(t.Sub(due), 0)) / float64(time.Millisecond) }
	res.value, res.unit, res.limit, res.lowerIsBetter = max(ms(deadAt), ms(failedAt)), "ms", claimOrderTarget, true
	res.add("expired lease reclaimed", "%.0f ms after it expired", ms(deadAt))
	res.add("due retry claimed", "%.0f ms after it fell due", ms(failedAt))
	res.add("pending backlog", "%d rows, %d still pending then", n, left)
	res.add("target", "Lease + PollInterval = 30s + 1s (the defaults)")
	return nil
}
