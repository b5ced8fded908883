package replicator_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/internal/testtype"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/strategy"
)

func typeStatus(t *testing.T, st replicator.Status, name string) replicator.TypeStatus {
	t.Helper()
	for _, ts := range st.Types {
		if ts.Replicable == name {
			return ts
		}
	}
	t.Fatalf("status has no type %q: %+v", name, st.Types)
	return replicator.TypeStatus{}
}

// A paused type is not synced while another type proceeds; the pause is
// persisted in the tracking database, reported by Status, and Resume lets
// the type sync.
func TestPausedTypeIsNotSyncedWhileAnotherProceeds(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	_, err := f.app.BulkCreate(ctx, 20, 0, func(i int) []byte { return payload(i, 300) })
	require.NoError(t, err)
	for i := range 20 {
		_, err := f.other.create(ctx, f.PrimaryStorage, payload(100+i, 200))
		require.NoError(t, err)
	}
	other := &attachments{db: f.PrimaryDB}
	// Paused before the secondary starts, so that its first pass and
	// claims cannot come first on a loaded machine; Pause through the
	// running secondary again (a no-op) checks the call.
	pre, err := registry.NewStore(f.TrackingDB, registry.Options{})
	require.NoError(t, err)
	require.NoError(t, pre.Pause(ctx, "item"))
	r := f.Start(f.SecondaryConfig(f.secondaryItems(), other))
	require.NoError(t, r.Pause(ctx, "item"))
	require.ErrorIs(t, r.Pause(ctx, "nope"), strategy.ErrUnknownReplicable)
	r.TriggerConsistency()

	store := r.Store()
	geotest.WaitFor(t, stall, "attachments synced while item is paused", func() (bool, string) {
		c, err := store.Counts(ctx)
		if err != nil {
			return false, err.Error()
		}
		return c["attachment"].Synced == 20 && c["item"].Total == 20,
			fmt.Sprintf("attachment %+v, item %+v", c["attachment"], c["item"])
	})
	c, err := store.Counts(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(0), c["item"].Synced+c["item"].Started, "paused type: rows synced or started")
	require.Equal(t, 0, f.Transfers.Count("item", -1), "paused type: transfers served")

	st, err := r.Status(ctx)
	require.NoError(t, err)
	item := typeStatus(t, st, "item")
	require.True(t, item.Paused, "Status: item paused")
	require.Equal(t, int64(20), item.Counts.Pending)
	require.Equal(t, replicator.HealthDegraded, st.Health, "Status health with a paused type; reasons %v", st.Reasons)
	require.Contains(t, fmt.Sprint(st.Reasons), "item: paused since")
	att := typeStatus(t, st, "attachment")
	require.False(t, att.Paused)
	require.InDelta(t, 100, att.SyncedPercent, 0.001)

	require.NoError(t, r.Resume(ctx, "item"))
	f.waitConverged(t, stall, f.secondaryItems(), other)
}

// Status reports counts, percentages, the oldest pending row, the most
// frequent failure reasons and new failures, and Resync/ResyncAll move
// rows back to pending.
func TestStatusReportsFailuresAndPending(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	ids, err := f.app.BulkCreate(ctx, 10, 0, func(i int) []byte { return payload(i, 100) })
	require.NoError(t, err)
	for _, id := range ids[:3] { // lost on the primary: these fail
		key, err := f.items.BlobKey(ctx, id)
		require.NoError(t, err)
		require.NoError(t, f.PrimaryStorage.Remove(ctx, key))
	}
	r := f.Start(f.SecondaryConfig(f.secondaryItems()))
	r.TriggerConsistency()
	store := r.Store()
	geotest.WaitFor(t, stall, "7 synced, 3 failed", func() (bool, string) {
		c, err := store.Counts(ctx)
		if err != nil {
			return false, err.Error()
		}
		return c["item"].Synced == 7 && c["item"].Failed == 3, fmt.Sprintf("%+v", c["item"])
	})
	require.NoError(t, r.Stop())

	n, err := r.Resync(ctx, "item", ids[3:5])
	require.NoError(t, err)
	require.Equal(t, int64(2), n, "Resync: rows changed")
	_, err = r.Resync(ctx, "nope", ids)
	require.True(t, errors.Is(err, strategy.ErrUnknownReplicable), "Resync of an unknown type: %v", err)

	st, err := r.Status(ctx)
	require.NoError(t, err)
	item := typeStatus(t, st, "item")
	require.Equal(t, registry.Counts{
		Total: 10, Pending: 2, Synced: 5, Failed: 3,
		VerificationPending: item.Counts.VerificationPending, VerificationSucceeded: item.Counts.VerificationSucceeded,
		VerificationFailed: item.Counts.VerificationFailed, MissingOnPrimary: 3,
	}, item.Counts)
	require.InDelta(t, 50, item.SyncedPercent, 0.001)
	require.InDelta(t, 30, item.FailedPercent, 0.001)
	require.False(t, item.OldestPending.IsZero(), "OldestPending set with pending rows")
	require.Len(t, item.SyncFailures, 1, "one distinct failure reason: %+v", item.SyncFailures)
	require.Equal(t, int64(3), item.SyncFailures[0].Count)
	require.Equal(t, int64(3), item.NewFailures, "rows failed for the first time in the window")
	// Stopped, the secondary is no process alive: unhealthy whatever else.
	require.Equal(t, replicator.HealthUnhealthy, st.Health, "reasons %v", st.Reasons)
	require.Len(t, st.Reasons, 2, "reasons %v", st.Reasons)
	require.Contains(t, st.Reasons[0], "no secondary process alive")
	require.Contains(t, st.Reasons[1], "item: failures growing: 3 rows")

	// The same report from the database alone (what geoctl shows).
	st2, err := replicator.ReadStatus(ctx, f.TrackingDB, nil, replicator.StatusOptions{Primary: f.PrimaryDB})
	require.NoError(t, err)
	require.Equal(t, item.Counts, typeStatus(t, st2, "item").Counts)
	require.Equal(t, st.Reasons, st2.Reasons)

	// Twenty minutes later with nothing running: no progress, and the
	// failures are no longer new.
	later := replicator.StatusOptions{Now: func() time.Time { return time.Now().Add(20 * time.Minute) }}
	st3, err := replicator.ReadStatus(ctx, f.TrackingDB, nil, later)
	require.NoError(t, err)
	require.Equal(t, replicator.HealthUnhealthy, st3.Health, "reasons %v", st3.Reasons)
	require.Len(t, st3.Reasons, 2, "reasons %v", st3.Reasons)
	require.Contains(t, st3.Reasons[0], "no secondary process alive")
	require.Contains(t, st3.Reasons[1], "item: no progress for 10m0s: 2 rows pending")

	n, err = r.ResyncAll(ctx, "item", true)
	require.NoError(t, err)
	require.Equal(t, int64(3), n, "ResyncAll(onlyFailed): rows changed")
}

// BenchmarkStatus times Secondary.Status over 1,000,000 registry rows of
// two types, inserted with InsertMissing in batches of 10,000 (the
// backfill's path), after VACUUM ANALYZE (autovacuum's steady state),
// then again after 97% of them were settled as synced and verified (a
// settled registry). Target: < 100 ms. It prints the median in ms.
func BenchmarkStatus(b *testing.B) {
	const rows, batch = 1_000_000, 10_000
	ctx := context.Background()
	var items *testtype.Type
	w := geotest.NewWorld(b, geotest.WorldConfig{
		Server: pg,
		Setup: func(ctx context.Context, db *sqlx.DB) error {
			_, err := db.ExecContext(ctx, testtype.Schema("items"))
			return err
		},
		Strategies: func(db *sqlx.DB) []strategy.BlobStrategy {
			items = &testtype.Type{TypeName: "item", Table: "items", DB: db}
			return []strategy.BlobStrategy{items, &attachments{db: db}}
		},
	})
	sec, err := replicator.NewSecondary(w.SecondaryConfig(items, &attachments{db: w.PrimaryDB}))
	require.NoError(b, err)
	store, err := regstore.NewStore(w.TrackingDB, regstore.Options{})
	require.NoError(b, err)
	ids := make([]int64, batch)
	for start := 0; start < rows; start += batch {
		name := "item"
		if start >= rows*9/10 {
			name = "attachment"
		}
		for i := range ids {
			ids[i] = int64(start + i + 1)
		}
		_, err := store.InsertMissing(ctx, name, ids)
		require.NoError(b, err)
	}
	vacuum := func() {
		_, err := w.TrackingDB.ExecContext(ctx, `VACUUM ANALYZE geo_registry`)
		require.NoError(b, err)
	}
	vacuum()
	run := func(b *testing.B, want int64) {
		st, err := sec.Status(ctx) // warm-up
		require.NoError(b, err)
		var total int64
		for _, ts := range st.Types {
			total += ts.Counts.Total
		}
		require.Equal(b, want, total, "Status: total rows")
		// The reference, interleaved so both see the same machine load:
		// the cheapest exact pass there is, SELECT count(*) of the table.
		times := make([]float64, 0, b.N)
		raw := make([]float64, 0, b.N)
		b.ResetTimer()
		for range b.N {
			start := time.Now()
			if _, err := sec.Status(ctx); err != nil {
				b.Fatal(err)
			}
			times = append(times, float64(time.Since(start).Microseconds())/1000)
			b.StopTimer()
			start = time.Now()
			var n int64
			require.NoError(b, w.TrackingDB.GetContext(ctx, &n, `SELECT count(*) FROM geo_registry`))
			raw = append(raw, float64(time.Since(start).Microseconds())/1000)
			b.StartTimer()
		}
		b.StopTimer()
		slices.Sort(times)
		slices.Sort(raw)
		median, rawMedian := times[len(times)/2], raw[len(raw)/2]
		b.ReportMetric(median, "ms/status")
		b.ReportMetric(rawMedian, "ms/count(*)")
		fmt.Printf("%s: Status over %d registry rows: median %.1f ms of %d (target < 100 ms); "+
			"SELECT count(*) of the same table in the same run: %.1f ms (Status = %.2fx)\n",
			b.Name(), want, median, len(times), rawMedian, median/rawMedian)
	}
	b.Run("pending", func(b *testing.B) { run(b, rows) })
	// Settle 97% as synced and verified, 1% failed, the rest pending.
	_, err = w.TrackingDB.ExecContext(ctx, `UPDATE geo_registry SET
  state = CASE WHEN model_id % 100 = 0 THEN 0 WHEN model_id % 100 = 1 THEN 3 ELSE 2 END,
  verification_state = CASE WHEN model_id % 100 < 3 THEN 0 ELSE 2 END,
  last_synced_at = CASE WHEN model_id % 100 >= 2 THEN now() END,
  verified_at = CASE WHEN model_id % 100 >= 3 THEN now() END,
  retry_count = CASE WHEN model_id % 100 = 1 THEN 1 ELSE 0 END,
  retry_at = CASE WHEN model_id % 100 = 1 THEN now() + interval '1 hour' END,
  last_sync_failure = CASE WHEN model_id % 100 = 1 THEN 'primary answered 500' END`)
	require.NoError(b, err)
	vacuum()
	b.Run("settled", func(b *testing.B) { run(b, rows) })
}
