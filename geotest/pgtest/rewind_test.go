package pgtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/geoframework/geo/geotest/pgtest"
)

// TestRewindAsStandby checks that a former primary rewound after its
// standby's promotion follows the new primary and has lost what only it
// committed.
func TestRewindAsStandby(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // a hang guard
	defer cancel()
	old, err := pgtest.StartCluster(ctx, pgtest.Options{Settings: pgtest.RewindSettings()})
	if err != nil {
		t.Fatalf("no throwaway cluster (needs initdb/pg_ctl: apt-get install postgresql): %v", err)
	}
	defer old.Stop()
	o := sqlx.MustOpen("postgres", old.URL("postgres"))
	defer o.Close()
	o.MustExecContext(ctx, `CREATE TABLE t (x int); INSERT INTO t VALUES (1)`)
	standby, err := old.StartStandby(ctx)
	if err != nil {
		t.Fatalf("StartStandby: %v", err)
	}
	defer standby.Stop()
	s := sqlx.MustOpen("postgres", standby.URL("postgres"))
	defer s.Close()
	waitFor(t, func() bool {
		var n int
		return s.GetContext(ctx, &n, `SELECT count(*) FROM t`) == nil && n == 1
	})
	var ok bool
	if err := s.GetContext(ctx, &ok, `SELECT pg_promote()`); err != nil || !ok {
		t.Fatalf("pg_promote: %v %v", ok, err)
	}
	o.MustExecContext(ctx, `INSERT INTO t VALUES (2)`) // only the old primary has it
	s.MustExecContext(ctx, `INSERT INTO t VALUES (3)`)
	if err := old.RewindAsStandby(ctx, standby); err != nil {
		t.Fatalf("RewindAsStandby: %v", err)
	}
	r := sqlx.MustOpen("postgres", old.URL("postgres"))
	defer r.Close()
	s.MustExecContext(ctx, `INSERT INTO t VALUES (4)`)
	waitFor(t, func() bool {
		var n int
		return r.GetContext(ctx, &n, `SELECT count(*) FROM t WHERE x = 4`) == nil && n == 1
	})
	var inRecovery bool
	var xs []int
	if err := r.GetContext(ctx, &inRecovery, `SELECT pg_is_in_recovery()`); err != nil || !inRecovery {
		t.Fatalf("rewound: pg_is_in_recovery() = %v, %v; want true", inRecovery, err)
	}
	if err := r.SelectContext(ctx, &xs, `SELECT x FROM t ORDER BY x`); err != nil {
		t.Fatal(err)
	}
	if len(xs) != 3 || xs[0] != 1 || xs[1] != 3 || xs[2] != 4 {
		t.Fatalf("rewound rows = %v, want [1 3 4] (the old-only 2 gone)", xs)
	}
}

// waitFor polls cond until it holds; a replica gives no event to wait on.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute) // a hang guard
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within the hang guard")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
