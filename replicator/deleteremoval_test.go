package replicator_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/blob/dirblob"
	"github.com/geoframework/geo/blob/driver"
	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/strategy"
)

// removeFails is a storage backend whose removal of one key fails (EIO)
// while failing is set.
type removeFails struct {
	*dirblob.Dir
	key     string
	failing atomic.Bool
	tries   atomic.Int32
}

func (s *removeFails) Delete(ctx context.Context, key string) error {
	if key == s.key && s.failing.Load() {
		s.tries.Add(1)
		return fmt.Errorf("remove %q: %w", key, syscall.EIO)
	}
	return s.Dir.Delete(ctx, key)
}

func (s *removeFails) DeleteBatch(ctx context.Context, keys []string) error {
	if slices.Contains(keys, s.key) && s.failing.Load() {
		s.tries.Add(1)
		return fmt.Errorf("remove %q: %w", s.key, syscall.EIO)
	}
	return s.Dir.DeleteBatch(ctx, keys)
}

// startFaulty starts a secondary whose storage backend is made by wrap
// from the directory backend on the secondary's root and record id's
// current key; mod adjusts the configuration.
func (f *fixture) startFaulty(t *testing.T, id int64, wrap func(dir *dirblob.Dir, key string) driver.Bucket, mod func(*replicator.SecondaryConfig)) (*geotest.Running, strategy.BlobStrategy) {
	t.Helper()
	key, err := f.items.BlobKey(context.Background(), id)
	require.NoError(t, err)
	dir, err := dirblob.New(f.SecondaryRoot)
	require.NoError(t, err)
	storage := blob.NewBucket(wrap(dir, key))
	t.Cleanup(func() { storage.Close() })
	sec := f.secondaryItems()
	cfg := f.SecondaryConfig(sec)
	cfg.Storage = storage
	mod(&cfg)
	return f.Start(cfg), sec
}

// startRemoveFails starts a secondary whose storage fails to remove record
// id's bytes while storage.failing is set, with a short fixed retry; mod
// adjusts the configuration.
func (f *fixture) startRemoveFails(t *testing.T, id int64, mod func(*replicator.SecondaryConfig)) (*geotest.Running, *removeFails, strategy.BlobStrategy) {
	t.Helper()
	var storage *removeFails
	r, sec := f.startFaulty(t, id, func(dir *dirblob.Dir, key string) driver.Bucket {
		storage = &removeFails{Dir: dir, key: key}
		return storage
	}, func(cfg *replicator.SecondaryConfig) {
		cfg.Retry = fixedRetry(100 * time.Millisecond)
		mod(cfg)
	})
	return r, storage, sec
}

// waitRemovalFailed waits until record id's row is failed with the
// storage's error recorded and at least tries removals were attempted.
func waitRemovalFailed(t *testing.T, r *geotest.Running, storage *removeFails, id int64, tries int32) {
	t.Helper()
	geotest.WaitFor(t, stall, "the failed removal is recorded on the row", func() (bool, string) {
		row, err := r.Store().Get(context.Background(), "item", id)
		if err != nil {
			return false, err.Error()
		}
		return row.State == registry.StateFailed && strings.Contains(row.LastSyncFailure, "input/output error") && storage.tries.Load() >= tries,
			fmt.Sprintf("state %v, failure %q, %d removals tried", row.State, row.LastSyncFailure, storage.tries.Load())
	})
}

// TestFailingRemovalDoesNotHoldBackEvents is the regression test for an
// event stream stalled by a sick disk (found by geochaos disk-errors): a
// deleted event whose bytes could not be removed failed its whole batch,
// so every later event waited until the removal succeeded, and a batch
// with many deletes, each removal failing now and then, might never pass.
// The removal now goes to the sync engine, which records the failure on
// the row and retries it with backoff while later events flow.
func TestFailingRemovalDoesNotHoldBackEvents(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	a, err := f.app.Create(ctx, 0, payload(1, 1000))
	require.NoError(t, err)
	r, storage, sec := f.startRemoveFails(t, a, func(cfg *replicator.SecondaryConfig) {
		cfg.ConsistencyInterval = time.Hour // later records arrive through their events only
	})
	f.waitRowState(t, r.Store(), a, registry.StateSynced)

	storage.failing.Store(true)
	require.NoError(t, f.app.Delete(ctx, a, true))
	c, err := f.app.Create(ctx, 0, payload(2, 2000))
	require.NoError(t, err)
	// The record created after the delete is synced although the
	// delete's removal keeps failing.
	f.waitRowState(t, r.Store(), c, registry.StateSynced)

	// The deleted record's row is kept, with the failure recorded, and
	// retried; its bytes are still there.
	waitRemovalFailed(t, r, storage, a, 3)
	_, err = f.SecondaryStorage.Stat(ctx, storage.key)
	require.NoError(t, err, "the bytes whose removal failed")

	// Once the disk recovers, the row and the bytes go.
	storage.failing.Store(false)
	f.waitConverged(t, stall, sec)
}

// TestFailingOrphanRemovalDoesNotStopThePass: the consistency pass met an
// orphan (a record deleted without its event) whose bytes could not be
// removed; the pass failed at that batch and, retried from its cursor,
// failed there again while the storage did, so nothing after it was
// backfilled. The removal now goes to the sync engine as for events.
func TestFailingOrphanRemovalDoesNotStopThePass(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	a, err := f.app.Create(ctx, 0, payload(1, 1000))
	require.NoError(t, err)
	_, err = f.app.Create(ctx, 0, payload(2, 1000))
	require.NoError(t, err)
	r, storage, sec := f.startRemoveFails(t, a, func(cfg *replicator.SecondaryConfig) {
		cfg.BackfillBatch = 1 // the orphan and the later record in different batches
	})
	f.waitConverged(t, stall, sec)

	// A leaves without its event; C arrives without one: only the
	// consistency pass can see either.
	storage.failing.Store(true)
	require.NoError(t, f.app.Delete(ctx, a, false))
	ids, err := f.app.BulkCreate(ctx, 1, 0, func(int) []byte { return payload(3, 3000) })
	require.NoError(t, err)
	r.TriggerConsistency()
	f.waitRowState(t, r.Store(), ids[0], registry.StateSynced)
	waitRemovalFailed(t, r, storage, a, 1)

	storage.failing.Store(false)
	f.waitConverged(t, stall, sec)
}
