package geotest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	repo "github.com/geoframework/geo/examples/repository"
	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/strategy"
)

// repoHarness is examples/repository's harness with its adapter wrapped.
func repoHarness(wrap func(s *repo.Strategy) strategy.RepositoryStrategy) geotest.RepositoryHarness {
	a := func(x geotest.RepositoryApp) *repo.App {
		return &repo.App{DB: x.DB, Root: x.Root, Publisher: x.Publisher}
	}
	return geotest.RepositoryHarness{
		Server:   pg,
		Setup:    repo.CreateSchema,
		Strategy: func(db *sqlx.DB) strategy.RepositoryStrategy { return wrap(&repo.Strategy{DB: db}) },
		ScopedStrategy: func(db *sqlx.DB) strategy.RepositoryStrategy {
			return wrap(&repo.Strategy{DB: db, GroupIDs: []int64{1}})
		},
		Create: func(ctx context.Context, x geotest.RepositoryApp) (int64, error) {
			return a(x).CreateProject(ctx, 1, "p")
		},
		CreateOutOfScope: func(ctx context.Context, x geotest.RepositoryApp) (int64, error) {
			return a(x).CreateProject(ctx, 2, "q")
		},
		Pushed: func(ctx context.Context, x geotest.RepositoryApp, id int64) error { return a(x).Pushed(ctx, id) },
		Delete: func(ctx context.Context, x geotest.RepositoryApp, id int64) error { return a(x).DeleteProject(ctx, id) },
		Stall:  10 * time.Second,
	}
}

// repoIgnoresScope lists and finds every project, whatever its scope.
type repoIgnoresScope struct{ *repo.Strategy }

func (s repoIgnoresScope) IDs(ctx context.Context, after int64, limit int) ([]int64, error) {
	return (&repo.Strategy{DB: s.DB}).IDs(ctx, after, limit)
}

func (s repoIgnoresScope) RepositoryPath(ctx context.Context, id int64) (string, error) {
	return (&repo.Strategy{DB: s.DB}).RepositoryPath(ctx, id)
}

// repoNeverNotFound answers a path for any id, the deleted included.
type repoNeverNotFound struct{ *repo.Strategy }

func (s repoNeverNotFound) RepositoryPath(ctx context.Context, id int64) (string, error) {
	return repo.DiskPath(id), nil
}

// TestRepositorySuiteCatchesBrokenTypes runs clauses of
// RunRepositoryStrategy against deliberately broken repository types (an
// adapter ignoring its scope, one that never says not found, an
// application whose post-receive path publishes nothing) and checks that
// each fails its clause with a "clause: got X, want Y" message, and that
// the correct type passes those clauses.
func TestRepositorySuiteCatchesBrokenTypes(t *testing.T) {
	correct := func(s *repo.Strategy) strategy.RepositoryStrategy { return s }
	cases := []struct {
		name   string
		h      geotest.RepositoryHarness
		clause string // "" means none may fail
	}{
		{"correct", repoHarness(correct), ""},
		{"ignores_scope", repoHarness(func(s *repo.Strategy) strategy.RepositoryStrategy {
			if s.GroupIDs == nil {
				return s
			}
			return repoIgnoresScope{s}
		}), "scope/respected"},
		{"never_not_found", repoHarness(func(s *repo.Strategy) strategy.RepositoryStrategy { return repoNeverNotFound{s} }),
			"adapter/paths_valid_stable_and_not_found"},
		{"push_not_published", func() geotest.RepositoryHarness {
			h := repoHarness(correct)
			h.Pushed = func(context.Context, geotest.RepositoryApp, int64) error { return nil }
			return h
		}(), "sync/pushed"},
	}
	all := []string{"adapter/paths_valid_stable_and_not_found", "scope/respected", "sync/pushed"}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			only := all
			if tc.clause != "" {
				only = []string{tc.clause}
			}
			r := newRecT(t, only...)
			geotest.RunRepositories(r, tc.h)
			r.finish()
			for _, c := range only {
				if r.skipped[c] {
					t.Errorf("clause %s skipped, want it run", c)
				}
			}
			if tc.clause == "" {
				for c, msgs := range r.failures {
					t.Errorf("correct type failed clause %s: %v", c, msgs)
				}
				return
			}
			msgs := r.failures[tc.clause]
			if len(msgs) == 0 {
				t.Fatalf("broken type %s: clause %s passed, want it to fail", tc.name, tc.clause)
			}
			if !strings.HasPrefix(msgs[0], tc.clause+": ") || !strings.Contains(msgs[0], "got ") || !strings.Contains(msgs[0], "want ") {
				t.Errorf("failure message %q: want the form \"%s: ... got X, want Y\"", msgs[0], tc.clause)
			}
			t.Logf("caught as intended: %s", msgs[0])
		})
	}
}
