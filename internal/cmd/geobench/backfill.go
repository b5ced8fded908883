package main

import (
	"context"
	"fmt"
	"time"

	"github.com/lib/pq"

	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
)

// defaultBackfillBatch is replicator.SecondaryConfig.BackfillBatchSize's
// default.
const defaultBackfillBatch = 10000

// runBackfill: N records on the primary, none on the secondary; the time
// the consistency engine takes to create all N registry rows, against a
// raw loop that keyset-fetches the same ids in the same page size and
// inserts them into a bare table of the same shape with unnest. Then the
// time of a second, no-op pass.
func runBackfill(ctx context.Context, b *bench, res *result) error {
	n := b.o.n
	batch := b.o.batch
	if batch == 0 {
		batch = defaultBackfillBatch
	}
	b.logf("backfill: creating %d records on the primary", n)
	if err := b.insertItems(ctx, n); err != nil {
		return err
	}

	// The limit: the same reads and inserts, by hand, no engine.
	if _, err := b.trackingDB.ExecContext(ctx, `CREATE TABLE raw_registry (LIKE geo_registry INCLUDING ALL)`); err != nil {
		return err
	}
	b.logf("backfill: raw loop")
	rawStart := time.Now()
	after, rawRows := int64(0), 0
	for {
		ids, err := b.typ.IDs(ctx, after, batch)
		if err != nil {
			return fmt.Errorf("raw: ids: %w", err)
		}
		if len(ids) > 0 {
			if _, err := b.trackingDB.ExecContext(ctx, `INSERT INTO raw_registry (replicable, model_id)
SELECT $1, unnest($2::bigint[]) ON CONFLICT DO NOTHING`, typeName, pq.Array(ids)); err != nil {
				return fmt.Errorf("raw: insert: %w", err)
			}
			rawRows += len(ids)
			after = ids[len(ids)-1]
		}
		if len(ids) < batch {
			break
		}
	}
	rawSecs := time.Since(rawStart).Seconds()
	if rawRows != n {
		return fmt.Errorf("raw loop inserted %d rows, want %d", rawRows, n)
	}

	// geo: a secondary whose only work is the consistency pass (the type
	// is paused, so the sync engine claims nothing).
	store, err := registry.NewStore(b.trackingDB, registry.Options{})
	if err != nil {
		return err
	}
	if err := store.Pause(ctx, typeName); err != nil {
		return err
	}
	cfg := b.secondaryConfig(nil)
	var firstSecs, wallSecs, noopSecs float64
	err = profile(b.o, func() error {
		wallStart := time.Now()
		sec, err := b.start(cfg)
		if err != nil {
			return err
		}
		p, err := waitPasses(ctx, sec.sec, 1, 30*time.Minute)
		if err != nil {
			return err
		}
		wallSecs = time.Since(wallStart).Seconds()
		firstSecs = p.LastFinished.Sub(p.PassStarted).Seconds()
		if p.Inserted != int64(n) {
			return fmt.Errorf("first pass inserted %d rows, want %d", p.Inserted, n)
		}
		sec.sec.TriggerConsistency()
		p, err = waitPasses(ctx, sec.sec, 2, 10*time.Minute)
		if err != nil {
			return err
		}
		if p.Inserted != 0 {
			return fmt.Errorf("no-op pass inserted %d rows, want 0", p.Inserted)
		}
		noopSecs = p.LastFinished.Sub(p.PassStarted).Seconds()
		return sec.stop()
	})
	if err != nil {
		return err
	}
	var count int64
	if err := b.trackingDB.GetContext(ctx, &count, `SELECT count(*) FROM geo_registry WHERE replicable = $1`, typeName); err != nil {
		return err
	}
	if count != int64(n) {
		return fmt.Errorf("registry holds %d rows, want %d", count, n)
	}

	rate := float64(n) / firstSecs
	rawRate := float64(rawRows) / rawSecs
	res.value, res.unit, res.limit = rate, "rows/s", rawRate
	res.add("records", "%d (keyset batch %d)", n, batch)
	res.add("raw fetch+unnest insert", "%.2fs  %.0f rows/s  (limit)", rawSecs, rawRate)
	res.add("geo first pass", "%.2fs  %.0f rows/s  (ratio %.2f; target >= 200000 rows/s, ratio >= 0.67)", firstSecs, rate, rate/rawRate)
	res.add("geo first pass, wall", "%.2fs from NewSecondary.Run to pass done", wallSecs)
	res.add("geo no-op pass", "%.2fs  %.0f ids/s  (target <= 2s at 1,000,000)", noopSecs, float64(n)/noopSecs)
	return nil
}

// waitPasses polls sec's progress until passes full passes have finished.
func waitPasses(ctx context.Context, sec *replicator.Secondary, passes int64, timeout time.Duration) (replicator.Progress, error) {
	deadline := time.Now().Add(timeout)
	for {
		p := sec.Progress()[typeName]
		if p.Passes >= passes && !p.Running {
			return p, nil
		}
		if time.Now().After(deadline) {
			return p, fmt.Errorf("consistency pass %d not finished within %v (done %d)", passes, timeout, p.Done)
		}
		select {
		case <-ctx.Done():
			return p, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}
