package replicator_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/registry"
)

// TestFirstPassWaitsForEventCursor is the regression test for a record
// lost between the first consistency pass and the event consumer's first
// start (found by geochaos scale-out and disk-errors). A new consumer
// starts at the end of the outbox; if the pass had already listed the
// primary's ids, a record created in between was in neither and stayed
// unsynced until the next pass (15 minutes by default). Here the consumer
// is held back by its own advisory lock while a record is created: the
// record must still be synced promptly.
func TestFirstPassWaitsForEventCursor(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	// Hold the consumer's lock so that it cannot start yet.
	conn, err := f.TrackingDB.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.ExecContext(ctx, `SELECT pg_advisory_lock(hashtextextended('geo.events.consumer:default', 0))`)
	require.NoError(t, err)

	cfg := f.SecondaryConfig(f.secondaryItems())
	cfg.ConsistencyInterval = time.Hour
	sec := f.Start(cfg)
	// Give the consistency pass time to run (it did at once before the fix).
	_ = geotest.Eventually(2*time.Second, func() (bool, string) {
		return sec.Progress()["item"].Passes > 0, "no pass yet"
	})
	id, err := f.app.Create(ctx, 0, payload(1, 100))
	require.NoError(t, err)
	_, err = conn.ExecContext(ctx, `SELECT pg_advisory_unlock(hashtextextended('geo.events.consumer:default', 0))`)
	require.NoError(t, err)

	geotest.WaitFor(t, stall, "a record created before the consumer's first start is synced", func() (bool, string) {
		row, err := sec.Store().Get(ctx, "item", id)
		if err != nil {
			return false, err.Error()
		}
		return row.State == registry.StateSynced, row.State.String()
	})
}
