package replicator_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

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

// TestClaimedKeysAreStagedBeforeTheTransfer: the engine resolves the keys
// of what it claims and records them as staged keys, durably, before the
// transfers start (so a publish never waits for a staging transaction);
// with strategy.BatchKeyer it asks no BlobKey at all, without it one
// BlobKey per record.
func TestClaimedKeysAreStagedBeforeTheTransfer(t *testing.T) {
	t.Parallel()
	for _, batch := range []bool{true, false} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			f := newFixture(t)
			ctx := context.Background()
			g, url := f.gated(t)
			var ids []int64
			for i := range 5 {
				id, err := f.app.Create(ctx, 0, payload(i, 1000))
				require.NoError(t, err)
				ids = append(ids, id)
			}
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
			var staged string
			require.NoError(t, r.Store().DB().GetContext(ctx, &staged,
				`SELECT coalesce(staged_key, '') FROM geo_registry WHERE replicable = 'item' AND model_id = $1`, held))
			require.Equal(t, key, staged, "staged key of a record whose transfer is in flight")
			row, err := r.Store().Get(ctx, "item", held)
			require.NoError(t, err)
			require.Equal(t, registry.StateStarted, row.State)
			release()
			geotest.WaitFor(t, 60*time.Second, "every row synced, staged keys cleared by the settles", func() (bool, string) {
				var synced, staged int
				err := r.Store().DB().QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE state = 2),
					count(*) FILTER (WHERE staged_key IS NOT NULL) FROM geo_registry`).Scan(&synced, &staged)
				return err == nil && synced == len(ids) && staged == 0, fmt.Sprint(synced, staged, err)
			})
			// Counted before waitConverged, which asks BlobKey itself.
			if batch {
				require.Zero(t, counted.one.Load(), "BlobKey calls with BlobKeys offered")
				require.NotZero(t, counted.many.Load(), "BlobKeys calls")
			} else {
				require.Zero(t, counted.many.Load(), "BlobKeys calls through a strategy without it")
				// One per record: the consistency pass asks none for
				// records it only inserts.
				require.EqualValues(t, len(ids), counted.one.Load(), "BlobKey calls without BlobKeys")
			}
			f.waitConverged(t, 60*time.Second, sec)
		})
	}
}
