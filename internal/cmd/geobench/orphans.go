package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/lib/pq"
)

// orphanFileSize is the size of each orphan's file on the secondary.
const orphanFileSize = 4 << 10

// runOrphans: N synced registry rows whose records are gone from the
// primary (deleted without events), each with a 4 KiB file on the
// secondary; the time of the consistency pass that removes them, rows and
// files (including R7's key-reference check), against a raw loop in the
// same run that deletes the same number of rows of the same shape with
// DELETE ... WHERE model_id = ANY($1), 10,000 at a time, and unlinks
// their files (issue 20, item 6: target 50,000 rows/s and ratio 0.5).
func runOrphans(ctx context.Context, b *bench, res *result) error {
	n := b.o.n
	seed := func(replicable, root string) error {
		if _, err := b.trackingDB.ExecContext(ctx, `
INSERT INTO geo_registry (replicable, model_id, state, verification_state, last_synced_at, blob_key, blob_size, created_at, updated_at)
SELECT $1, g, 2, 2, now(), $2 || '/' || (g % 100) || '/' || g || '-v1', $4, now(), now()
FROM generate_series(1, $3::bigint) g`, replicable, typeTable, n, orphanFileSize); err != nil {
			return err
		}
		data := make([]byte, orphanFileSize)
		for d := 0; d < 100; d++ {
			if err := os.MkdirAll(filepath.Join(root, typeTable, strconv.Itoa(d)), 0o755); err != nil {
				return err
			}
		}
		for id := int64(1); id <= int64(n); id++ {
			if err := os.WriteFile(filepath.Join(root, filepath.FromSlash(itemKey(id))), data, 0o644); err != nil {
				return err
			}
		}
		return nil
	}
	b.logf("orphans: creating %d synced rows and their files, twice (raw loop, geo)", n)
	rawRoot := filepath.Join(b.dir, "raw")
	if err := seed("raw_"+typeName, rawRoot); err != nil {
		return err
	}
	if err := seed(typeName, b.secondaryRoot); err != nil {
		return err
	}
	if _, err := b.trackingDB.ExecContext(ctx, `VACUUM ANALYZE geo_registry`); err != nil {
		return err
	}

	b.logf("orphans: raw loop")
	rawStart := time.Now()
	const rawBatch = 10000
	for from := int64(1); from <= int64(n); from += rawBatch {
		ids := make([]int64, 0, rawBatch)
		for id := from; id < from+rawBatch && id <= int64(n); id++ {
			ids = append(ids, id)
		}
		if _, err := b.trackingDB.ExecContext(ctx, `DELETE FROM geo_registry WHERE replicable = $1 AND model_id = ANY($2::bigint[])`,
			"raw_"+typeName, pq.Array(ids)); err != nil {
			return err
		}
		for _, id := range ids {
			if err := os.Remove(filepath.Join(rawRoot, filepath.FromSlash(itemKey(id)))); err != nil {
				return err
			}
		}
	}
	rawSecs := time.Since(rawStart).Seconds()

	b.logf("orphans: consistency pass")
	r, err := b.start(b.secondaryConfig(nil))
	if err != nil {
		return err
	}
	start := time.Now()
	err = profile(b.o, func() error {
		for {
			var left int64
			if err := b.trackingDB.GetContext(ctx, &left, `SELECT count(*) FROM geo_registry WHERE replicable = $1`, typeName); err != nil {
				return err
			}
			if left == 0 {
				return nil
			}
			if time.Since(start) > 30*time.Minute {
				return fmt.Errorf("%d orphan rows left after 30 minutes", left)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	secs := time.Since(start).Seconds()
	if err != nil {
		return err
	}
	prog := r.sec.Progress()[typeName]
	if err := r.stop(); err != nil {
		return err
	}
	files := 0
	_ = filepath.WalkDir(filepath.Join(b.secondaryRoot, typeTable), func(_ string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			files++
		}
		return nil
	})
	if files != 0 {
		return fmt.Errorf("%d orphan files left on the secondary", files)
	}
	res.value, res.unit, res.limit = float64(n)/secs, "rows/s", float64(n)/rawSecs
	res.add("consistency pass", "%.2f s for %d orphan rows and files (pass reported removed=%d)", secs, n, prog.Removed)
	res.add("raw limit", "%.2f s (DELETE ... = ANY of 10,000 ids + unlink, no fsync)", rawSecs)
	return nil
}
