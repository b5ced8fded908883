package events_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/geotest/pgtest"
	"github.com/geoframework/geo/registry"
)

// TestConsumerOnHotStandby reads the outbox through a real streaming hot
// standby, as a secondary does in production. It also shows the snapshot
// xmin bound holds there: an event committed on the primary while an older
// transaction is still open is held back until that one ends, and then
// both arrive in (xid, id) order.
func TestConsumerOnHotStandby(t *testing.T) {
	t.Parallel()
	// A hang guard: initdb, a base backup and two starts on a loaded
	// machine take a good part of a minute.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	primary, err := pgtest.StartCluster(ctx, pgtest.Options{})
	if err != nil {
		t.Fatalf("no throwaway PostgreSQL cluster (needs initdb/pg_ctl: apt-get install postgresql): %v", err)
	}
	t.Cleanup(func() { primary.Stop() })
	admin := sqlx.MustOpen("postgres", primary.URL("postgres"))
	defer admin.Close()
	for _, db := range []string{"app", "tracking"} {
		_, err := admin.ExecContext(ctx, `CREATE DATABASE `+db)
		require.NoError(t, err)
	}
	pdb := sqlx.MustOpen("postgres", primary.URL("app"))
	defer pdb.Close()
	require.NoError(t, registry.MigratePrimary(ctx, pdb))
	tracking := sqlx.MustOpen("postgres", primary.URL("tracking"))
	defer tracking.Close()
	require.NoError(t, registry.MigrateTracking(ctx, tracking))

	standby, err := primary.StartStandby(ctx)
	require.NoError(t, err, "StartStandby")
	t.Cleanup(func() { standby.Stop() })
	sdb := sqlx.MustOpen("postgres", standby.URL("app"))
	defer sdb.Close()
	var recovering bool
	require.NoError(t, sdb.GetContext(ctx, &recovering, `SELECT pg_is_in_recovery()`))
	require.True(t, recovering, "the source must be a standby")

	pub, err := events.NewPublisher(names)
	require.NoError(t, err)
	rec := newRecorder()
	c, err := events.NewConsumer(events.ConsumerConfig{
		Source: sdb, Tracking: tracking, Handler: rec, Known: pub.Known,
		PollInterval: 10 * time.Millisecond, NotifyURL: primary.URL("app"),
	})
	require.NoError(t, err)
	run(t, c)
	waitActive(t, c)

	publish := func(db sqlx.ExtContext, ids ...int64) {
		for _, id := range ids {
			require.NoError(t, errOf(pub.Publish(ctx, db, "package_file", events.OpCreated, id, fmt.Sprint("k/", id))))
		}
	}
	tx, err := pdb.BeginTxx(ctx, nil)
	require.NoError(t, err)
	publish(tx, 1, 2, 3)
	require.NoError(t, tx.Commit())
	waitFor(t, waitGuard, "events through the standby", func() bool { return rec.distinct() == 3 })

	// An older transaction stays open on the primary...
	older, err := pdb.BeginTxx(ctx, nil)
	require.NoError(t, err)
	defer older.Rollback()
	publish(older, 10)
	// ...while a newer one commits.
	newer, err := pdb.BeginTxx(ctx, nil)
	require.NoError(t, err)
	publish(newer, 11)
	require.NoError(t, newer.Commit())

	waitFor(t, waitGuard, "the newer event replayed on the standby", func() bool {
		var n int
		return sdb.GetContext(ctx, &n, `SELECT count(*) FROM geo_events WHERE model_id = 11`) == nil && n == 1
	})
	polls := c.Stats().Polls
	waitFor(t, waitGuard, "two more polls", func() bool { return c.Stats().Polls >= polls+2 })
	assert.Equal(t, 3, rec.distinct(), "the newer event was delivered while an older transaction was open")
	waitFor(t, waitGuard, "lag to count the held-back event", func() bool { return c.Stats().LagEvents >= 1 })

	require.NoError(t, older.Commit())
	waitFor(t, waitGuard, "both events once the older commits", func() bool { return rec.distinct() == 5 })
	assert.Equal(t, []int64{1, 2, 3, 10, 11}, rec.modelIDs())
	rec.checkBatchOrder(t)

	// The consumer never wrote to the standby (it could not) nor to the
	// primary's app database: its cursor lives in tracking.
	var cursors int
	require.NoError(t, tracking.GetContext(ctx, &cursors, `SELECT count(*) FROM geo_event_cursor`))
	assert.Equal(t, 1, cursors)
}
