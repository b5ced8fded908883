package packagefile_test

import (
	"context"
	"testing"

	"github.com/jmoiron/sqlx"

	pf "github.com/geoframework/geo/examples/packagefile"
	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/geotest/s3test"
	"github.com/geoframework/geo/strategy"
)

func app(a geotest.App) *pf.App {
	return &pf.App{DB: a.DB, Storage: a.Storage, Publisher: a.Publisher, Adapter: &pf.Strategy{DB: a.DB}}
}

func TestConformance(t *testing.T) { geotest.RunBlobStrategy(t, harness()) }

// TestConformanceObjectStorage runs the suite with the sites on S3
// (versitygw): both, and each alone.
func TestConformanceObjectStorage(t *testing.T) {
	srv := s3test.New()
	t.Cleanup(func() { _ = srv.Stop() })
	for _, st := range geotest.ObjectStorage() {
		t.Run(st.String(), func(t *testing.T) {
			h := harness()
			h.Storage, h.S3 = st, srv
			geotest.RunBlobStrategy(t, h)
		})
	}
}

func harness() geotest.Harness {
	return geotest.Harness{
		Setup:          pf.CreateSchema,
		Strategy:       func(db *sqlx.DB) strategy.BlobStrategy { return &pf.Strategy{DB: db} },
		ScopedStrategy: func(db *sqlx.DB) strategy.BlobStrategy { return &pf.Strategy{DB: db, ProjectIDs: []int64{1}} },
		Create: func(ctx context.Context, a geotest.App, b []byte) (int64, error) {
			return app(a).AddFile(ctx, 1, "left-pad", "1.0", "lp.tgz", b)
		},
		CreateOutOfScope: func(ctx context.Context, a geotest.App, b []byte) (int64, error) {
			return app(a).AddFile(ctx, 2, "x", "2.0", "x.tgz", b)
		},
		Update: func(ctx context.Context, a geotest.App, id int64, b []byte) error {
			return app(a).ReplaceFile(ctx, id, b)
		},
		Delete: func(ctx context.Context, a geotest.App, id int64) error { return app(a).DeleteFile(ctx, id) },
	}
}
