package replicator

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"time"

	"go.uber.org/zap"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/internal/regstore"
)

// existenceBatch is how many synced rows the existence scan reads per
// registry page.
const existenceBatch = 10000

// localMissingReason is the failure recorded on a row whose bytes the
// existence scan found missing.
const localMissingReason = "local copy missing: the existence scan found no bytes at the recorded key; downloading again"

// existenceEngine finds synced rows whose bytes are gone from the site's
// storage, whatever removed them (an operator's rm, a replaced disk, a
// bug), and makes them pending so they are downloaded again: a row never
// stays synced without its bytes for longer than one interval plus one
// scan (R7), far less than the re-verification interval. A scan walks the
// registry's synced rows in key order (regstore.Store.SyncedKeys) beside
// the storage's key listing in the same order (blob.Bucket.Keys): one pass over
// each, no Stat per row. Rows whose key the listing lacks are checked
// again with a Stat before they are marked (a listing is not a
// snapshot).
type existenceEngine struct {
	store    *regstore.Store
	storage  *blob.Bucket
	stat     func(ctx context.Context, key string) error
	interval time.Duration
	log      *zap.Logger
	wakeSync func()
	obs      Observer
	batch    int
}

// run scans once per interval until ctx ends.
func (e *existenceEngine) run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(e.interval):
		}
		start := time.Now()
		checked, missing, err := e.scan(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			e.log.Warn("existence scan failed; retrying at the next interval", zap.Error(err))
			continue
		}
		e.log.Debug("existence scan finished", zap.Int64("rows", checked), zap.Int64("missing", missing),
			zap.Duration("duration", time.Since(start)))
	}
}

// scan runs one pass: it returns the synced rows checked and those made
// pending because their bytes were missing.
func (e *existenceEngine) scan(ctx context.Context) (checked, missing int64, err error) {
	next, stop := iter.Pull2(e.storage.Keys(ctx, ""))
	defer stop()
	stored, ok, err := pull(next)
	if err != nil {
		return 0, 0, err
	}
	var after regstore.KeyedRow
	for {
		rows, err := e.store.SyncedKeys(ctx, after, e.batch)
		if err != nil {
			return checked, missing, err
		}
		var absent []regstore.KeyedRow
		for _, r := range rows {
			// Both sides are in byte order: advance the listing to the
			// row's key (several rows may share one key).
			for ok && stored < r.BlobKey {
				if stored, ok, err = pull(next); err != nil {
					return checked, missing, err
				}
			}
			if !ok || stored != r.BlobKey {
				absent = append(absent, r)
			}
		}
		checked += int64(len(rows))
		n, err := e.markAbsent(ctx, absent)
		missing += n
		if err != nil {
			return checked, missing, err
		}
		if len(rows) < e.batch {
			return checked, missing, nil
		}
		after = rows[len(rows)-1]
	}
}

// pull returns the listing's next key; ok is false at its end.
func pull(next func() (string, error, bool)) (key string, ok bool, err error) {
	key, err, ok = next()
	if ok && err != nil {
		return "", false, fmt.Errorf("existence scan: list storage: %w", err)
	}
	return key, ok, nil
}

// markAbsent re-checks rows the listing lacked (a key committed while the
// listing passed it is there after all) and makes the rest pending.
func (e *existenceEngine) markAbsent(ctx context.Context, rows []regstore.KeyedRow) (int64, error) {
	var gone []regstore.KeyedRow
	for _, r := range rows {
		err := e.stat(ctx, r.BlobKey)
		switch {
		case err == nil:
		case errors.Is(err, blob.ErrNotExist):
			gone = append(gone, r)
		default:
			return 0, fmt.Errorf("existence scan: stat %q: %w", r.BlobKey, err)
		}
	}
	marked, err := e.store.MarkLocalMissing(ctx, gone, localMissingReason)
	if err != nil || len(marked) == 0 {
		return 0, err
	}
	byType := map[string]int{}
	for _, r := range marked {
		byType[r.Replicable]++
		e.log.Warn("synced record's bytes missing from storage: downloading again",
			zap.String("replicable", r.Replicable), zap.Int64("model_record_id", r.ModelID), zap.String("blob_key", r.BlobKey))
	}
	for name, k := range byType {
		e.obs.LocalMissing(name, k)
	}
	if e.wakeSync != nil {
		e.wakeSync()
	}
	return int64(len(marked)), nil
}
