package pgtest_test

import (
	"context"
	"fmt"
	"os"
	"strings"
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

// recTB records how a test ended; Fatal and Skip end it by panicking,
// which end recovers, as testing.T's runtime.Goexit would.
type recTB struct {
	fatal, skip string
}

func (r *recTB) Helper()                           {}
func (r *recTB) Fatal(args ...any)                 { r.fatal = fmt.Sprint(args...); panic(r) }
func (r *recTB) Fatalf(format string, args ...any) { r.fatal = fmt.Sprintf(format, args...); panic(r) }
func (r *recTB) Skip(args ...any)                  { r.skip = fmt.Sprint(args...); panic(r) }
func (r *recTB) Logf(string, ...any)               {}
func (r *recTB) Cleanup(func())                    {}

func (r *recTB) end(f func(pgtest.TB)) {
	defer func() {
		if v := recover(); v != nil && v != any(r) {
			panic(v)
		}
	}()
	f(r)
}

// TestMissingServerFails: a server that cannot be had fails the test
// outside CI too (CI unset; under CI it always failed), with what is
// missing; it is never a skip, which go test's summary reads as "ok".
// It waits out the connect's 30 s bound once.
func TestMissingServerFails(t *testing.T) {
	// Port 1 on loopback: nothing listens there.
	t.Setenv(pgtest.EnvURL, "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=2")
	t.Setenv("CI", "")
	r := &recTB{}
	r.end(func(tb pgtest.TB) { pgtest.New(pgtest.Options{}).NewDatabase(tb) })
	if r.fatal == "" || r.skip != "" {
		t.Fatalf("want a failure, got fatal %q, skip %q", r.fatal, r.skip)
	}
	if !strings.Contains(r.fatal, "no PostgreSQL server") {
		t.Errorf("message %q does not say what is missing", r.fatal)
	}
}
