package replicator_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/replicator/transfer"
	"github.com/geoframework/geo/strategy"
)

// lastPosition is the Position of the latest event the application
// published for item id: what Publish returned inside its transaction.
func lastPosition(t *testing.T, db *sqlx.DB, id int64) events.Position {
	t.Helper()
	var xid string
	var p events.Position
	require.NoError(t, db.QueryRowContext(context.Background(),
		`SELECT xid::text, id FROM geo_events WHERE replicable = 'item' AND model_id = $1 ORDER BY xid DESC, id DESC LIMIT 1`,
		id).Scan(&xid, &p.ID))
	x, err := strconv.ParseUint(xid, 10, 64)
	require.NoError(t, err)
	p.XID = x
	return p
}

// readAll reads r to its end and closes it.
func readFrom(t *testing.T, r *replicator.BlobReader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	require.NoError(t, err)
	require.NoError(t, r.Close())
	return b
}

// waitState waits until item id's row is in state want.
func waitState(t *testing.T, store *registry.Store, id int64, want registry.State) {
	t.Helper()
	geotest.WaitFor(t, stall, fmt.Sprintf("item %d %s", id, want), func() (bool, string) {
		row, err := store.Get(context.Background(), "item", id)
		if err != nil {
			return false, err.Error()
		}
		return row.State == want, "state " + row.State.String()
	})
}

// waitConsuming waits until r's event consumer holds its cursor, so that
// events published from now on are the consumer's (not backfill's).
func waitConsuming(t *testing.T, r *geotest.Running) {
	t.Helper()
	geotest.WaitFor(t, stall, "event consumer active", func() (bool, string) {
		st := r.EventStats()
		return st.Active && !st.Cursor.IsZero(), fmt.Sprintf("%+v", st)
	})
}

// A read of a record the secondary has not synced streams from the
// primary (never a 404 for a record the primary has), makes the record's
// row so that the sync follows, and once the sync happened reads stay
// local: no more transfers.
func TestOpenReadsThroughBeforeSyncThenLocal(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	want := payload(1, 70_000)
	id, err := f.app.Create(ctx, 0, want)
	require.NoError(t, err)

	// Not running yet: no row, no copy.
	sec, err := replicator.NewSecondary(f.SecondaryConfig(f.secondaryItems()))
	require.NoError(t, err)
	rd, err := sec.Open(ctx, "item", id, nil)
	require.NoError(t, err)
	require.Equal(t, replicator.ReadPrimary, rd.Source, "read before the sync")
	require.Equal(t, int64(len(want)), rd.Size)
	require.Len(t, rd.Checksum, 64)
	remoteSum := rd.Checksum
	require.Equal(t, want, readFrom(t, rd), "bytes read through")
	require.Equal(t, 1, f.Transfers.Count("item", id), "transfers after the read-through")
	row, err := sec.Store().Get(ctx, "item", id)
	require.NoError(t, err, "the read-through makes the record's row")
	require.Equal(t, registry.StatePending, row.State)

	// Unknown records and types.
	_, err = sec.Open(ctx, "item", id+1000, nil)
	require.ErrorIs(t, err, strategy.ErrNotFound, "a record the primary does not have")
	require.ErrorIs(t, err, transfer.ErrRecordNotFound)
	_, err = sec.Open(ctx, "nope", id, nil)
	require.ErrorIs(t, err, strategy.ErrUnknownReplicable)

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sec.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	waitState(t, sec.Store(), id, registry.StateSynced)
	synced := f.Transfers.Count("item", id)
	require.Equal(t, 2, synced, "transfers: the read-through and the sync")

	for range 3 {
		rd, err := sec.Open(ctx, "item", id, nil)
		require.NoError(t, err)
		require.Equal(t, replicator.ReadLocal, rd.Source, "read after the sync")
		require.Equal(t, remoteSum, rd.Checksum, "the local copy's checksum")
		require.Equal(t, want, readFrom(t, rd))
		require.False(t, rd.Fresh.IsZero(), "a local read says how fresh it is")
	}
	require.Equal(t, synced, f.Transfers.Count("item", id), "transfers: local reads transfer nothing")
}

// A record missing on the primary (its bytes lost) is its own error, not
// a not-found.
func TestOpenMissingOnPrimary(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	id, err := f.app.Create(ctx, 0, payload(2, 100))
	require.NoError(t, err)
	key, err := f.items.BlobKey(ctx, id)
	require.NoError(t, err)
	require.NoError(t, f.PrimaryStorage.Remove(ctx, key))
	sec, err := replicator.NewSecondary(f.SecondaryConfig(f.secondaryItems()))
	require.NoError(t, err)
	_, err = sec.Open(ctx, "item", id, nil)
	require.ErrorIs(t, err, transfer.ErrMissingOnPrimary)
	require.False(t, errors.Is(err, strategy.ErrNotFound), "missing on primary is not a not-found: %v", err)
}

// A record changed on the primary after it synced: given the change's
// Position, a read never serves the older bytes. Without Wait it reads
// the new bytes from the primary; with Wait it waits for the new sync and
// reads the new copy locally.
func TestOpenAfterPositionNeverServesOlderBytes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	r := f.Start(f.SecondaryConfig(f.secondaryItems()))
	waitConsuming(t, r)
	v1, v2 := payload(3, 5000), payload(4, 6000)
	id, err := f.app.Create(ctx, 0, v1)
	require.NoError(t, err)
	p1 := lastPosition(t, f.PrimaryDB, id)
	require.NoError(t, r.WaitSynced(ctx, p1))
	rd, err := r.Open(ctx, "item", id, &replicator.ReadOptions{After: p1})
	require.NoError(t, err)
	require.Equal(t, replicator.ReadLocal, rd.Source, "read at the create's position once synced")
	require.False(t, rd.Fresh.Less(p1), "Fresh %v before After %v", rd.Fresh, p1)
	require.Equal(t, v1, readFrom(t, rd))

	// The type is paused: the update's event is handled (the row turns
	// pending) but its sync cannot run.
	require.NoError(t, r.Pause(ctx, "item"))
	require.NoError(t, f.app.UpdateInPlace(ctx, id, v2))
	p2 := lastPosition(t, f.PrimaryDB, id)
	require.True(t, p1.Less(p2))

	// Without Wait, at once, whether or not the event was handled yet.
	rd, err = r.Open(ctx, "item", id, &replicator.ReadOptions{After: p2})
	require.NoError(t, err)
	require.Equal(t, replicator.ReadPrimary, rd.Source, "read after an unsynced change")
	require.False(t, rd.Fresh.Less(p2))
	require.Equal(t, v2, readFrom(t, rd), "bytes at or after the change's position")

	// With Wait: it waits for the sync, which the pause holds back.
	type result struct {
		rd  *replicator.BlobReader
		err error
	}
	got := make(chan result, 1)
	go func() {
		rd, err := r.Open(ctx, "item", id, &replicator.ReadOptions{After: p2, Wait: true})
		got <- result{rd, err}
	}()
	waitState(t, r.Store(), id, registry.StatePending)
	geotest.WaitFor(t, stall, "event cursor past the update", func() (bool, string) {
		c := r.EventStats().Cursor
		return !c.Less(p2), c.String()
	})
	select {
	case res := <-got:
		t.Fatalf("Open with Wait returned while the change's sync is paused: source %v, err %v", res.rd.Source, res.err)
	default:
	}
	require.NoError(t, r.Resume(ctx, "item"))
	var res result
	select {
	case res = <-got:
	case <-time.After(hangGuard):
		t.Fatal("Open with Wait did not return after the sync resumed")
	}
	require.NoError(t, res.err)
	require.Equal(t, replicator.ReadLocal, res.rd.Source, "waited read")
	require.Equal(t, v2, readFrom(t, res.rd), "waited read's bytes")

	// Without a position, a local copy says how fresh it is.
	rd, err = r.Open(ctx, "item", id, nil)
	require.NoError(t, err)
	require.Equal(t, replicator.ReadLocal, rd.Source)
	require.False(t, rd.Fresh.Less(p2), "Fresh %v: the cursor it read at", rd.Fresh)
	require.Equal(t, v2, readFrom(t, rd))
}

// WaitSynced returns once the write's event is handled and its row
// settled, within the event lag; many waiters share the same checks.
func TestWaitSyncedThousandWaiters(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	r := f.Start(f.SecondaryConfig(f.secondaryItems()))
	waitConsuming(t, r)
	const waiters = 1000
	ids := f.createItems(t, 5, 2000)
	ps := make([]events.Position, len(ids))
	for i, id := range ids {
		ps[i] = lastPosition(t, f.PrimaryDB, id)
	}
	before := replicator.WaitChecks(r.Secondary)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, waiters)
	for i := range waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wctx, cancel := context.WithTimeout(ctx, hangGuard)
			defer cancel()
			errs <- r.WaitSynced(wctx, ps[i%len(ps)])
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	elapsed := time.Since(start)
	checks := replicator.WaitChecks(r.Secondary) - before
	for _, id := range ids {
		row, err := r.Store().Get(ctx, "item", id)
		require.NoError(t, err)
		require.Equal(t, registry.StateSynced, row.State, "item %d when WaitSynced returned (failure: %q)", id, row.LastSyncFailure)
	}
	t.Logf("%d waiters on %d writes returned after %v with %d settle checks", waiters, len(ids), elapsed, checks)
	// One check serves every waiter: a query per waiter would be 1,000.
	require.Less(t, checks, int64(waiters/10), "settle checks for %d waiters", waiters)

	// A waiter for a Position already passed returns at once.
	require.NoError(t, r.WaitSynced(ctx, ps[0]))
	// A Position of a transaction that rolled back ends too, on an idle
	// primary.
	tx, err := f.PrimaryDB.BeginTxx(ctx, nil)
	require.NoError(t, err)
	rolled, err := f.Primary.Publisher().Publish(ctx, tx, "item", events.OpCreated, ids[0]+1000, "")
	require.NoError(t, err)
	require.NoError(t, tx.Rollback())
	wctx, cancel := context.WithTimeout(ctx, hangGuard)
	defer cancel()
	require.NoError(t, r.WaitSynced(wctx, rolled), "wait for a rolled-back Position")
}

// WaitSynced and WaitRecord end with ctx: a deadline and a cancellation
// both return their error while the row cannot settle (its type paused).
func TestWaitSyncedTimeoutAndCancel(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	r := f.Start(f.SecondaryConfig(f.secondaryItems()))
	waitConsuming(t, r)
	require.NoError(t, r.Pause(ctx, "item"))
	id, err := f.app.Create(ctx, 0, payload(5, 100))
	require.NoError(t, err)
	p := lastPosition(t, f.PrimaryDB, id)
	waitState(t, r.Store(), id, registry.StatePending)

	tctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	err = r.WaitSynced(tctx, p)
	require.ErrorIs(t, err, context.DeadlineExceeded, "WaitSynced past its deadline")

	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 2)
	go func() { done <- r.WaitSynced(cctx, p) }()
	go func() { _, err := r.WaitRecord(cctx, "item", id); done <- err }()
	cancel()
	for range 2 {
		select {
		case err := <-done:
			require.ErrorIs(t, err, context.Canceled)
		case <-time.After(hangGuard):
			t.Fatal("a cancelled wait did not return")
		}
	}

	// Resumed, both return: the row settled.
	rec := make(chan error, 1)
	go func() {
		row, err := r.WaitRecord(ctx, "item", id)
		if err == nil && row.State != registry.StateSynced {
			err = fmt.Errorf("WaitRecord returned state %v", row.State)
		}
		rec <- err
	}()
	require.NoError(t, r.Resume(ctx, "item"))
	wctx, cancel := context.WithTimeout(ctx, hangGuard)
	defer cancel()
	require.NoError(t, r.WaitSynced(wctx, p))
	select {
	case err := <-rec:
		require.NoError(t, err)
	case <-time.After(hangGuard):
		t.Fatal("WaitRecord did not return after the sync")
	}

	// WaitRecord of a record the primary does not have.
	_, err = r.WaitRecord(ctx, "item", id+1000)
	require.ErrorIs(t, err, strategy.ErrNotFound)
}

// A change whose event this secondary has not handled (no consumer runs)
// leaves the row synced at the same key with the older bytes: only the
// Position tells Open that the local copy is too old.
func TestOpenAfterPositionNotYetConsumed(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	r := f.Start(f.SecondaryConfig(f.secondaryItems()))
	waitConsuming(t, r)
	v1, v2 := payload(10, 3000), payload(11, 3000)
	id, err := f.app.Create(ctx, 0, v1)
	require.NoError(t, err)
	require.NoError(t, r.WaitSynced(ctx, lastPosition(t, f.PrimaryDB, id)))
	require.NoError(t, r.Stop())
	require.NoError(t, f.app.UpdateInPlace(ctx, id, v2))
	p2 := lastPosition(t, f.PrimaryDB, id)

	sec, err := replicator.NewSecondary(f.SecondaryConfig(f.secondaryItems()))
	require.NoError(t, err)
	rd, err := sec.Open(ctx, "item", id, &replicator.ReadOptions{After: p2})
	require.NoError(t, err)
	require.Equal(t, replicator.ReadPrimary, rd.Source, "read at a Position the secondary has not reached")
	require.Equal(t, v2, readFrom(t, rd), "bytes at the change's position")
	rd, err = sec.Open(ctx, "item", id, nil)
	require.NoError(t, err)
	require.Equal(t, replicator.ReadLocal, rd.Source, "read without a Position: the local copy, as fresh as the cursor")
	require.Equal(t, v1, readFrom(t, rd))
	require.True(t, rd.Fresh.Less(p2), "Fresh %v says the copy may predate %v", rd.Fresh, p2)

	// An update under a new key: the row's key is no longer the record's,
	// so even without a Position the older copy is not served.
	v3 := payload(12, 3000)
	require.NoError(t, f.app.Update(ctx, id, v3))
	rd, err = sec.Open(ctx, "item", id, nil)
	require.NoError(t, err)
	require.Equal(t, replicator.ReadPrimary, rd.Source, "read after the record's key changed")
	require.Equal(t, v3, readFrom(t, rd))
}
