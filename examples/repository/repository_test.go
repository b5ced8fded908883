package repository_test

import (
	"context"
	"testing"

	"github.com/jmoiron/sqlx"

	repo "github.com/geoframework/geo/examples/repository"
	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/strategy"
)

func app(a geotest.RepositoryApp) *repo.App {
	return &repo.App{DB: a.DB, Root: a.Root, Publisher: a.Publisher}
}

func TestConformance(t *testing.T) {
	geotest.RunRepositoryStrategy(t, geotest.RepositoryHarness{
		Setup:          repo.CreateSchema,
		Strategy:       func(db *sqlx.DB) strategy.RepositoryStrategy { return &repo.Strategy{DB: db} },
		ScopedStrategy: func(db *sqlx.DB) strategy.RepositoryStrategy { return &repo.Strategy{DB: db, GroupIDs: []int64{1}} },
		Create: func(ctx context.Context, a geotest.RepositoryApp) (int64, error) {
			return app(a).CreateProject(ctx, 1, "geo")
		},
		CreateOutOfScope: func(ctx context.Context, a geotest.RepositoryApp) (int64, error) {
			return app(a).CreateProject(ctx, 2, "other")
		},
		Pushed: func(ctx context.Context, a geotest.RepositoryApp, id int64) error { return app(a).Pushed(ctx, id) },
		Delete: func(ctx context.Context, a geotest.RepositoryApp, id int64) error {
			return app(a).DeleteProject(ctx, id)
		},
	})
}
