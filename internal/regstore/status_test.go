package regstore_test

import (
	"context"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/geoframework/geo/internal/regstore"
)

// NewFailures counts exactly the rows on their first failure since the
// moment, up to the limit, and reads them from geo_registry_new_failures
// alone (migration 0011): an index-only scan of the matching entries (with
// heap fetches only for pages vacuum has not marked all-visible yet; not
// asserted, since vacuum's horizon is the cluster's). Before, it filtered every
// failed row of the type through the heap for retry_count and updated_at
// (10,000 failed rows at 1,000,000: 160-520 ms of a 113 ms status page's
// budget, more than the whole page).
func TestNewFailuresReadsTheirIndexOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, db, clock := newStore(t, regstore.Options{})
	if _, err := s.InsertMissing(ctx, "a", ids(1, 50000)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.InsertMissing(ctx, "b", ids(1, 100)); err != nil {
		t.Fatal(err)
	}
	now := clock.Now()
	// In "a": every 100th row failed for the first time (500), half of them
	// within the window; every 100th+1 failed again (retry_count 3); the
	// rest synced. In "b": nothing failed.
	if _, err := db.ExecContext(ctx, `
UPDATE geo_registry SET
  state = CASE WHEN model_id % 100 IN (0, 1) THEN 3 ELSE 2 END,
  retry_count = CASE WHEN model_id % 100 = 0 THEN 1 WHEN model_id % 100 = 1 THEN 3 ELSE 0 END,
  retry_at = $1::timestamptz + interval '1 minute',
  last_sync_failure = CASE WHEN model_id % 100 IN (0, 1) THEN 'primary answered 503 for a/' || model_id END,
  updated_at = CASE WHEN model_id % 200 = 0 THEN $1::timestamptz - interval '1 hour' ELSE $1::timestamptz END
WHERE replicable = 'a'`, now); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `VACUUM ANALYZE geo_registry`); err != nil {
		t.Fatal(err)
	}
	since := now.Add(-10 * time.Minute)
	got, err := s.NewFailures(ctx, []string{"a", "b"}, since, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got["a"] != 250 {
		t.Errorf("NewFailures = %v, want map[a:250]", got)
	}
	got, err = s.NewFailures(ctx, []string{"a"}, since, 100)
	if err != nil {
		t.Fatal(err)
	}
	if got["a"] != 100 {
		t.Errorf("NewFailures with limit 100 = %v, want a: 100", got)
	}

	plan, err := s.ExplainAnalyzeNewFailures(ctx, []string{"a", "b"}, since, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(plan, "Index Only Scan using geo_registry_new_failures") {
		t.Errorf("new failures plan does not scan geo_registry_new_failures alone:\n%s", plan)
	}
	if m := regexp.MustCompile(`Seq Scan on geo_registry|Index Scan|Filter: .*(retry_count|updated_at)`).FindString(plan); m != "" {
		t.Errorf("new failures plan reads the table (%s):\n%s", m, plan)
	}
}

// The failure indexes carry the failure message (migration 0011), and an
// index entry holds at most about 2,700 bytes: a longer message would make
// the settle recording the failure fail. MaxFailureLen is bounded by
// MaxFailureLenMax, and a message of that many incompressible bytes is
// recorded, as a sync failure and as a verification failure.
func TestLongestFailureFitsTheFailureIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, db, _ := newStore(t, regstore.Options{})
	if _, err := regstore.NewStore(db, regstore.Options{MaxFailureLen: regstore.MaxFailureLenMax + 1}); err == nil ||
		!strings.Contains(err.Error(), "MaxFailureLen") {
		t.Errorf("NewStore(MaxFailureLen %d) = %v, want an error naming MaxFailureLen", regstore.MaxFailureLenMax+1, err)
	}
	s, err := regstore.NewStore(db, regstore.Options{MaxFailureLen: regstore.MaxFailureLenMax})
	if err != nil {
		t.Fatal(err)
	}
	// Incompressible text: PostgreSQL compresses a long index entry
	// before it checks its size.
	rnd := rand.New(rand.NewPCG(1, 2))
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	msg := make([]byte, 2*regstore.MaxFailureLenMax)
	for i := range msg {
		msg[i] = alphabet[rnd.IntN(len(alphabet))]
	}
	mustMarkPending(t, s, "a", 1)
	c := claimOne(t, s, "w", "a")
	if ok, err := s.SettleFailed(ctx, "w", c, string(msg), false); !ok || err != nil {
		t.Fatalf("SettleFailed with a %d-byte message = %v, %v", len(msg), ok, err)
	}
	if got := len(mustGet(t, s, "a", 1).LastSyncFailure); got != regstore.MaxFailureLenMax {
		t.Errorf("last_sync_failure has %d bytes, want %d", got, regstore.MaxFailureLenMax)
	}
	// The verification failure's index takes the same message (what
	// SettleFailed stored, cut to the bound) through the same column type.
	if _, err := db.ExecContext(ctx, `
UPDATE geo_registry SET state = 2, verification_state = 3, verification_failure = last_sync_failure,
  verification_retry_at = now() WHERE replicable = 'a' AND model_id = 1`); err != nil {
		t.Fatalf("a %d-byte verification failure: %v", regstore.MaxFailureLenMax, err)
	}
}
