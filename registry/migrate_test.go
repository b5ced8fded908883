package registry_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
)

func appliedVersions(t *testing.T, db *sqlx.DB) map[string][]int {
	t.Helper()
	var rows []struct {
		Set     string `db:"set"`
		Version int    `db:"version"`
	}
	if err := db.SelectContext(context.Background(), &rows,
		`SELECT set, version FROM geo_schema_migrations ORDER BY set, version`); err != nil {
		t.Fatalf("read geo_schema_migrations: %v", err)
	}
	out := map[string][]int{}
	for _, r := range rows {
		out[r.Set] = append(out[r.Set], r.Version)
	}
	return out
}

// checkVersions checks that every embedded migration file of each set is
// recorded exactly once.
func checkVersions(t *testing.T, got map[string][]int) {
	t.Helper()
	for _, set := range []string{"tracking", "primary"} {
		files, err := os.ReadDir(filepath.Join("migrations", set))
		if err != nil {
			t.Fatal(err)
		}
		var want []int
		for i := range files {
			want = append(want, i+1)
		}
		if fmt.Sprint(got[set]) != fmt.Sprint(want) {
			t.Fatalf("applied %s versions = %v, want %v", set, got[set], want)
		}
	}
}

func TestMigrateIdempotent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pg.NewDatabase(t)
	for i := 0; i < 3; i++ {
		if err := registry.MigrateTracking(ctx, db); err != nil {
			t.Fatalf("MigrateTracking run %d: %v", i+1, err)
		}
		if err := registry.MigratePrimary(ctx, db); err != nil {
			t.Fatalf("MigratePrimary run %d: %v", i+1, err)
		}
	}
	checkVersions(t, appliedVersions(t, db))
	for _, table := range []string{"geo_registry", "geo_paused", "geo_event_cursor", "geo_events", "geo_events_pruned"} {
		var n int
		if err := db.GetContext(ctx, &n, `SELECT count(*) FROM `+table); err != nil {
			t.Errorf("table %s after migration: %v", table, err)
		}
	}
}

func TestMigrateConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u := pg.NewDatabaseURL(t)
	const procs = 4
	dbs := make([]*sqlx.DB, procs)
	for i := range dbs {
		db, err := sqlx.Open("postgres", u)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if err := db.PingContext(ctx); err != nil {
			t.Fatal(err)
		}
		dbs[i] = db
	}
	start := make(chan struct{})
	errs := make([]error, procs)
	var wg sync.WaitGroup
	for i, db := range dbs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := registry.MigrateTracking(ctx, db); err != nil {
				errs[i] = err
				return
			}
			errs[i] = registry.MigratePrimary(ctx, db)
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("migrator %d: %v", i, err)
		}
	}
	checkVersions(t, appliedVersions(t, dbs[0]))
}

// TestMigrateCustomSchema checks both ways lib/pq can select a schema, as
// documented on MigrateTracking, and that a store works there.
func TestMigrateCustomSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	base := pg.NewDatabaseURL(t)
	admin, err := sqlx.Open("postgres", base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	for _, tc := range []struct{ name, schema, param, value string }{
		{"search_path", "geo_a", "search_path", "geo_a"},
		{"options", "geo_b", "options", "-c search_path=geo_b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := admin.ExecContext(ctx, `CREATE SCHEMA `+tc.schema); err != nil {
				t.Fatal(err)
			}
			pu, err := url.Parse(base)
			if err != nil {
				t.Fatal(err)
			}
			q := pu.Query()
			q.Set(tc.param, tc.value)
			pu.RawQuery = q.Encode()
			db, err := sqlx.Open("postgres", pu.String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			if err := registry.MigrateTracking(ctx, db); err != nil {
				t.Fatalf("MigrateTracking in %s: %v", tc.schema, err)
			}
			var schema string
			if err := admin.GetContext(ctx, &schema,
				`SELECT table_schema FROM information_schema.tables WHERE table_name = 'geo_registry' AND table_schema = $1`,
				tc.schema); err != nil {
				t.Fatalf("geo_registry not in schema %s: %v", tc.schema, err)
			}
			s, err := regstore.NewStore(db, regstore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.MarkPending(ctx, "package_file", []int64{7}); err != nil {
				t.Fatalf("MarkPending in %s: %v", tc.schema, err)
			}
			// InsertMissing's COPY names the table unqualified too.
			if n, err := s.InsertMissing(ctx, "package_file", ids(101, 400)); err != nil || n != 300 || s.Copies() != 1 {
				t.Fatalf("InsertMissing of 300 in %s = %d, %v (batches by COPY: %d); want 300 by COPY", tc.schema, n, err, s.Copies())
			}
			var n int
			if err := admin.GetContext(ctx, &n, `SELECT count(*) FROM `+tc.schema+`.geo_registry`); err != nil || n != 301 {
				t.Fatalf("rows in %s.geo_registry = %d (%v), want 301", tc.schema, n, err)
			}
		})
	}
	var inPublic int
	if err := admin.GetContext(ctx, &inPublic,
		`SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' AND table_name LIKE 'geo_%'`); err != nil {
		t.Fatal(err)
	}
	if inPublic != 0 {
		t.Errorf("geo tables in public = %d, want 0", inPublic)
	}

	t.Run("missing schema", func(t *testing.T) {
		pu, _ := url.Parse(base)
		q := pu.Query()
		q.Set("search_path", "no_such_schema")
		pu.RawQuery = q.Encode()
		db, err := sqlx.Open("postgres", pu.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if err := registry.MigrateTracking(ctx, db); !errors.Is(err, registry.ErrNoSchema) {
			t.Fatalf("MigrateTracking with a missing schema = %v, want ErrNoSchema", err)
		}
	})
}

func TestPrimaryOutboxSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pg.NewDatabase(t)
	if err := registry.MigratePrimary(ctx, db); err != nil {
		t.Fatal(err)
	}
	var ev struct {
		ID  int64  `db:"id"`
		Xid string `db:"xid"`
	}
	if err := db.GetContext(ctx, &ev,
		`INSERT INTO geo_events (replicable, op, model_id, blob_key) VALUES ('package_file', 1, 42, 'a/b')
		 RETURNING id, xid::text AS xid`); err != nil {
		t.Fatalf("insert event: %v", err)
	}
	if ev.ID == 0 || ev.Xid == "" {
		t.Fatalf("inserted event = %+v, want an id and the transaction's xid", ev)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO geo_events_pruned (xid, id) VALUES ('1', 1)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO geo_events_pruned (xid, id) VALUES ('2', 2)`); err == nil {
		t.Fatal("second geo_events_pruned row accepted, want a single-row table")
	}
}
