package packagefile_test

import (
	"context"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/geoframework/geo/examples/packagefile"
	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/strategy"
)

func app(a geotest.App) *packagefile.App {
	return &packagefile.App{DB: a.DB, Storage: a.Storage, Publisher: a.Publisher, Adapter: &packagefile.Strategy{DB: a.DB}}
}

func TestConformance(t *testing.T) {
	geotest.RunBlobStrategy(t, geotest.Harness{
		Setup:          packagefile.CreateSchema,
		Strategy:       func(db *sqlx.DB) strategy.BlobStrategy { return &packagefile.Strategy{DB: db} },
		ScopedStrategy: func(db *sqlx.DB) strategy.BlobStrategy { return &packagefile.Strategy{DB: db, ProjectIDs: []int64{1}} },
		Create: func(ctx context.Context, a geotest.App, b []byte) (int64, error) {
			return app(a).AddFile(ctx, 1, "left-pad", "1.0.0", "left-pad-1.0.0.tgz", b)
		},
		CreateOutOfScope: func(ctx context.Context, a geotest.App, b []byte) (int64, error) {
			return app(a).AddFile(ctx, 2, "right-pad", "2.0.0", "right-pad-2.0.0.tgz", b)
		},
		Update: func(ctx context.Context, a geotest.App, id int64, b []byte) error {
			return app(a).ReplaceFile(ctx, id, b)
		},
		Delete: func(ctx context.Context, a geotest.App, id int64) error { return app(a).DeleteFile(ctx, id) },
	})
}
