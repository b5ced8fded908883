package replicator

import (
	"context"
	"fmt"
	"iter"
	"time"

	"go.uber.org/zap"

	"github.com/geoframework/geo/internal/regstore"
)

// existenceBatch is how many synced rows the existence scan reads per
// registry page.
const existenceBatch = 10000

// localMissingReason is the failure recorded on a row whose bytes the
// existence scan found missing.
const localMissingReason = "local copy missing: the existence scan found no bytes at the recorded key; downloading again"

// existenceEngine finds synced rows whose data is gone from the site's
// storage, whatever removed it (an operator's rm, a replaced disk, a
// bug), and makes them pending so it is fetched again: a row never stays
// synced without its data for longer than one interval plus one scan
// (R7), far less than the re-verification interval. A scan checks each
// kind's storage against the synced rows of that kind's types (an
// existenceSpace). It walks the registry's synced rows in key order
// (regstore.Store.SyncedKeysOf) beside the storage's listing in the same
// order (blob.Bucket.Keys): one pass over each, no Stat per row. Rows
// whose locator the listing lacks are checked again (a listing is not a
// snapshot) before they are marked. A storage that cannot list (the
// repository root) has each row checked instead.
type existenceEngine struct {
	store    *regstore.Store
	spaces   []existenceSpace
	interval time.Duration
	log      *zap.Logger
	wakeSync func()
	obs      Observer
	batch    int
}

// existenceSpace is one kind's storage and the types whose data it holds.
type existenceSpace struct {
	kind    string
	types   []string
	storage locatorStorage
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

// scan runs one pass over every kind's storage: it returns the synced
// rows checked and those made pending because their data was missing.
func (e *existenceEngine) scan(ctx context.Context) (checked, missing int64, err error) {
	for _, sp := range e.spaces {
		c, m, err := e.scanSpace(ctx, sp)
		checked += c
		missing += m
		if err != nil {
			return checked, missing, fmt.Errorf("%s storage: %w", sp.kind, err)
		}
	}
	return checked, missing, nil
}

// scanSpace is scan for one kind's storage.
func (e *existenceEngine) scanSpace(ctx context.Context, sp existenceSpace) (checked, missing int64, err error) {
	listing := sp.storage.locators(ctx)
	next := func() (string, error, bool) { return "", nil, false }
	if listing != nil {
		n, stop := iter.Pull2(listing)
		defer stop()
		next = n
	}
	stored, ok, err := pull(next)
	if err != nil {
		return 0, 0, err
	}
	var after regstore.KeyedRow
	for {
		rows, err := e.store.SyncedKeysOf(ctx, sp.types, after, e.batch)
		if err != nil {
			return checked, missing, err
		}
		var absent []regstore.KeyedRow
		for _, r := range rows {
			if listing == nil {
				absent = append(absent, r) // checked one by one
				continue
			}
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
		n, err := e.markAbsent(ctx, sp.storage, absent)
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
func (e *existenceEngine) markAbsent(ctx context.Context, storage locatorStorage, rows []regstore.KeyedRow) (int64, error) {
	var gone []regstore.KeyedRow
	for _, r := range rows {
		present, err := storage.present(ctx, r.BlobKey)
		switch {
		case err != nil:
			return 0, fmt.Errorf("existence scan: stat %q: %w", r.BlobKey, err)
		case !present:
			gone = append(gone, r)
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
