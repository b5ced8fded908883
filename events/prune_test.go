package events_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/events"
)

// insertAged writes events for model ids created age ago.
func (e *env) insertAged(t testing.TB, age time.Duration, ids ...int64) {
	t.Helper()
	for _, id := range ids {
		_, err := e.primary.Exec(`INSERT INTO geo_events (replicable, op, model_id, created_at)
			VALUES ('package_file', 1, $1, now() - $2::bigint * interval '1 microsecond')`, id, age.Microseconds())
		require.NoError(t, err)
	}
}

// insertAgedTx writes, in tx, an event for model id created age ago: tx
// stands for a transaction that started that long ago.
func insertAgedTx(t testing.TB, tx *sqlx.Tx, age time.Duration, id int64) {
	t.Helper()
	_, err := tx.Exec(`INSERT INTO geo_events (replicable, op, model_id, created_at)
		VALUES ('package_file', 2, $1, now() - $2::bigint * interval '1 microsecond')`, id, age.Microseconds())
	require.NoError(t, err)
}

// waitAllEnded waits until every transaction of the cluster that was
// running (or had committed) when it was called lies below the snapshot's
// xmin, so that Prune may delete the events committed so far. Tests share
// the cluster: another test's open transaction holds the xmin back.
func (e *env) waitAllEnded(t testing.TB) {
	t.Helper()
	var xmax string
	require.NoError(t, e.primary.Get(&xmax, `SELECT pg_snapshot_xmax(pg_current_snapshot())::text`))
	waitFor(t, waitGuard, "every transaction started so far to end", func() bool {
		var ok bool
		return e.primary.Get(&ok, `SELECT pg_snapshot_xmin(pg_current_snapshot()) >= $1::text::xid8`, xmax) == nil && ok
	})
}

func (e *env) prunedMark(t testing.TB) (xid string, id int64) {
	t.Helper()
	require.NoError(t, e.primary.QueryRow(`SELECT xid::text, id FROM geo_events_pruned`).Scan(&xid, &id))
	return xid, id
}

// TestPruneDeletesOnlyOldEventsInBatches: only events past retention go,
// batch by batch, and the pruned mark ends at the largest (xid, id) deleted.
func TestPruneDeletesOnlyOldEventsInBatches(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	const week = 7 * 24 * time.Hour
	e.insertAged(t, 8*24*time.Hour, 1, 2, 3, 4, 5, 6, 7)
	e.insertAged(t, time.Hour, 8, 9)
	e.insertAged(t, 10*24*time.Hour, 10) // old, but written last: the mark is its (xid, id)

	var last struct {
		xid string
		id  int64
	}
	require.NoError(t, e.primary.QueryRow(`SELECT xid::text, id FROM geo_events WHERE model_id = 10`).Scan(&last.xid, &last.id))

	e.waitAllEnded(t)
	n, err := events.Prune(ctx, e.primary, week, 3) // 8 old events: batches of 3, 3, 2
	require.NoError(t, err)
	assert.EqualValues(t, 8, n)
	var left []int64
	require.NoError(t, e.primary.Select(&left, `SELECT model_id FROM geo_events ORDER BY model_id`))
	assert.Equal(t, []int64{8, 9}, left)

	xid, id := e.prunedMark(t)
	assert.Equal(t, last.xid, xid, "mark xid: the largest (xid, id) deleted")
	assert.Equal(t, last.id, id, "mark id")

	// Nothing more to prune: the mark stays.
	n, err = events.Prune(ctx, e.primary, week, 3)
	require.NoError(t, err)
	assert.Zero(t, n)
	xid2, id2 := e.prunedMark(t)
	assert.Equal(t, xid, xid2)
	assert.Equal(t, id, id2)

	_, err = events.Prune(ctx, e.primary, 0, 3)
	assert.Error(t, err)
	_, err = events.Prune(ctx, e.primary, week, 0)
	assert.Error(t, err)
}

// TestRunPruner prunes once at start and stops with its context.
func TestRunPruner(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.insertAged(t, 8*24*time.Hour, 1, 2)
	e.insertAged(t, time.Minute, 3)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// A short Interval: a round that another test's open transaction held
	// back (the xmin bound) is retried soon.
	go func() {
		done <- events.RunPruner(ctx, e.primary, events.PrunerConfig{Batch: 1, Interval: 50 * time.Millisecond})
	}()
	waitFor(t, waitGuard, "old events pruned", func() bool {
		var n int
		return e.primary.Get(&n, `SELECT count(*) FROM geo_events`) == nil && n == 1
	})
	cancel()
	require.NoError(t, <-done)
	assert.ErrorIs(t, events.RunPruner(context.Background(), e.primary, events.PrunerConfig{Batch: -1}), events.ErrInvalidConfig)
}

// TestFellBehindRetention: a consumer whose cursor is older than the pruned
// mark reports it, calls OnFellBehind once, and goes on past the mark.
func TestFellBehindRetention(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	rec := newRecorder()
	var called atomic.Int32
	cfg := e.config(t, rec)
	cfg.OnFellBehind = func(context.Context) { called.Add(1) }

	// A first run fixes the cursor at the end of the log, then the
	// secondary goes away.
	c1, err := events.NewConsumer(cfg)
	require.NoError(t, err)
	stop := run(t, c1)
	waitActive(t, c1)
	stop()

	// Meanwhile the primary writes events, and retention prunes some of
	// them before the secondary comes back.
	e.insertAged(t, 8*24*time.Hour, 1, 2, 3)
	e.insertAged(t, time.Minute, 4, 5)
	e.waitAllEnded(t)
	n, err := events.Prune(ctx, e.primary, 7*24*time.Hour, 100)
	require.NoError(t, err)
	require.EqualValues(t, 3, n)

	c2, err := events.NewConsumer(cfg)
	require.NoError(t, err)
	run(t, c2)
	waitFor(t, waitGuard, "fell behind", func() bool { return c2.Stats().FellBehind })
	waitFor(t, waitGuard, "events after the mark", func() bool { return c2.Stats().Consumed == 2 })
	assert.EqualValues(t, 1, called.Load(), "OnFellBehind calls")
	assert.Equal(t, []int64{4, 5}, rec.modelIDs())
	_, markID := e.prunedMark(t)
	s := c2.Stats()
	assert.Greater(t, s.Cursor.ID, markID)
	assert.False(t, c1.Stats().FellBehind)
}

// TestPruneWaitsForOpenTransactions is issue 20's sequence, with real
// transactions: T_old starts; T_open starts later, publishes (taking the
// older xid) and stays open; T_old publishes (a newer xid) and commits; its
// event is past retention (created_at is the transaction's start) while
// T_open's is not committed yet. Prune must not delete T_old's event while
// T_open is open: a pruned mark above T_open's xid would make a consumer
// jump past T_open's event, which commits later and was never pruned.
// Once T_open commits, the consumer delivers both, and nobody fell behind.
func TestPruneWaitsForOpenTransactions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	rec := newRecorder()
	var called atomic.Int32
	cfg := e.config(t, rec)
	cfg.OnFellBehind = func(context.Context) { called.Add(1) }
	c, err := events.NewConsumer(cfg)
	require.NoError(t, err)
	run(t, c)
	waitActive(t, c)

	const retention = time.Second
	tOld, err := e.primary.BeginTxx(ctx, nil)
	require.NoError(t, err)
	defer tOld.Rollback()
	var oldStart time.Time
	require.NoError(t, tOld.Get(&oldStart, `SELECT now()`))
	waitFor(t, waitGuard, "T_old's start to be past retention", func() bool {
		var past bool
		return e.primary.Get(&past, `SELECT clock_timestamp() - $1::timestamptz > 2 * $2::bigint * interval '1 microsecond'`,
			oldStart, retention.Microseconds()) == nil && past
	})

	tOpen, err := e.primary.BeginTxx(ctx, nil)
	require.NoError(t, err)
	defer tOpen.Rollback()
	require.NoError(t, e.pub.Publish(ctx, tOpen, "package_file", events.OpUpdated, 1, "open/1"))
	require.NoError(t, e.pub.Publish(ctx, tOld, "package_file", events.OpUpdated, 2, "old/2"))
	var openXID, oldXID uint64
	require.NoError(t, tOpen.Get(&openXID, `SELECT pg_current_xact_id()::text::bigint`))
	require.NoError(t, tOld.Get(&oldXID, `SELECT pg_current_xact_id()::text::bigint`))
	require.Less(t, openXID, oldXID, "T_open holds the older xid")
	require.NoError(t, tOld.Commit())

	n, err := events.Prune(ctx, e.primary, retention, 100)
	require.NoError(t, err)
	assert.Zero(t, n, "Prune deleted T_old's event while T_open, with an older xid, was still open")
	var marks int
	require.NoError(t, e.primary.Get(&marks, `SELECT count(*) FROM geo_events_pruned`))
	assert.Zero(t, marks, "pruned mark set")

	require.NoError(t, tOpen.Commit())
	waitFor(t, waitGuard, "T_open's and T_old's events delivered", func() bool { return rec.distinct() == 2 })
	assert.Equal(t, []int64{1, 2}, rec.modelIDs(), "delivered in (xid, id) order: T_open's first")
	assert.False(t, c.Stats().FellBehind, "fell behind")
	assert.Zero(t, called.Load(), "OnFellBehind calls")
}

// TestFellBehindDeliversWhatWasNotPruned: when retention pruned some of the
// events after a consumer's cursor, the consumer reports that it fell
// behind but still delivers every event that is left, including one below
// the pruned mark (a transaction that started later, so was not yet past
// retention, but took the older xid). It must not jump over it to the mark.
func TestFellBehindDeliversWhatWasNotPruned(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	rec := newRecorder()
	var called atomic.Int32
	cfg := e.config(t, rec)
	cfg.OnFellBehind = func(context.Context) { called.Add(1) }

	// A first run fixes the cursor at the end of the log, then the
	// secondary goes away.
	c1, err := events.NewConsumer(cfg)
	require.NoError(t, err)
	stop := run(t, c1)
	waitActive(t, c1)
	stop()

	// T_young takes the older xid; T_aged, which started 8 days ago,
	// takes the newer one. Both commit.
	tYoung, err := e.primary.BeginTxx(ctx, nil)
	require.NoError(t, err)
	defer tYoung.Rollback()
	tAged, err := e.primary.BeginTxx(ctx, nil)
	require.NoError(t, err)
	defer tAged.Rollback()
	require.NoError(t, e.pub.Publish(ctx, tYoung, "package_file", events.OpUpdated, 1, "young/1"))
	insertAgedTx(t, tAged, 8*24*time.Hour, 2)
	require.NoError(t, tYoung.Commit())
	require.NoError(t, tAged.Commit())
	e.publish(t, "package_file", 3) // after both

	e.waitAllEnded(t)
	n, err := events.Prune(ctx, e.primary, 7*24*time.Hour, 100)
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "T_aged's event pruned")

	c2, err := events.NewConsumer(cfg)
	require.NoError(t, err)
	run(t, c2)
	waitFor(t, waitGuard, "fell behind", func() bool { return c2.Stats().FellBehind })
	waitFor(t, waitGuard, "the events left delivered", func() bool { return rec.distinct() == 2 })
	assert.Equal(t, []int64{1, 3}, rec.modelIDs(), "T_young's event, below the pruned mark, and the one after it")
	assert.EqualValues(t, 1, called.Load(), "OnFellBehind calls")
	markXID, markID := e.prunedMark(t)
	waitFor(t, waitGuard, "the cursor past the mark", func() bool {
		cur := c2.Stats().Cursor
		return fmt.Sprint(cur.XID) != markXID || cur.ID != markID
	})
}

// TestFellBehindMovesToTheMarkOnlyWhenNothingIsLeft: a consumer whose
// cursor is before the pruned mark, with no event left after its cursor,
// saves the mark as its cursor, so a restart does not report the same loss
// again.
func TestFellBehindMovesToTheMarkOnlyWhenNothingIsLeft(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	var called atomic.Int32
	cfg := e.config(t, newRecorder())
	cfg.OnFellBehind = func(context.Context) { called.Add(1) }
	c1, err := events.NewConsumer(cfg)
	require.NoError(t, err)
	stop := run(t, c1)
	waitActive(t, c1)
	stop()

	e.insertAged(t, 8*24*time.Hour, 1, 2)
	e.waitAllEnded(t)
	n, err := events.Prune(ctx, e.primary, 7*24*time.Hour, 100)
	require.NoError(t, err)
	require.EqualValues(t, 2, n)
	markXID, markID := e.prunedMark(t)

	c2, err := events.NewConsumer(cfg)
	require.NoError(t, err)
	stop = run(t, c2)
	waitFor(t, waitGuard, "the cursor at the mark", func() bool {
		cur := c2.Stats().Cursor
		return fmt.Sprint(cur.XID) == markXID && cur.ID == markID
	})
	stop()
	assert.EqualValues(t, 1, called.Load(), "OnFellBehind calls")

	c3, err := events.NewConsumer(cfg)
	require.NoError(t, err)
	run(t, c3)
	waitActive(t, c3)
	e.publish(t, "package_file", 3)
	waitFor(t, waitGuard, "a later event consumed", func() bool { return c3.Stats().Consumed == 1 })
	assert.False(t, c3.Stats().FellBehind, "a restart after the move reports the loss again")
	assert.EqualValues(t, 1, called.Load(), "OnFellBehind calls")
}
