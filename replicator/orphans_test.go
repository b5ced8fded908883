package replicator_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/blob/dirblob"
	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/strategy"
)

// countingStrategy counts the calls of its strategy's IDs and BlobKey.
type countingStrategy struct {
	strategy.BlobStrategy
	ids, keys atomic.Int64
}

func (s *countingStrategy) IDs(ctx context.Context, after int64, limit int) ([]int64, error) {
	s.ids.Add(1)
	return s.BlobStrategy.IDs(ctx, after, limit)
}

func (s *countingStrategy) BlobKey(ctx context.Context, id int64) (string, error) {
	s.keys.Add(1)
	return s.BlobStrategy.BlobKey(ctx, id)
}

// syncedOrphans makes n items synced on the secondary, then deletes them
// on the primary without events (the lost deletes a consistency pass
// repairs), leaving n orphan rows with their files; it returns the ids.
func (f *fixture) syncedOrphans(t *testing.T, n int) []int64 {
	t.Helper()
	ctx := context.Background()
	ids, err := f.app.BulkCreate(ctx, n, 0, func(i int) []byte { return payload(i, 64) })
	require.NoError(t, err)
	sec := f.secondaryItems()
	r := f.Start(f.SecondaryConfig(sec))
	f.waitConverged(t, 2*time.Minute, sec)
	require.NoError(t, r.Stop())
	_, err = f.PrimaryDB.ExecContext(ctx, `DELETE FROM items WHERE id = ANY($1)`, pq.Array(ids))
	require.NoError(t, err)
	return ids
}

// TestOrphansRemovedInBatches: a pass removes many orphans (rows and
// files) in batches: one listing of the primary per page re-checks them
// all, and no key lookup per orphan (before: a BlobKey query and a
// transaction per orphan, about 800 a second).
func TestOrphansRemovedInBatches(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ids := f.syncedOrphans(t, 3000)
	sec := &countingStrategy{BlobStrategy: f.secondaryItems()}
	cfg := f.SecondaryConfig(sec)
	cfg.ConsistencyInterval = time.Hour
	// The pass at start removes them, and no other runs: a triggered one
	// would follow it at once and start its counts over, and a loaded
	// machine's look at the progress came after that start (Removed 0).
	r := f.Start(cfg)
	f.waitConverged(t, 2*time.Minute, sec)
	require.Zero(t, sec.keys.Load(), "BlobKey calls: the orphans are re-checked by listing, not one by one")
	for _, id := range ids[:5] {
		_, err := f.SecondaryStorage.Stat(context.Background(), fmt.Sprintf("items/%d/%d-v1", id%100, id))
		require.ErrorIs(t, err, blob.ErrNotExist)
	}
	var p replicator.Progress
	geotest.WaitFor(t, stall, "the pass ends", func() (bool, string) {
		p = r.Progress()["item"]
		return p.Passes >= 1 && !p.Running, fmt.Sprintf("%+v", p)
	})
	require.EqualValues(t, 1, p.Passes, "passes")
	require.Equal(t, int64(3000), p.Removed)
}

// TestConsistencyPageOrphansBounded: a page holds at most a batch of
// orphans, however many the registry has before the primary's next id
// (here: 1,000 orphans, batches of 100, no record left on the primary),
// so a pass's memory stays at a few batches. Each page lists the primary
// once and re-checks its orphans with one more listing.
func TestConsistencyPageOrphansBounded(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.syncedOrphans(t, 1000)
	sec := &countingStrategy{BlobStrategy: f.secondaryItems()}
	cfg := f.SecondaryConfig(sec)
	cfg.ConsistencyInterval = time.Hour
	cfg.BackfillBatchSize = 100
	r := f.Start(cfg)
	r.TriggerConsistency()
	f.waitConverged(t, 2*time.Minute, sec)
	geotest.WaitFor(t, stall, "the pass ends", func() (bool, string) {
		p := r.Progress()["item"]
		return p.Passes >= 1 && !p.Running, fmt.Sprintf("%+v", p)
	})
	// 10 pages of 100 orphans (and a last, empty one): a listing and a
	// re-check each. One unbounded page would have listed twice.
	require.GreaterOrEqual(t, sec.ids.Load(), int64(20), "IDs calls")
}

// holdingRemover is the secondary's storage backend; its batch removals
// after the first wait until released.
type holdingRemover struct {
	*dirblob.Dir
	calls   atomic.Int64
	held    chan struct{}
	release chan struct{}
	once    sync.Once
}

func (h *holdingRemover) DeleteBatch(ctx context.Context, keys []string) error {
	if h.calls.Add(1) > 1 {
		h.once.Do(func() { close(h.held) })
		select {
		case <-h.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return h.Dir.DeleteBatch(ctx, keys)
}

// TestOrphanRemovalReportsProgress: while a pass removes orphans, its
// progress (records examined, orphans removed) grows as each batch of
// rows goes, not only once the page is done: an operator watching a pass
// that only removes orphans sees it move, with a total and an ETA.
func TestOrphanRemovalReportsProgress(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.syncedOrphans(t, 6000)
	dir, err := dirblob.New(f.SecondaryRoot)
	require.NoError(t, err)
	h := &holdingRemover{Dir: dir, held: make(chan struct{}), release: make(chan struct{})}
	storage := blob.NewBucket(h)
	t.Cleanup(func() { storage.Close() })
	sec := f.secondaryItems()
	cfg := f.SecondaryConfig(sec)
	cfg.ConsistencyInterval = time.Hour
	cfg.Storage = storage
	r := f.Start(cfg)
	r.TriggerConsistency()
	select {
	case <-h.held:
	case <-time.After(hangGuard):
		t.Fatalf("no second batch removal within %v", hangGuard)
	}
	geotest.WaitFor(t, stall, "progress while a page's orphans are removed", func() (bool, string) {
		p := r.Progress()["item"]
		return p.Running && p.Removed > 0 && p.Done >= p.Removed && p.Total >= 6000,
			fmt.Sprintf("%+v", p)
	})
	close(h.release)
	f.waitConverged(t, 2*time.Minute, sec)
}
