package replicator_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
)

// TestReclaimDuringOldSyncKeepsTheNewClaim is the regression test for the
// sync engine tracking in-flight work by record only (found by geochaos
// races). An update during a sync makes the row pending; the engine claims
// it again while the old sync still runs. Before the fix the two tasks
// shared one slot: lease renewal reported the old generation lost and
// cancelled the NEW sync (the row went failed and backed off), and when
// the old sync ended it removed the new one's slot, so the new claim was
// no longer renewed and was claimed a third time after its lease.
func TestReclaimDuringOldSyncKeepsTheNewClaim(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	g, url := f.gated(t)
	// Created without an event (the pass at start finds it): a created
	// event can reach a new secondary late, after the update's (its
	// transaction is visible once every older one of the cluster has
	// ended, which other tests on a loaded machine delay), and it made
	// the row pending again while the test watched the new claim.
	ids, err := f.app.BulkCreate(ctx, 1, 0, func(int) []byte { return payload(1, 64<<10) })
	require.NoError(t, err)
	id := ids[0]
	arrived1, release1 := g.Hold("item", id)
	defer release1()
	sec := f.secondaryItems()
	cfg := f.SecondaryConfig(sec)
	cfg.PrimaryURL = url
	// A short lease, so renewals come often; not the 1 s minimum, whose
	// renewal every 333 ms a loaded machine misses (the lease then
	// expires and the claim is lost for a reason this test is not about).
	cfg.Lease = 5 * time.Second
	obs := &outcomeCounter{n: map[replicator.SyncOutcome]int{}}
	cfg.Observer = obs
	r := f.Start(cfg)
	waitClosed(t, arrived1, "first sync in flight")
	first, err := r.Store().Get(ctx, "item", id)
	require.NoError(t, err)

	arrived2, release2 := g.Hold("item", id)
	defer release2()
	newBytes := payload(2, 70<<10)
	require.NoError(t, f.app.Update(ctx, id, newBytes))
	waitClosed(t, arrived2, "second sync (after the update) in flight")
	second, err := r.Store().Get(ctx, "item", id)
	require.NoError(t, err)
	require.NotEqual(t, first.Seq, second.Seq)

	// held waits for three renewals of the new claim's lease (watched in
	// the row, not slept through: a loaded machine renews late), and
	// checks at every look that the new claim is still held.
	held := func(what string) {
		t.Helper()
		var renewed []time.Time
		geotest.WaitFor(t, stall, what+": three renewals of the new claim's lease", func() (bool, string) {
			row, err := r.Store().Get(ctx, "item", id)
			require.NoError(t, err)
			require.Equal(t, registry.StateStarted, row.State, "%s: row of the sync in flight (failure: %q)", what, row.LastSyncFailure)
			require.Equal(t, second.Seq, row.Seq, what)
			if len(renewed) == 0 || row.LeaseExpiresAt.After(renewed[len(renewed)-1]) {
				renewed = append(renewed, row.LeaseExpiresAt)
			}
			return len(renewed) > 3, fmt.Sprintf("%d renewals, the lease expires at %v", len(renewed)-1, row.LeaseExpiresAt)
		})
	}
	// Renewals run and must keep the new claim.
	held("while both syncs run")
	// The old sync ends; the new one must stay claimed and renewed, not be
	// claimed again after its lease.
	release1()
	held("after the old sync ended")
	require.Equal(t, 1, f.Transfers.Count("item", id), "transfers served while the new sync is held")

	release2()
	f.waitConverged(t, stall, sec)
	row, err := r.Store().Get(ctx, "item", id)
	require.NoError(t, err)
	require.Equal(t, 2, f.Transfers.Count("item", id), fmt.Sprintf("transfers of the record (row %v)", row.State))
	// The old sync was stopped because its claim was stale: superseded,
	// not a failure of the record (metrics and logs said "failed").
	obs.mu.Lock()
	defer obs.mu.Unlock()
	require.Zero(t, obs.n[replicator.ResultFailed], "syncs reported failed: %v", obs.n)
	require.Equal(t, 1, obs.n[replicator.ResultSuperseded], "syncs reported superseded: %v", obs.n)
}

// outcomeCounter is a replicator.Observer counting sync outcomes.
type outcomeCounter struct {
	replicator.NopObserver
	mu sync.Mutex
	n  map[replicator.SyncOutcome]int
}

func (o *outcomeCounter) SyncDone(ev replicator.SyncEvent) {
	o.mu.Lock()
	o.n[ev.Outcome]++
	o.mu.Unlock()
}
