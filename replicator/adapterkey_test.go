package replicator_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/internal/testtype"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/strategy"
)

// hostilePrimaryKeys is the primary's items adapter (without BlobKeys)
// giving one record a hostile storage key, as a broken adapter on the
// primary would; the secondary's adapter gives the true one.
type hostilePrimaryKeys struct {
	strategy.BlobStrategy
	bad atomic.Int64
}

func (h *hostilePrimaryKeys) BlobKey(ctx context.Context, id int64) (string, error) {
	if id == h.bad.Load() {
		return "../../etc/passwd", nil
	}
	return h.BlobStrategy.BlobKey(ctx, id)
}

// TestPrimaryAdapterBadKeyIsTheRowsFailure: a record whose key on the
// primary is invalid fails on the secondary with a reason that says the
// primary's adapter returned an invalid key for it (the endpoint's
// adapter_bad_key), not an anonymous "500 internal" an operator would take
// for an outage; the other records sync.
func TestPrimaryAdapterBadKeyIsTheRowsFailure(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var items *testtype.Type
	hostile := &hostilePrimaryKeys{}
	w := geotest.NewWorld(t, geotest.WorldConfig{
		Server: pg,
		Setup: func(ctx context.Context, db *sqlx.DB) error {
			_, err := db.ExecContext(ctx, testtype.Schema("items"))
			return err
		},
		Strategies: func(db *sqlx.DB) []strategy.BlobStrategy {
			items = &testtype.Type{TypeName: "item", Table: "items", DB: db}
			hostile.BlobStrategy = items
			return []strategy.BlobStrategy{hostile}
		},
	})
	app := &testtype.App{Type: items, Storage: w.PrimaryStorage, Publisher: w.Primary.Publisher()}
	good, err := app.Create(ctx, 0, payload(1, 100))
	require.NoError(t, err)
	bad, err := app.Create(ctx, 0, payload(2, 100))
	require.NoError(t, err)
	hostile.bad.Store(bad)

	cfg := w.SecondaryConfig(&testtype.Type{TypeName: "item", Table: "items", DB: w.PrimaryDB})
	cfg.Retry = strategy.Backoff{Base: time.Hour, Jitter: -1} // the failed row stays failed
	r := w.Start(cfg)
	store := r.Store()
	geotest.WaitFor(t, stall, "the good record synced, the bad one failed for the primary's adapter", func() (bool, string) {
		g, err := store.Get(ctx, "item", good)
		if err != nil {
			return false, err.Error()
		}
		b, err := store.Get(ctx, "item", bad)
		if err != nil {
			return false, err.Error()
		}
		return g.State == registry.StateSynced && b.State == registry.StateFailed &&
				strings.Contains(b.LastSyncFailure, "the primary's adapter returned an invalid storage key for the record"),
			fmt.Sprintf("good %v, bad %v: %q", g.State, b.State, b.LastSyncFailure)
	})
}
