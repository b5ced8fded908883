package registry_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
)

// seedSynced inserts rows 1..n of replicable synced and verified, with a
// blob key each, in one statement.
func seedSynced(t *testing.T, db *sqlx.DB, replicable string, n int) {
	t.Helper()
	_, err := db.Exec(`
INSERT INTO geo_registry (replicable, model_id, state, verification_state, last_synced_at, blob_key, blob_size,
  verification_checksum, verified_at)
SELECT $1, g, 2, 2, now(), 'k/' || g, 4096, md5(g::text) || md5(g::text), now()
FROM generate_series(1, $2::bigint) g`, replicable, n)
	require.NoError(t, err)
}

// seqs returns the seq of every row of replicable, by model id.
func seqs(t *testing.T, db *sqlx.DB, replicable string) map[int64]int64 {
	t.Helper()
	var rows []struct {
		ID  int64 `db:"model_id"`
		Seq int64 `db:"seq"`
	}
	require.NoError(t, db.Select(&rows, `SELECT model_id, seq FROM geo_registry WHERE replicable = $1`, replicable))
	out := make(map[int64]int64, len(rows))
	for _, r := range rows {
		out[r.ID] = r.Seq
	}
	return out
}

// TestResyncAllUnderStatementTimeout: a resync of every row of a large
// type is no longer one statement. With the server's statement_timeout
// at 2 s, one UPDATE of 200,000 rows (5 s or more here) was cancelled
// (57014, the failure geoctl hit at 1,000,000 rows with its 30 s
// timeout); batches of DefaultBatchSize rows each take a fraction of
// that and the resync completes. The batch statement walks the primary
// key, at this size as on an empty table.
//
// The timeout is 2 s, or, on a machine loaded enough that one batch takes
// more than a quarter second, stmtTimeoutPerBatch times what one batch
// took just before (a resync of another type of DefaultBatchSize rows):
// a loaded machine slows the batches as it slows the probe, and one
// UPDATE of all the rows, 20 batches' worth, still outlasts the timeout.
func TestResyncAllUnderStatementTimeout(t *testing.T) {
	ctx := context.Background()
	url := pg.NewDatabaseURL(t)
	setup, err := sqlx.Open("postgres", url)
	require.NoError(t, err)
	defer setup.Close()
	require.NoError(t, registry.MigrateTracking(ctx, setup))
	const n = 200_000
	seedSynced(t, setup, "a", n)
	seedSynced(t, setup, "probe", registry.DefaultBatchSize)
	_, err = setup.Exec(`VACUUM ANALYZE geo_registry`)
	require.NoError(t, err)

	// One batch's time on this machine now.
	ps, err := regstore.NewStore(setup, regstore.Options{})
	require.NoError(t, err)
	began := time.Now()
	probed, err := ps.ResyncBatches(ctx, "probe", registry.BatchOptions{OnlyFailed: false})
	require.NoError(t, err)
	require.Equal(t, int64(registry.DefaultBatchSize), probed.Changed)
	const stmtTimeoutPerBatch = 8
	batch := time.Since(began)
	timeout := max(2*time.Second, stmtTimeoutPerBatch*batch).Round(time.Millisecond)

	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	db, err := sqlx.Open("postgres", fmt.Sprintf("%s%sstatement_timeout=%d", url, sep, timeout.Milliseconds()))
	require.NoError(t, err)
	defer db.Close()
	var shown string
	require.NoError(t, db.Get(&shown, `SHOW statement_timeout`))
	require.NotEqual(t, "0", shown, "the connection's statement_timeout")
	s, err := regstore.NewStore(db, regstore.Options{})
	require.NoError(t, err)

	var maxSeq int64
	require.NoError(t, setup.Get(&maxSeq, `SELECT max(seq) FROM geo_registry WHERE replicable = 'a'`))
	start := time.Now()
	prog, err := s.ResyncBatches(ctx, "a", registry.BatchOptions{OnlyFailed: false})
	changed := prog.Changed
	var pe *pq.Error
	if errors.As(err, &pe) && pe.Code == "57014" {
		t.Fatalf("ResyncAll over %d rows was cancelled by the %v statement_timeout (one batch of %d rows took %v just before) after %v: %v",
			n, timeout, registry.DefaultBatchSize, batch, time.Since(start), err)
	}
	require.NoError(t, err)
	t.Logf("ResyncAll of %d rows: %v under a %v statement_timeout (one batch took %v)", n, time.Since(start), timeout, batch)
	require.Equal(t, int64(n), changed, "ResyncAll: rows changed")
	var stale int64
	require.NoError(t, setup.Get(&stale, `SELECT count(*) FROM geo_registry WHERE replicable = 'a' AND (state <> 0 OR seq <= $1)`, maxSeq))
	require.Zero(t, stale, "rows not pending with a new seq after ResyncAll")

	// The plans at 200,000 rows.
	for _, q := range []string{registry.ResyncBatchSQL(false), registry.ResyncBatchSQL(true),
		registry.ReverifyBatchSQL(false), registry.ReverifyBatchSQL(true)} {
		requirePrimaryKeyWalk(t, s, q)
	}
}

// TestBatchPlans: on a small table too (where a sequential scan would
// be cheapest, and would visit rows in physical order), every batch
// statement walks the primary key from the cursor, so no batch re-walks
// the rows of the batches before it and rows are locked in model_id
// order.
func TestBatchPlans(t *testing.T) {
	t.Parallel()
	s, db, _ := newStore(t, regstore.Options{})
	seedSynced(t, db, "a", 100)
	_, err := db.Exec(`UPDATE geo_registry SET state = 3, verification_state = 3 WHERE model_id % 10 = 0`)
	require.NoError(t, err)
	_, err = db.Exec(`ANALYZE geo_registry`)
	require.NoError(t, err)
	for _, q := range []string{registry.ResyncBatchSQL(false), registry.ResyncBatchSQL(true),
		registry.ReverifyBatchSQL(false), registry.ReverifyBatchSQL(true)} {
		requirePrimaryKeyWalk(t, s, q)
	}
}

// requirePrimaryKeyWalk checks that batch statement q reaches
// geo_registry through its primary key alone, with the cursor as the
// start of the range.
func requirePrimaryKeyWalk(t *testing.T, s *regstore.Store, q string) {
	t.Helper()
	plan, err := s.ExplainPrepared(context.Background(), registry.BatchPlansSQL, q, "a", time.Now(), int64(50), 10)
	require.NoError(t, err)
	for _, line := range strings.Split(plan, "\n") {
		if strings.Contains(line, "Scan") && strings.Contains(line, "geo_registry") &&
			!strings.Contains(line, "using geo_registry_pkey on geo_registry") {
			t.Fatalf("batch statement reaches geo_registry other than by its primary key (%s):\n%s\nquery:%s", line, plan, q)
		}
	}
	if strings.Count(plan, "using geo_registry_pkey") != 2 || strings.Count(plan, "model_id > ") != 2 {
		t.Fatalf("batch statement: want two primary key scans starting after the cursor:\n%s", plan)
	}
}

// errStop is what a test's Progress callback returns to stop a walk.
var errStop = errors.New("stop here")

// TestResyncBatchesResume: a walk stopped between batches (its Progress
// callback returned an error) reports the last committed batch, and a
// walk resumed there changes exactly the rows after it: a row before the
// cursor that was synced again meanwhile is left alone.
func TestResyncBatchesResume(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, db, _ := newStore(t, regstore.Options{})
	seedSynced(t, db, "a", 50)
	seedSynced(t, db, "b", 20) // another type: never touched
	_, err := db.Exec(`UPDATE geo_registry SET state = 0 WHERE replicable = 'a' AND model_id IN (7, 33)`)
	require.NoError(t, err)
	n, err := s.CountResyncBatches(ctx, "a", registry.BatchOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(48), n, "CountResyncBatches: rows not pending")
	before := seqs(t, db, "a")
	beforeB := seqs(t, db, "b")

	var reports []registry.BatchProgress
	p, err := s.ResyncBatches(ctx, "a", registry.BatchOptions{Size: 10, Progress: func(p registry.BatchProgress) error {
		reports = append(reports, p)
		if p.Batches == 2 {
			return errStop
		}
		return nil
	}})
	require.ErrorIs(t, err, errStop)
	want := registry.BatchProgress{After: 20, Walked: 20, Changed: 19, Batches: 2}
	require.Equal(t, want, p, "progress of the stopped walk")
	require.Equal(t, []registry.BatchProgress{{After: 10, Walked: 10, Changed: 9, Batches: 1}, want}, reports)
	mid := seqs(t, db, "a")
	for id := int64(1); id <= 50; id++ {
		changed := mid[id] != before[id]
		if want := id <= 20 && id != 7; changed != want {
			t.Fatalf("row %d after the stopped walk: changed %v, want %v", id, changed, want)
		}
	}
	n, err = s.CountResyncBatches(ctx, "a", registry.BatchOptions{After: p.After})
	require.NoError(t, err)
	require.Equal(t, int64(29), n, "CountResyncBatches after the cursor")

	// Row 12 is synced again meanwhile: the resumed walk starts after
	// row 20 and leaves it.
	_, err = db.Exec(`UPDATE geo_registry SET state = 2 WHERE replicable = 'a' AND model_id = 12`)
	require.NoError(t, err)
	resumed := seqs(t, db, "a")
	p, err = s.ResyncBatches(ctx, "a", registry.BatchOptions{Size: 10, After: p.After})
	require.NoError(t, err)
	require.Equal(t, registry.BatchProgress{After: 50, Walked: 30, Changed: 29, Batches: 4, Done: true}, p,
		"progress of the resumed walk (the fourth batch walks no row and ends it)")
	end := seqs(t, db, "a")
	for id := int64(1); id <= 50; id++ {
		changed := end[id] != resumed[id]
		if want := id > 20 && id != 33; changed != want {
			t.Fatalf("row %d after the resumed walk: changed %v, want %v", id, changed, want)
		}
	}
	require.Equal(t, registry.StateSynced, mustGet(t, s, "a", 12).State, "row 12, before the cursor")
	require.Equal(t, beforeB, seqs(t, db, "b"), "the other type's rows")

	// A walk that ends on a full batch needs one more, empty, batch to
	// know; a walk after the last row ends at once.
	p, err = s.ResyncBatches(ctx, "a", registry.BatchOptions{After: 50})
	require.NoError(t, err)
	require.Equal(t, registry.BatchProgress{After: 50, Batches: 1, Done: true}, p)
	_, err = s.ResyncBatches(ctx, "a", registry.BatchOptions{Size: -1})
	require.ErrorContains(t, err, "BatchOptions.Size = -1")
}

// TestResyncBatchesOnlyFailed: OnlyFailed changes the failed rows alone,
// across batches that contain none.
func TestResyncBatchesOnlyFailed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, db, _ := newStore(t, regstore.Options{})
	seedSynced(t, db, "a", 100)
	_, err := db.Exec(`UPDATE geo_registry SET state = 3, retry_count = 4, retry_at = now() + interval '1 hour'
WHERE model_id IN (3, 57, 58, 99)`)
	require.NoError(t, err)
	n, err := s.CountResyncBatches(ctx, "a", registry.BatchOptions{OnlyFailed: true})
	require.NoError(t, err)
	require.Equal(t, int64(4), n)
	n, err = s.CountResyncBatches(ctx, "a", registry.BatchOptions{OnlyFailed: true, After: 57})
	require.NoError(t, err)
	require.Equal(t, int64(2), n, "failed rows after 57")
	p, err := s.ResyncBatches(ctx, "a", registry.BatchOptions{OnlyFailed: true, Size: 25})
	require.NoError(t, err)
	require.Equal(t, registry.BatchProgress{After: 100, Walked: 100, Changed: 4, Batches: 5, Done: true}, p)
	counts, err := s.Counts(ctx)
	require.NoError(t, err)
	require.Equal(t, registry.Counts{Total: 100, Pending: 4, Synced: 96, VerificationSucceeded: 100}, counts["a"].Counts)
	r := mustGet(t, s, "a", 57)
	require.Equal(t, registry.StatePending, r.State)
	require.Zero(t, r.RetryCount, "retry_count after a resync")
	require.True(t, r.RetryAt.IsZero(), "retry_at after a resync")
}

// TestResyncBatchesStartedDuringTheWalk: R1 holds for a row claimed while
// the walk runs. A row started in an id range the walk has not reached
// yet gets a new seq from its batch, so the settle of its sync is
// refused and the row stays pending; a row claimed after its range was
// passed (the walk made it pending) is not visited again and its sync
// settles.
func TestResyncBatchesStartedDuringTheWalk(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, db, _ := newStore(t, regstore.Options{})
	seedSynced(t, db, "a", 30)
	_, err := db.Exec(`UPDATE geo_registry SET state = 0, seq = nextval('geo_registry_seq') WHERE model_id = 25`)
	require.NoError(t, err)
	var claims []regstore.Claim
	_, err = s.ResyncBatches(ctx, "a", registry.BatchOptions{Size: 10, Progress: func(p registry.BatchProgress) error {
		if p.Batches == 1 {
			// Rows 1-10 (just made pending) and 25 (not reached yet).
			claims = mustClaim(t, s, "w", time.Minute, regstore.TypeLimit{Replicable: "a", Limit: 100})
		}
		return nil
	}})
	require.NoError(t, err)
	require.Len(t, claims, 11, "claims after the first batch")
	for _, c := range claims {
		ok, err := s.SettleSynced(ctx, "w", c, regstore.SyncedResult{BlobKey: fmt.Sprintf("k/%d", c.ModelID)}, nil)
		require.NoError(t, err)
		if c.ModelID == 25 {
			require.False(t, ok, "settle of row 25, started before its batch resynced it (R1)")
			r := mustGet(t, s, "a", 25)
			require.Equal(t, registry.StatePending, r.State, "row 25 after its refused settle")
			require.Greater(t, r.Seq, c.Seq, "row 25's seq")
		} else {
			require.True(t, ok, "settle of row %d, claimed after the walk passed it", c.ModelID)
		}
	}
}

// TestBatchTimeoutAndResume: a batch that waits past BatchTimeout (on a
// row another transaction holds) is rolled back alone: the error matches
// context.DeadlineExceeded, the progress names the last committed batch,
// and the walk resumed there once the row is free changes the rest.
func TestBatchTimeoutAndResume(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, db, _ := newStore(t, regstore.Options{})
	seedSynced(t, db, "a", 30)
	before := seqs(t, db, "a")
	tx, err := db.Beginx()
	require.NoError(t, err)
	defer tx.Rollback()
	_, err = tx.Exec(`SELECT 1 FROM geo_registry WHERE replicable = 'a' AND model_id = 15 FOR UPDATE`)
	require.NoError(t, err)

	// 2 s: the first batch (10 rows) commits in a fraction of that on a
	// loaded machine too; the second waits on row 15 until it.
	p, err := s.ResyncBatches(ctx, "a", registry.BatchOptions{Size: 10, BatchTimeout: 2 * time.Second})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "batch after id 10")
	require.Equal(t, registry.BatchProgress{After: 10, Walked: 10, Changed: 10, Batches: 1}, p)
	mid := seqs(t, db, "a")
	for id := int64(11); id <= 30; id++ {
		require.Equal(t, before[id], mid[id], "row %d, in or after the batch that timed out", id)
	}

	require.NoError(t, tx.Rollback())
	p, err = s.ResyncBatches(ctx, "a", registry.BatchOptions{Size: 10, BatchTimeout: time.Minute, After: p.After})
	require.NoError(t, err)
	require.Equal(t, int64(20), p.Changed, "rows changed by the resumed walk")
	require.True(t, p.Done)

	// A context that ends stops the walk the same way.
	cctx, cancel := context.WithCancel(ctx)
	p, err = s.ReverifyBatches(cctx, "a", registry.BatchOptions{Size: 10, Progress: func(registry.BatchProgress) error {
		cancel()
		return nil
	}})
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, 1, p.Batches, "batches committed before the context ended")
}

// TestReverifyBatches: every synced row whose verification is not
// pending, or only the failed ones, in batches, resumable; rows not
// synced are left alone.
func TestReverifyBatches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, db, _ := newStore(t, regstore.Options{})
	seedSynced(t, db, "a", 40)
	_, err := db.Exec(`UPDATE geo_registry SET
  verification_state = CASE WHEN model_id IN (5, 25, 35) THEN 3 WHEN model_id = 6 THEN 0 ELSE verification_state END,
  verification_retry_count = 2, verification_retry_at = now() + interval '1 hour',
  state = CASE WHEN model_id IN (8, 35) THEN 3 ELSE state END`)
	require.NoError(t, err)
	n, err := s.CountReverifyBatches(ctx, "a", registry.BatchOptions{OnlyFailed: true})
	require.NoError(t, err)
	require.Equal(t, int64(2), n, "synced rows whose verification failed")
	n, err = s.CountReverifyBatches(ctx, "a", registry.BatchOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(37), n, "synced rows whose verification is not pending")

	p, err := s.ReverifyBatches(ctx, "a", registry.BatchOptions{OnlyFailed: true, Size: 10})
	require.NoError(t, err)
	require.Equal(t, registry.BatchProgress{After: 40, Walked: 40, Changed: 2, Batches: 5, Done: true}, p)
	r := mustGet(t, s, "a", 25)
	require.Equal(t, registry.VerificationPending, r.VerificationState)
	require.True(t, r.VerificationRetryAt.IsZero(), "due now")
	require.Equal(t, 2, r.VerificationRetryCount, "verification_retry_count is kept")
	require.Equal(t, registry.VerificationFailed, mustGet(t, s, "a", 35).VerificationState, "row 35 is not synced")

	p, err = s.ReverifyBatches(ctx, "a", registry.BatchOptions{Size: 10, After: 20})
	require.NoError(t, err)
	require.Equal(t, int64(18), p.Changed, "rows 21-40 but 25 (pending now) and 35 (not synced)")
	p, err = s.ReverifyBatches(ctx, "a", registry.BatchOptions{OnlyFailed: false})
	require.NoError(t, err)
	require.Equal(t, int64(17), p.Changed, "rows 1-20 but 5 and 6 (pending) and 8 (not synced)")
	counts, err := s.Counts(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(38), counts["a"].VerificationPending)
}
