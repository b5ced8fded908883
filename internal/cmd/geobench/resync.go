package main

import (
	"context"
	"fmt"
	"time"

	"github.com/geoframework/geo/registry"
)

// resyncTarget is the resync-all target: 1,000,000 rows in at most 20 s.
const resyncTarget = 50_000 // rows/s

// resyncBatchTimeout is the per-batch timeout the scenario runs with:
// geoctl's default --timeout, which geoctl applies to each batch.
const resyncBatchTimeout = 30 * time.Second

// seedSyncedSQL fills table %s with N synced and verified rows of the
// bench type, with a blob key, a size and a checksum each, as after a
// full sync ($1 type, $2 N).
const seedSyncedSQL = `
INSERT INTO %s (replicable, model_id, state, verification_state, last_synced_at, blob_key, blob_size,
  verification_checksum, verified_at)
SELECT $1, g, 2, 2, now(), 'k/' || g, 4096, md5(g::text) || md5(g::text), now()
FROM generate_series(1, $2::bigint) g`

// rawResyncSQL is the raw limit's statement: the same columns a resync
// sets, over one id range ($1 type, $2 after, $3 up to, $4 the time).
const rawResyncSQL = `
UPDATE raw_registry SET state = 0, seq = DEFAULT, retry_count = 0, retry_at = NULL, last_synced_at = NULL,
  missing_on_primary = false, lease_owner = NULL, lease_expires_at = NULL, updated_at = $4
WHERE replicable = $1 AND model_id > $2 AND model_id <= $3 AND state <> 0`

// runResyncAll: N synced registry rows; the time of a resync of all of
// them through registry.Store.ResyncBatches, the code `geoctl resync
// --all` runs (same batch size, per-batch timeout and progress callback).
// The raw limit, in the same run: the same rows in a bare table of the
// registry's shape (raw_registry: the same columns and indexes, without
// the registry's count triggers), updated by a plain `UPDATE ... WHERE
// model_id > $2 AND model_id <= $3` of the same columns over consecutive
// ranges of the same batch size, each its own transaction. Both tables
// are seeded alike, vacuumed and analyzed, and a CHECKPOINT runs before
// each measured phase, so neither inherits the other's dirty pages.
func runResyncAll(ctx context.Context, b *bench, res *result) error {
	n := b.o.n
	batch := b.o.batch
	if batch == 0 {
		batch = registry.BatchSizeDefault
	}
	b.logf("resync-all: creating %d synced registry rows (and as many in raw_registry)", n)
	if _, err := b.trackingDB.ExecContext(ctx, `CREATE TABLE raw_registry (LIKE geo_registry INCLUDING ALL)`); err != nil {
		return err
	}
	for _, table := range []string{"geo_registry", "raw_registry"} {
		if _, err := b.trackingDB.ExecContext(ctx, fmt.Sprintf(seedSyncedSQL, table), typeName, n); err != nil {
			return fmt.Errorf("seed %s: %w", table, err)
		}
		if _, err := b.trackingDB.ExecContext(ctx, `VACUUM ANALYZE `+table); err != nil {
			return err
		}
	}
	checkpoint := func() error {
		_, err := b.trackingDB.ExecContext(ctx, `CHECKPOINT`)
		return err
	}

	// The limit: consecutive id ranges of the same size, by hand.
	if err := checkpoint(); err != nil {
		return err
	}
	b.logf("resync-all: raw batched UPDATE")
	rawStart := time.Now()
	var rawRows int64
	for after := int64(0); after < int64(n); after += int64(batch) {
		r, err := b.trackingDB.ExecContext(ctx, rawResyncSQL, typeName, after, after+int64(batch), time.Now())
		if err != nil {
			return fmt.Errorf("raw: %w", err)
		}
		k, err := r.RowsAffected()
		if err != nil {
			return err
		}
		rawRows += k
	}
	rawSecs := time.Since(rawStart).Seconds()
	if rawRows != int64(n) {
		return fmt.Errorf("raw loop updated %d rows, want %d", rawRows, n)
	}

	// geo.
	store, err := registry.NewStore(b.trackingDB, registry.Options{})
	if err != nil {
		return err
	}
	if err := checkpoint(); err != nil {
		return err
	}
	b.logf("resync-all: geo ResyncBatches")
	var p registry.BatchProgress
	var slowest time.Duration
	var secs float64
	err = profile(b.o, func() error {
		start := time.Now()
		last := start
		p, err = store.ResyncBatches(ctx, typeName, registry.BatchOptions{Size: batch, BatchTimeout: resyncBatchTimeout,
			Progress: func(registry.BatchProgress) error {
				now := time.Now()
				slowest = max(slowest, now.Sub(last))
				last = now
				return nil
			}})
		secs = time.Since(start).Seconds()
		return err
	})
	if err != nil {
		return err
	}
	if p.Changed != int64(n) {
		return fmt.Errorf("ResyncBatches changed %d rows, want %d", p.Changed, n)
	}
	var notPending int64
	if err := b.trackingDB.GetContext(ctx, &notPending,
		`SELECT count(*) FROM geo_registry WHERE replicable = $1 AND state <> 0`, typeName); err != nil {
		return err
	}
	if notPending != 0 {
		return fmt.Errorf("%d rows not pending after ResyncBatches", notPending)
	}

	rate := float64(n) / secs
	rawRate := float64(rawRows) / rawSecs
	res.value, res.unit, res.limit = rate, "rows/s", rawRate
	res.add("registry rows", "%d synced (batch %d)", n, batch)
	res.add("raw batched UPDATE", "%.2fs  %.0f rows/s  (limit)", rawSecs, rawRate)
	res.add("geo ResyncBatches", "%.2fs  %.0f rows/s  (ratio %.2f; target <= 20 s at 1,000,000: >= %d rows/s)",
		secs, rate, rate/rawRate, resyncTarget)
	res.add("geo batches", "%d, slowest %.0f ms (geoctl's --timeout bounds each: %v)",
		p.Batches, float64(slowest.Microseconds())/1000, resyncBatchTimeout)
	return nil
}
