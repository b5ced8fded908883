package replicator_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/strategy"
)

var errListing = errors.New("listing fails")

// failingIDs lists ids as its strategy does, except that while failing
// is set it fails every page that starts at or after failFrom.
type failingIDs struct {
	strategy.BlobStrategy
	failFrom int64
	failing  atomic.Bool
	calls    atomic.Int64
}

func (s *failingIDs) IDs(ctx context.Context, after int64, limit int) ([]int64, error) {
	s.calls.Add(1)
	if s.failing.Load() && after >= s.failFrom {
		return nil, fmt.Errorf("after %d: %w", after, errListing)
	}
	return s.BlobStrategy.IDs(ctx, after, limit)
}

// pausedBacklog creates n items without events and returns their ids and
// a store on the migrated tracking database with the item type paused, so
// that only the consistency pass writes registry rows.
func (f *fixture) pausedBacklog(t *testing.T, n int) ([]int64, *regstore.Store) {
	t.Helper()
	ctx := context.Background()
	ids, err := f.app.BulkCreate(ctx, n, 0, func(i int) []byte { return payload(i, 10) })
	require.NoError(t, err)
	require.NoError(t, registry.MigrateTracking(ctx, f.TrackingDB))
	store, err := regstore.NewStore(f.TrackingDB, regstore.Options{})
	require.NoError(t, err)
	require.NoError(t, store.Pause(ctx, "item"))
	return ids, store
}

// TestConsistencyPassPagesAhead: the pass lists the next page while it
// writes the current one. Over many small pages with rows already
// tracked, orphans between and beyond the records, and a listing that
// fails part-way, the saved cursor never passes the last page written,
// the pass resumes there, and the registry ends up holding exactly the
// primary's ids.
func TestConsistencyPassPagesAhead(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	ids, store := f.pausedBacklog(t, 120)

	// Tracked already: every third record, and orphans among and after
	// the records (records deleted on the primary without an event).
	var tracked []int64
	for i := 0; i < len(ids); i += 3 {
		tracked = append(tracked, ids[i])
	}
	_, err := store.InsertMissing(ctx, "item", tracked)
	require.NoError(t, err)
	var orphans []int64
	for _, i := range []int{9, 12, 39, 42, 45, 99} { // tracked: every third
		require.NoError(t, f.app.Delete(ctx, ids[i], false))
		orphans = append(orphans, ids[i])
	}
	_, err = store.InsertMissing(ctx, "item", []int64{ids[len(ids)-1] + 5, ids[len(ids)-1] + 900})
	require.NoError(t, err)

	sec := &failingIDs{BlobStrategy: f.secondaryItems(), failFrom: ids[70]}
	sec.failing.Store(true)
	cfg := f.SecondaryConfig(sec)
	cfg.BackfillBatch = 7
	r := f.Start(cfg)

	// The first pass fails at the page after ids[70]; every page before it
	// is written and the cursor rests at the end of the last one.
	geotest.WaitFor(t, stall, "the first pass fails at the failing page", func() (bool, string) {
		p := r.Progress()["item"]
		return !p.Running && p.Done > 0 && p.Passes == 0, fmt.Sprintf("%+v", p)
	})
	// Pages end at every 7th id listed; the failing page is the first
	// that starts at or after ids[70].
	gone := map[int64]bool{}
	for _, id := range orphans {
		gone[id] = true
	}
	var listed []int64
	for _, id := range ids {
		if !gone[id] {
			listed = append(listed, id)
		}
	}
	var wantCursor int64
	for i := 6; i < len(listed); i += 7 {
		if listed[i] >= sec.failFrom {
			wantCursor = listed[i]
			break
		}
	}
	cursor, err := store.ConsistencyCursor(ctx, "item")
	require.NoError(t, err)
	require.Equal(t, wantCursor, cursor, "every page before the failing one is written, and none after")
	var beyond int64
	require.NoError(t, f.TrackingDB.GetContext(ctx, &beyond,
		`SELECT count(*) FROM geo_registry WHERE replicable = 'item' AND model_id > $1 AND model_id <= $2`, cursor, ids[len(ids)-1]))
	var trackedBeyond int64
	for _, id := range tracked {
		if id > cursor {
			trackedBeyond++
		}
	}
	require.Equal(t, trackedBeyond, beyond, "no row written past the cursor but those tracked before")

	sec.failing.Store(false)
	r.TriggerConsistency()
	geotest.WaitFor(t, stall, "the pass completes", func() (bool, string) {
		p := r.Progress()["item"]
		return p.Passes == 1 && !p.Running, fmt.Sprintf("%+v", p)
	})
	var got []int64
	require.NoError(t, f.TrackingDB.SelectContext(ctx, &got,
		`SELECT model_id FROM geo_registry WHERE replicable = 'item' ORDER BY model_id`))
	require.Equal(t, listed, got)
	cursor, err = store.ConsistencyCursor(ctx, "item")
	require.NoError(t, err)
	require.Zero(t, cursor, "a completed pass starts the next one over")
}

// TestConsistencyPassListsAheadAndStops: while a batch's write waits (an
// uncommitted row for its first id holds it), the pass has listed exactly
// the two batches after it and no more, and nothing is written; stopping
// the secondary then returns promptly (the lister, blocked handing over
// its batch, ends too) and saves no cursor; a new secondary completes the
// pass.
func TestConsistencyPassListsAheadAndStops(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	ids, store := f.pausedBacklog(t, 100)

	lock, err := f.TrackingDB.BeginTxx(ctx, nil)
	require.NoError(t, err)
	defer lock.Rollback()
	_, err = lock.ExecContext(ctx, `INSERT INTO geo_registry (replicable, model_id) VALUES ('item', $1)`, ids[0])
	require.NoError(t, err) // invisible to the pass's listing; its insert of ids[0] waits for this

	sec := &failingIDs{BlobStrategy: f.secondaryItems()}
	cfg := f.SecondaryConfig(sec)
	cfg.BackfillBatch = 10
	r := f.Start(cfg)
	geotest.WaitFor(t, stall, "the pass lists ahead of its waiting write", func() (bool, string) {
		return sec.calls.Load() >= 3, fmt.Sprintf("IDs called %d times", sec.calls.Load())
	})
	require.EqualValues(t, 3, sec.calls.Load(), "one batch writing, one handed over, one waiting to be: no more")
	var rows int64
	require.NoError(t, f.TrackingDB.GetContext(ctx, &rows, `SELECT count(*) FROM geo_registry`))
	require.Zero(t, rows)

	stopped := make(chan error, 1)
	go func() { stopped <- r.Stop() }()
	select {
	case <-stopped:
	case <-time.After(hangGuard):
		t.Fatalf("the secondary did not stop within %v while its pass waited to write", hangGuard)
	}
	cursor, err := store.ConsistencyCursor(ctx, "item")
	require.NoError(t, err)
	require.Zero(t, cursor, "no batch was written, so no cursor")
	require.NoError(t, lock.Rollback())

	r = f.Start(cfg)
	geotest.WaitFor(t, stall, "a new secondary completes the pass", func() (bool, string) {
		p := r.Progress()["item"]
		return p.Passes == 1 && !p.Running, fmt.Sprintf("%+v", p)
	})
	require.NoError(t, f.TrackingDB.GetContext(ctx, &rows, `SELECT count(*) FROM geo_registry`))
	require.EqualValues(t, len(ids), rows)
}

// heldOrphanCheck is a strategy whose second listing of the page after
// after, the pass's orphan check of that page (confirmOrphans lists the
// page's range again), signals entered and waits for release: it holds
// the pass's write of that page while the lister goes on.
type heldOrphanCheck struct {
	*failingIDs
	after   int64
	listed  atomic.Int32 // listings starting at after
	entered chan struct{}
	release chan struct{}
}

func (h *heldOrphanCheck) IDs(ctx context.Context, after int64, limit int) ([]int64, error) {
	if after == h.after && h.listed.Add(1) == 2 {
		close(h.entered)
		select {
		case <-h.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return h.failingIDs.IDs(ctx, after, limit)
}

// TestRecordDeletedAfterListingIsNotResurrected (R2 against the listing
// window): a record listed in the batch after the one being written is
// deleted, and its event handled, before its batch is written; the pass
// then gives it a pending row, which the sync engine must remove (the
// record is gone) without fetching bytes: the secondary converges with no
// extra row or file.
func TestRecordDeletedAfterListingIsNotResurrected(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	ids, store := f.pausedBacklog(t, 30)
	// An orphan in the first batch: its check on the primary holds the
	// batch's write while the next batch is listed.
	orphan := ids[5]
	_, err := store.InsertMissing(ctx, "item", []int64{orphan})
	require.NoError(t, err)
	require.NoError(t, f.app.Delete(ctx, orphan, false))

	sec := &heldOrphanCheck{failingIDs: &failingIDs{BlobStrategy: f.secondaryItems()}, after: 0,
		entered: make(chan struct{}), release: make(chan struct{})}
	released := false
	defer func() {
		if !released {
			close(sec.release)
		}
	}()
	cfg := f.SecondaryConfig(sec)
	cfg.BackfillBatch = 10
	r := f.Start(cfg)
	waitClosed(t, sec.entered, "the orphan check of the first batch")
	// The held check is not counted yet: two listings are the first
	// batch's and the second's.
	geotest.WaitFor(t, stall, "the second batch is listed while the first is written", func() (bool, string) {
		return sec.calls.Load() >= 2, fmt.Sprintf("IDs called %d times", sec.calls.Load())
	})
	gone := ids[15] // in the second batch, already listed
	require.NoError(t, f.app.Delete(ctx, gone, true))
	geotest.WaitFor(t, stall, "the delete event is handled", func() (bool, string) {
		st := r.Consumer().Stats()
		return st.Consumed >= 1, fmt.Sprintf("%+v", st)
	})

	require.NoError(t, store.Resume(ctx, "item"))
	close(sec.release)
	released = true
	geotest.WaitFor(t, stall, "the pass completes", func() (bool, string) {
		p := r.Progress()["item"]
		return p.Passes == 1 && !p.Running, fmt.Sprintf("%+v", p)
	})
	require.EqualValues(t, len(ids)-1, r.Progress()["item"].Inserted,
		"the pass wrote a row for every id it listed, the deleted one included")
	f.waitConverged(t, stall, sec)
	_, err = r.Store().Get(ctx, "item", gone)
	require.ErrorIs(t, err, registry.ErrNotFound, "the deleted record's row must not survive")
}
