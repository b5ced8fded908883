package main

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/geoframework/geo/replicator"
)

// existenceRemoved is how many of the N files the existence scenario
// removes before the scan, which must find exactly those.
const existenceRemoved = 10

// runExistence: N synced registry rows whose files exist on the
// secondary (empty files: the scan reads no bytes), 10 of them removed;
// the time of one existence scan (Secondary.CheckStorage), which must find
// exactly the 10, against the raw limit measured in the same run: reading
// the same rows' keys in the same order from the registry plus walking
// the same tree with filepath.WalkDir, one after the other. The figure
// documents R7's detection time D: ExistenceScanInterval plus one scan.
func runExistence(ctx context.Context, b *bench, res *result) error {
	n := b.o.n
	b.logf("existence: creating %d records, their synced registry rows and their files", n)
	if err := b.insertItems(ctx, n); err != nil {
		return err
	}
	if _, err := b.trackingDB.ExecContext(ctx, `
INSERT INTO geo_registry (replicable, model_id, state, verification_state, last_synced_at, blob_key, blob_size, created_at, updated_at)
SELECT $1, g, 2, 2, now(), $2 || '/' || (g % 100) || '/' || g || '-v1', 0, now(), now()
FROM generate_series(1, $3::bigint) g`, typeName, typeTable, n); err != nil {
		return err
	}
	if _, err := b.trackingDB.ExecContext(ctx, `VACUUM ANALYZE geo_registry`); err != nil {
		return err
	}
	for d := 0; d < 100; d++ {
		if err := os.MkdirAll(filepath.Join(b.secondaryRoot, typeTable, fmt.Sprint(d)), 0o755); err != nil {
			return err
		}
	}
	for id := int64(1); id <= int64(n); id++ {
		f, err := os.Create(filepath.Join(b.secondaryRoot, filepath.FromSlash(itemKey(id))))
		if err != nil {
			return err
		}
		f.Close()
	}
	for i := range existenceRemoved {
		id := int64(1 + i*max(n/existenceRemoved, 1))
		if err := os.Remove(filepath.Join(b.secondaryRoot, filepath.FromSlash(itemKey(id)))); err != nil {
			return err
		}
	}

	// The limit: the same registry read and the same walk, by hand.
	b.logf("existence: raw registry read and directory walk")
	rawStart := time.Now()
	rows, err := b.trackingDB.QueryContext(ctx, `SELECT blob_key FROM geo_registry WHERE state = 2 ORDER BY blob_key COLLATE "C"`)
	if err != nil {
		return err
	}
	keys := 0
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			rows.Close()
			return err
		}
		keys++
	}
	rows.Close()
	files := 0
	err = filepath.WalkDir(b.secondaryRoot, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() && strings.HasPrefix(e.Name(), ".geo-tmp") {
			return filepath.SkipDir
		}
		if e.Type().IsRegular() {
			files++
		}
		return nil
	})
	if err != nil {
		return err
	}
	rawSecs := time.Since(rawStart).Seconds()
	if keys != n || files != n-existenceRemoved {
		return fmt.Errorf("raw: %d keys and %d files, want %d and %d", keys, files, n, n-existenceRemoved)
	}

	// The scan alone: a secondary that is built but not running, so no
	// other engine shares the machine with it.
	sec, err := replicator.NewSecondary(b.secondaryConfig(nil))
	if err != nil {
		return err
	}
	b.logf("existence: one scan")
	var checked, missing int64
	start := time.Now()
	err = profile(b.o, func() error {
		var err error
		checked, missing, err = sec.CheckStorage(ctx)
		return err
	})
	secs := time.Since(start).Seconds()
	if err != nil {
		return err
	}
	if checked != int64(n) || missing != existenceRemoved {
		return fmt.Errorf("scan checked %d rows and found %d missing, want %d and %d", checked, missing, n, existenceRemoved)
	}
	res.value, res.unit, res.limit = float64(n)/secs, "rows/s", float64(n)/rawSecs
	res.add("scan", "%.2f s for %d synced rows, %d found missing", secs, checked, missing)
	res.add("raw limit", "%.2f s (registry read in key order + WalkDir of the tree)", rawSecs)
	res.add("detection time D", "ExistenceScanInterval (default 10m) + %.1f s", secs)
	return nil
}
