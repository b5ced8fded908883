package replicator_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/strategy"
)

// blockingGone is the items adapter (without BlobKeys) whose lookups of
// one id go: the claim's (the engine resolves claimed keys) fails, so the
// sync looks the key up itself; the sync's waits for a signal and then
// says the record is gone. Later lookups answer truly: the sync that
// follows the new claim (the row was marked pending again) finds the
// record and syncs it, so a "removed" outcome can only come from the
// stale sync.
type blockingGone struct {
	strategy.BlobStrategy
	id      int64
	entered chan struct{}
	release chan struct{}
	calls   atomic.Int32
}

func (b *blockingGone) BlobKey(ctx context.Context, id int64) (string, error) {
	if id == b.id {
		switch b.calls.Add(1) {
		case 1:
			return "", errors.New("replica unavailable")
		case 2:
			select {
			case b.entered <- struct{}{}:
			default:
			}
			<-b.release
			return "", strategy.ErrNotFound
		}
	}
	return b.BlobStrategy.BlobKey(ctx, id)
}

// TestGoneWithStaleClaimIsSuperseded is the regression test for a sync
// that found its record gone but whose claim was no longer current (the
// row had been marked pending again meanwhile): DeleteIfClaim changed
// nothing, yet the engine logged "record gone: removed" and counted it
// as removed (found by geochaos races, where a recreated id showed a
// "removed" outcome although its row was kept). It is superseded.
func TestGoneWithStaleClaimIsSuperseded(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	id, err := f.app.Create(ctx, 0, payload(1, 100))
	require.NoError(t, err)
	sec := &blockingGone{BlobStrategy: f.secondaryItems(), id: id, entered: make(chan struct{}, 1), release: make(chan struct{})}
	cfg := f.SecondaryConfig(sec)
	obs := &outcomeCounter{n: map[replicator.SyncOutcome]int{}}
	cfg.Observer = obs
	r := f.Start(cfg)
	select {
	case <-sec.entered:
	case <-time.After(hangGuard):
		t.Fatal("no sync of the record started")
	}
	// The row is marked pending again while the sync looks the record up.
	_, err = engineStore(t, f).MarkPending(ctx, "item", []int64{id})
	require.NoError(t, err)
	close(sec.release)
	require.NoError(t, r.Stop())
	obs.mu.Lock()
	defer obs.mu.Unlock()
	require.Zero(t, obs.n[replicator.ResultRemoved], "outcomes: %v", obs.n)
	require.GreaterOrEqual(t, obs.n[replicator.ResultSuperseded], 1, "outcomes: %v", obs.n)
}
