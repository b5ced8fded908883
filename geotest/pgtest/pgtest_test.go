package pgtest_test

import (
	"context"
	"os"
	"testing"

	"github.com/geoframework/geo/geotest/pgtest"
)

var pg = pgtest.New(pgtest.Options{})

func TestMain(m *testing.M) { os.Exit(pg.Run(m)) }

func TestDatabasesAreIsolated(t *testing.T) {
	t.Parallel()
	a := pg.NewDatabase(t)
	b := pg.NewDatabase(t)
	ctx := context.Background()
	if _, err := a.ExecContext(ctx, `CREATE TABLE t (x int)`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := b.GetContext(ctx, &n, `SELECT count(*) FROM pg_tables WHERE tablename = 't'`); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("table created in database a is visible in database b: count = %d, want 0", n)
	}
	var v int
	if err := a.GetContext(ctx, &v, `SELECT current_setting('server_version_num')::int`); err != nil {
		t.Fatal(err)
	}
	if v < 130000 {
		t.Fatalf("server_version_num = %d, want >= 130000", v)
	}
}
