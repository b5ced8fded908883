package pgtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/geoframework/geo/geotest/pgtest"
)

// TestStandbyReplicates checks that StartStandby gives a read-only hot
// standby that replays what the primary commits.
func TestStandbyReplicates(t *testing.T) {
	t.Parallel()
	// A hang guard: initdb, a base backup and two starts on a loaded
	// machine take a good part of a minute.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	primary, err := pgtest.StartCluster(ctx, pgtest.Options{})
	if err != nil {
		t.Fatalf("no throwaway cluster (needs initdb/pg_ctl: apt-get install postgresql): %v", err)
	}
	defer primary.Stop()

	p := sqlx.MustOpen("postgres", primary.URL("postgres"))
	defer p.Close()
	// Dirty buffers: a base backup must not wait for a spread checkpoint.
	if _, err := p.ExecContext(ctx, `CREATE TABLE t (x int); INSERT INTO t VALUES (42)`); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	standby, err := primary.StartStandby(ctx)
	if err != nil {
		t.Fatalf("StartStandby: %v", err)
	}
	defer standby.Stop()
	// A spread checkpoint (what pg_basebackup waits for without
	// --checkpoint=fast) takes checkpoint_completion_target ×
	// checkpoint_timeout, 4.5 minutes at the defaults; a fast one a
	// moment, and a loaded machine's base backup and start seconds.
	if d := time.Since(start); d > 2*time.Minute {
		t.Errorf("StartStandby took %v, want well under the 4.5 minutes of a spread checkpoint", d)
	}
	s := sqlx.MustOpen("postgres", standby.URL("postgres"))
	defer s.Close()
	var inRecovery bool
	if err := s.GetContext(ctx, &inRecovery, `SELECT pg_is_in_recovery()`); err != nil {
		t.Fatal(err)
	}
	if !inRecovery {
		t.Fatal("standby: pg_is_in_recovery() = false, want true")
	}
	deadline := time.Now().Add(2 * time.Minute) // a hang guard
	for {
		var x int
		err := s.GetContext(ctx, &x, `SELECT x FROM t`)
		if err == nil && x == 42 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("standby never replayed the primary's row: last error %v", err)
		}
		time.Sleep(20 * time.Millisecond) // polling a replica: no event to wait on
	}
	if _, err := s.ExecContext(ctx, `INSERT INTO t VALUES (1)`); err == nil {
		t.Fatal("standby accepted a write, want a read-only error")
	}
}
