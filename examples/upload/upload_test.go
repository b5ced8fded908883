package upload_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/geoframework/geo/examples/upload"
	"github.com/geoframework/geo/geotest"
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

func TestConformance(t *testing.T) {
	geotest.RunBlobStrategy(t, geotest.Harness{
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
	})
}
