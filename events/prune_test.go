package events_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

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
	go func() { done <- events.RunPruner(ctx, e.primary, events.PrunerConfig{Batch: 1}) }()
	waitFor(t, 20*time.Second, "old events pruned", func() bool {
		var n int
		return e.primary.Get(&n, `SELECT count(*) FROM geo_events`) == nil && n == 1
	})
	cancel()
	require.NoError(t, <-done)
	assert.ErrorIs(t, events.RunPruner(context.Background(), e.primary, events.PrunerConfig{Batch: -1}), events.ErrInvalidConfig)
}

// TestFellBehindRetention: a consumer whose cursor is older than the pruned
// mark reports it, calls OnFellBehind, jumps to the mark and goes on.
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
	n, err := events.Prune(ctx, e.primary, 7*24*time.Hour, 100)
	require.NoError(t, err)
	require.EqualValues(t, 3, n)

	c2, err := events.NewConsumer(cfg)
	require.NoError(t, err)
	run(t, c2)
	waitFor(t, 20*time.Second, "fell behind", func() bool { return c2.Stats().FellBehind })
	waitFor(t, 20*time.Second, "events after the mark", func() bool { return c2.Stats().Consumed == 2 })
	assert.EqualValues(t, 1, called.Load(), "OnFellBehind calls")
	assert.Equal(t, []int64{4, 5}, rec.modelIDs())
	_, markID := e.prunedMark(t)
	s := c2.Stats()
	assert.Greater(t, s.Cursor.ID, markID)
	assert.False(t, c1.Stats().FellBehind)
}
