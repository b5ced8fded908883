package replicator_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
)

// TestDrainedForPlannedSwitchover checks the drained check of a planned
// switchover against a running pair: drained once everything written up to
// the primary's outbox head is synced and verified; not drained while
// records named by events up to it wait (their type paused), each listed;
// drained again once they are synced; never drained at a position the
// cursor has not reached.
func TestDrainedForPlannedSwitchover(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	r := f.Start(f.SecondaryConfig(f.secondaryItems()))
	ids := f.createItems(t, 5, 300)
	cfg := replicator.PromoteConfig{Tracking: f.TrackingDB, Standby: f.PrimaryDB}

	head, ok, err := replicator.OutboxHead(ctx, f.PrimaryDB)
	require.NoError(t, err)
	require.True(t, ok)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute) // a hang guard
	defer cancel()
	rep, err := replicator.WaitDrained(wctx, cfg, head)
	require.NoError(t, err)
	require.True(t, rep.Drained && rep.CursorPassed)
	require.EqualValues(t, 5, rep.Records, "records named by events up to the head")

	// Paused: the events are applied (rows pending), nothing syncs.
	require.NoError(t, r.Pause(ctx, "item"))
	fresh := f.createItems(t, 3, 400)
	require.NoError(t, f.app.UpdateInPlace(ctx, ids[0], payload(77, 500)))
	require.NoError(t, f.app.Delete(ctx, ids[1], true))
	head2, _, err := replicator.OutboxHead(ctx, f.PrimaryDB)
	require.NoError(t, err)
	geotest.WaitFor(t, stall, "the cursor reaches the new head", func() (bool, string) {
		rep, err = replicator.Drained(ctx, cfg, head2)
		if err != nil {
			return false, err.Error()
		}
		return rep.CursorPassed, fmt.Sprintf("cursor %s, want %s", rep.Cursor, head2)
	})
	require.False(t, rep.Drained, "records wait")
	want := []replicator.DrainRecord{{Replicable: "item", ID: ids[0], Reason: "pending"}}
	for _, id := range fresh {
		want = append(want, replicator.DrainRecord{Replicable: "item", ID: id, Reason: "pending"})
	}
	require.ElementsMatch(t, want, rep.NotDrainedList, "records not drained (the deleted one is gone on both sides)")
	require.EqualValues(t, 4, rep.NotDrained)

	// The preflight carries the check.
	pcfg := cfg
	pcfg.DrainedAt = &head2
	pre, err := replicator.Preflight(ctx, pcfg)
	require.NoError(t, err)
	require.NotNil(t, pre.Drain)
	require.Contains(t, pre.Reasons, fmt.Sprintf("drained: 4 records named by events up to %s are not synced and verified here yet", head2))
	// This World's "standby" is the live primary's database: Force does
	// not make Promote rewrite its checksums.
	var before string
	require.NoError(t, f.PrimaryDB.GetContext(ctx, &before, `SELECT string_agg(model_id || ':' || state || ':' || gen, ',' ORDER BY model_id) FROM geo_checksums`))
	forced := cfg
	forced.Force = true
	_, err = replicator.Promote(ctx, forced)
	require.ErrorIs(t, err, replicator.ErrPromotionRefused)
	var after string
	require.NoError(t, f.PrimaryDB.GetContext(ctx, &after, `SELECT string_agg(model_id || ':' || state || ':' || gen, ',' ORDER BY model_id) FROM geo_checksums`))
	require.Equal(t, before, after, "a database not in recovery is left alone")

	require.NoError(t, r.Resume(ctx, "item"))
	rep, err = replicator.WaitDrained(wctx, cfg, head2)
	require.NoError(t, err)
	require.True(t, rep.Drained)
	require.EqualValues(t, 10, rep.Events, "events up to the head")
	require.EqualValues(t, 8, rep.Records, "records they name")

	ahead := events.Position{XID: head2.XID + 1_000_000, ID: head2.ID}
	rep, err = replicator.Drained(ctx, cfg, ahead)
	require.NoError(t, err)
	require.False(t, rep.CursorPassed || rep.Drained, "a position the cursor has not reached")
}

// TestDrainOrdersPositionsByXID is the regression test of a bug found by
// TestDrainedForPlannedSwitchover on a busy cluster: "SELECT xid::text ...
// ORDER BY xid" sorts by the text output column, so xid 998 came after
// 1004, OutboxHead named an older event and the drained walk's keyset
// skipped events. Events at xids across a digit boundary, walked one per
// batch, must all be read, and the head must be the greatest.
func TestDrainOrdersPositionsByXID(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	primary := pg.NewDatabase(t)
	require.NoError(t, registry.MigratePrimary(ctx, primary))
	tracking := pg.NewDatabase(t)
	require.NoError(t, registry.MigrateTracking(ctx, tracking))
	for i, x := range []string{"97", "998", "1004"} {
		_, err := primary.ExecContext(ctx, `INSERT INTO geo_events (xid, replicable, op, model_id) VALUES ($1::text::xid8, 'item', 3, $2)`, x, i+1)
		require.NoError(t, err)
	}
	head, ok, err := replicator.OutboxHead(ctx, primary)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, events.Position{XID: 1004, ID: 3}, head, "the outbox head")
	_, err = tracking.ExecContext(ctx, `INSERT INTO geo_event_cursor (consumer, xid, id) VALUES ('default', '1004'::xid8, 3)`)
	require.NoError(t, err)
	rep, err := replicator.Drained(ctx, replicator.PromoteConfig{Tracking: tracking, Standby: primary, BatchSize: 1}, head)
	require.NoError(t, err)
	require.EqualValues(t, 3, rep.Events, "events walked")
	require.True(t, rep.Drained, "deleted records gone on both sides: %+v", rep)
}
