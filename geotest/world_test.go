package geotest_test

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/internal/testtype"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/strategy"
)

// TestWorldHooks checks the World's hooks an adopter's tests use: the
// primary's endpoint wrapped (to count and fail transfers), the primary's
// clock, the sites' logs captured, and a Diff that tells a record that
// never arrived from one whose update failed with the older copy kept.
func TestWorldHooks(t *testing.T) {
	ctx := context.Background()
	var served, refused atomic.Int64
	var failing atomic.Bool
	core, logs := observer.New(zap.InfoLevel)
	clock := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	var typ *testtype.Type
	w := geotest.NewWorld(t, geotest.WorldConfig{
		Server: pg,
		Setup: func(ctx context.Context, db *sqlx.DB) error {
			_, err := db.ExecContext(ctx, testtype.Schema("hook_items"))
			return err
		},
		Strategies: func(db *sqlx.DB) []strategy.BlobStrategy {
			typ = &testtype.Type{TypeName: "hook_item", Table: "hook_items", DB: db}
			return []strategy.BlobStrategy{typ}
		},
		Logger: zap.New(core),
		WrapPrimary: func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
				if failing.Load() {
					refused.Add(1)
					http.Error(rw, "held by the test", http.StatusServiceUnavailable)
					return
				}
				served.Add(1)
				h.ServeHTTP(rw, r)
			})
		},
		PrimaryNow: func() time.Time { return clock },
	})
	app := &testtype.App{Type: typ, Storage: w.PrimaryStorage, Publisher: w.Primary.Publisher()}
	cfg := w.SecondaryConfig(&testtype.Type{TypeName: "hook_item", Table: "hook_items", DB: w.PrimaryDB})
	cfg.Retry = strategy.Backoff{Base: time.Hour, Max: time.Hour}
	sec := w.Start(cfg)
	store := sec.Store()

	kept, err := app.Create(ctx, 0, []byte("first version"))
	if err != nil {
		t.Fatal(err)
	}
	rowIs := func(id int64, want registry.State) func() (bool, string) {
		return func() (bool, string) {
			row, err := store.Get(ctx, "hook_item", id)
			if err != nil {
				return false, err.Error()
			}
			return row.State == want, "state " + row.State.String() + " retries " + row.LastSyncFailure
		}
	}
	geotest.WaitFor(t, time.Minute, "the first version synced", rowIs(kept, registry.StateSynced))
	if served.Load() == 0 {
		t.Fatal("the wrapped endpoint saw no transfer, yet the record synced")
	}
	checksums := w.Primary.Checksums()
	geotest.WaitFor(t, time.Minute, "the primary's checksum stored at its clock", func() (bool, string) {
		row, err := checksums.Get(ctx, "hook_item", kept)
		if err != nil {
			return false, err.Error()
		}
		return row.State == registry.VerificationSucceeded && row.VerifiedAt.Equal(clock), "state " + row.State.String() + " at " + row.VerifiedAt.String()
	})

	failing.Store(true)
	if err := app.UpdateInPlace(ctx, kept, []byte("second version")); err != nil {
		t.Fatal(err)
	}
	never, err := app.Create(ctx, 0, []byte("created while the primary refuses"))
	if err != nil {
		t.Fatal(err)
	}
	geotest.WaitFor(t, time.Minute, "the update failed", rowIs(kept, registry.StateFailed))
	geotest.WaitFor(t, time.Minute, "the new record failed", rowIs(never, registry.StateFailed))
	if refused.Load() < 2 {
		t.Fatalf("the wrapper refused %d transfers, want at least 2", refused.Load())
	}

	d, err := w.Compare(ctx, typ)
	if err != nil {
		t.Fatal(err)
	}
	if d.Stale != 1 || d.NeverArrived != 1 || d.Vanished != 0 || d.Lost != 2 || d.Corrupted != 0 {
		t.Fatalf("diff %v: want one stale copy (the failed update), one never arrived, lost=2", d)
	}

	var sawFailure bool
	for _, e := range logs.All() {
		if e.LoggerName == "secondary" && e.Message == "sync failed" && strings.Contains(e.ContextMap()["error"].(string), "503") {
			sawFailure = true
		}
	}
	if !sawFailure {
		t.Fatalf("no captured secondary log line says the sync failed with the 503 (captured %d lines)", logs.Len())
	}
}
