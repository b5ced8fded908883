package geotest_test

import (
	"context"
	"testing"

	"github.com/jmoiron/sqlx"

	pf "github.com/geoframework/geo/examples/packagefile"
	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/strategy"
)

// An adopter's whole test of a blob type, in its own _test.go file: one
// call with the adapter and the application's real code paths (here
// examples/packagefile's). The suite starts PostgreSQL (or uses
// GEO_TEST_DATABASE_URL), both sites, the transfer endpoint and the
// storage itself, and runs every clause as a subtest.
func ExampleRunBlobStrategy() {
	app := func(a geotest.App) *pf.App {
		return &pf.App{DB: a.DB, Storage: a.Storage, Publisher: a.Publisher, Adapter: &pf.Strategy{DB: a.DB}}
	}
	harness := geotest.Harness{
		Setup:    pf.CreateSchema, // the application's tables, in a fresh primary database
		Strategy: func(db *sqlx.DB) strategy.BlobStrategy { return &pf.Strategy{DB: db} },
		Create: func(ctx context.Context, a geotest.App, b []byte) (int64, error) {
			return app(a).AddFile(ctx, 1, "left-pad", "1.0", "lp.tgz", b)
		},
		Update: func(ctx context.Context, a geotest.App, id int64, b []byte) error {
			return app(a).ReplaceFile(ctx, id, b)
		},
		Delete: func(ctx context.Context, a geotest.App, id int64) error { return app(a).DeleteFile(ctx, id) },
		// ScopedStrategy and CreateOutOfScope turn on scope/respected.
		ScopedStrategy: func(db *sqlx.DB) strategy.BlobStrategy { return &pf.Strategy{DB: db, ProjectIDs: []int64{1}} },
		CreateOutOfScope: func(ctx context.Context, a geotest.App, b []byte) (int64, error) {
			return app(a).AddFile(ctx, 2, "x", "2.0", "x.tgz", b)
		},
	}

	// In the adopter's test file:
	//
	//	func TestConformance(t *testing.T) { geotest.RunBlobStrategy(t, harness) }
	_ = func(t *testing.T) { geotest.RunBlobStrategy(t, harness) }
}
