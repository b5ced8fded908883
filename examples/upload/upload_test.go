package upload_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/geoframework/geo/examples/upload"
	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/geotest/s3test"
	"github.com/geoframework/geo/strategy"
)

func service(a geotest.App) upload.Uploads {
	return upload.Uploads{DB: a.DB, Storage: a.Storage, Publisher: a.Publisher}
}

func create(modelType string) func(context.Context, geotest.App, []byte) (int64, error) {
	return func(ctx context.Context, a geotest.App, b []byte) (int64, error) {
		u, err := service(a).Create(ctx, modelType, 7, "../my report (final).pdf", bytes.NewReader(b))
		return u.ID, err
	}
}

func TestConformance(t *testing.T) { geotest.RunBlobStrategy(t, harness()) }

// TestConformanceObjectStorage runs the suite with the sites on S3
// (versitygw): both, and each alone.
func TestConformanceObjectStorage(t *testing.T) {
	srv := s3test.New()
	t.Cleanup(func() { _ = srv.Stop() })
	for _, st := range geotest.ObjectStorage() { // s3-s3, dir-s3, s3-dir
		t.Run(st.String(), func(t *testing.T) {
			h := harness() // the same Harness as TestConformance
			h.Storage, h.S3 = st, srv
			geotest.RunBlobStrategy(t, h)
		})
	}
}

func harness() geotest.Harness {
	return geotest.Harness{
		Setup:    upload.CreateSchema,
		Strategy: func(db *sqlx.DB) strategy.BlobStrategy { return &upload.Strategy{DB: db} },
		Create:   create("Project"),
		Update: func(ctx context.Context, a geotest.App, id int64, b []byte) error {
			_, err := service(a).Replace(ctx, id, bytes.NewReader(b))
			return err
		},
		Delete: func(ctx context.Context, a geotest.App, id int64) error { return service(a).Delete(ctx, id) },
		ScopedStrategy: func(db *sqlx.DB) strategy.BlobStrategy {
			return &upload.Strategy{DB: db, ModelTypes: []string{"Project", "Group"}}
		},
		CreateOutOfScope: create("User"),
	}
}
