package replicator_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/internal/testtype"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/strategy"
)

// countingKeys counts the secondary's key lookups, one record at a time
// (BlobKey) and in batches (BlobKeys).
type countingKeys struct {
	*testtype.Type
	one, many atomic.Int32
}

func (c *countingKeys) BlobKey(ctx context.Context, id int64) (string, error) {
	c.one.Add(1)
	return c.Type.BlobKey(ctx, id)
}

func (c *countingKeys) BlobKeys(ctx context.Context, ids []int64) (map[int64]string, error) {
	c.many.Add(1)
	return c.Type.BlobKeys(ctx, ids)
}

// singleKeys hides BlobKeys: a strategy without strategy.BatchKeyer.
type singleKeys struct{ strategy.BlobStrategy }

// TestClaimedKeysAreStagedWhileTheTransferRuns: the engine resolves the
// keys of what it claims before the transfers start and records them as
// staged keys, durably, while they run (so the settle does not wait for a
// staging transaction of its own); with strategy.BatchKeyer it asks no
// BlobKey at all, without it one BlobKey per record.
func TestClaimedKeysAreStagedWhileTheTransferRuns(t *testing.T) {
	t.Parallel()
	for _, batch := range []bool{true, false} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			f := newFixture(t)
			ctx := context.Background()
			g, url := f.gated(t)
			ids := f.createItems(t, 5, 1000)
			held := ids[2]
			arrived, release := g.Hold("item", held)
			defer release()
			counted := &countingKeys{Type: f.secondaryItems()}
			var sec strategy.BlobStrategy = counted
			if !batch {
				sec = singleKeys{counted}
			}
			cfg := f.SecondaryConfig(sec)
			cfg.PrimaryURL = url
			r := f.Start(cfg)
			r.TriggerConsistency()
			waitClosed(t, arrived, "transfer in flight")
			key, err := f.items.BlobKey(ctx, held)
			require.NoError(t, err)
			geotest.WaitFor(t, stall, "the key of a record whose transfer is held is staged", func() (bool, string) {
				var staged string
				err := f.TrackingDB.GetContext(ctx, &staged,
					`SELECT coalesce(staged_key, '') FROM geo_registry WHERE replicable = 'item' AND model_id = $1`, held)
				return err == nil && staged == key, fmt.Sprintf("staged %q, want %q (%v)", staged, key, err)
			})
			row, err := r.Store().Get(ctx, "item", held)
			require.NoError(t, err)
			require.Equal(t, registry.StateStarted, row.State)
			release()
			geotest.WaitFor(t, stall, "every row synced, staged keys cleared by the settles", func() (bool, string) {
				var synced, staged int
				err := f.TrackingDB.QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE state = 2),
					count(*) FILTER (WHERE staged_key IS NOT NULL) FROM geo_registry`).Scan(&synced, &staged)
				return err == nil && synced == len(ids) && staged == 0, fmt.Sprint(synced, staged, err)
			})
			// Counted before waitConverged, which asks BlobKey itself.
			if batch {
				require.Zero(t, counted.one.Load(), "BlobKey calls with BlobKeys offered")
				require.NotZero(t, counted.many.Load(), "BlobKeys calls")
			} else {
				require.Zero(t, counted.many.Load(), "BlobKeys calls through a strategy without it")
				// At least one per record (the consistency pass asks none
				// for records it only inserts; a record whose created
				// event and backfill both mark it pending is synced twice).
				require.GreaterOrEqual(t, int(counted.one.Load()), len(ids), "BlobKey calls without BlobKeys")
			}
			f.waitConverged(t, stall, sec)
		})
	}
}
