package registry_test

import (
	"context"
	"encoding/json"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
)

// FailedWithReason pages through exactly the rows whose failure
// normalizes to a reason TopFailures reported, sync and verification
// failures apart, and a page that examined ReasonScanRows rows stops
// there, not Done, telling where to go on.
func TestFailedWithReason(t *testing.T) {
	ctx := context.Background()
	_, db, _ := newStore(t, regstore.Options{})
	store, err := registry.NewStore(db, registry.Options{})
	require.NoError(t, err)
	// item 1..30 failed: odd ids answered 503 (one reason), even ids a
	// reset connection (another); 31..40 synced, 35..40 with a failed
	// verification; 41..50 synced and fine; another type with the 503.
	_, err = db.ExecContext(ctx, `
INSERT INTO geo_registry (replicable, model_id, state, retry_at, last_sync_failure, verification_state, verification_failure)
SELECT 'item', g,
  CASE WHEN g <= 30 THEN 3 ELSE 2 END,
  CASE WHEN g <= 30 THEN now() + g * interval '1 s' END,
  CASE WHEN g <= 30 AND g % 2 = 1 THEN 'primary answered 503 for item/' || g
       WHEN g <= 30 THEN 'read tcp 127.0.0.1:' || (40000 + g) || '->127.0.0.1:8080: connection reset by peer' END,
  CASE WHEN g BETWEEN 35 AND 40 THEN 3 WHEN g > 30 THEN 2 ELSE 0 END,
  CASE WHEN g BETWEEN 35 AND 40 THEN 'checksum mismatch: local ' || md5(g::text) || md5(g::text) END
FROM generate_series(1, 50) g;
INSERT INTO geo_registry (replicable, model_id, state, retry_at, last_sync_failure)
VALUES ('other', 3, 3, now(), 'primary answered 503 for other/3')`)
	require.NoError(t, err)

	top, err := store.TopFailures(ctx, []string{"item"}, 5, 1000)
	require.NoError(t, err)
	require.Len(t, top["item"].Sync, 2, "%+v", top["item"])
	require.Len(t, top["item"].Verification, 1, "%+v", top["item"])
	var answered string
	for _, f := range top["item"].Sync {
		if f.Count == 15 && f.Example == "primary answered 503 for item/1" {
			answered = f.Reason
		}
	}
	require.NotEmpty(t, answered, "the 503 reason in %+v", top["item"].Sync)

	// Pages of 4 through the 15 odd rows.
	var ids []int64
	q := registry.ReasonQuery{Replicable: "item", Reason: answered, Limit: 4}
	for pages := 0; ; pages++ {
		require.Less(t, pages, 10, "pages")
		p, err := store.FailedWithReason(ctx, q)
		require.NoError(t, err)
		require.LessOrEqual(t, len(p.Rows), 4)
		for _, r := range p.Rows {
			require.Equal(t, "item", r.Replicable)
			require.Equal(t, registry.StateFailed, r.State)
			ids = append(ids, r.ModelID)
		}
		if p.Done {
			break
		}
		require.Greater(t, p.After, q.After, "a page that is not done moves on")
		q.After = p.After
	}
	want := []int64{}
	for i := int64(1); i <= 30; i += 2 {
		want = append(want, i)
	}
	require.Equal(t, want, ids, "the rows of the 503 reason, in id order, each once")

	// Verification failures: rows 35..40, not the sync failures.
	p, err := store.FailedWithReason(ctx, registry.ReasonQuery{Replicable: "item", Verification: true,
		Reason: top["item"].Verification[0].Reason, Limit: 100})
	require.NoError(t, err)
	require.True(t, p.Done)
	require.Len(t, p.Rows, 6)
	require.Equal(t, int64(35), p.Rows[0].ModelID)
	require.Equal(t, registry.VerificationFailed, p.Rows[0].VerificationState)
	// A sync reason asked of verification failures matches nothing.
	p, err = store.FailedWithReason(ctx, registry.ReasonQuery{Replicable: "item", Verification: true, Reason: answered, Limit: 100})
	require.NoError(t, err)
	require.True(t, p.Done)
	require.Empty(t, p.Rows)

	// Bad queries.
	_, err = store.FailedWithReason(ctx, registry.ReasonQuery{Replicable: "item", Reason: answered})
	require.ErrorContains(t, err, "limit = 0")
	_, err = store.FailedWithReason(ctx, registry.ReasonQuery{Reason: answered, Limit: 1})
	require.ErrorContains(t, err, "no replicable")

	// The scan bound: ReasonScanRows failures of another reason before
	// the two that match.
	_, err = db.ExecContext(ctx, `
INSERT INTO geo_registry (replicable, model_id, state, retry_at, last_sync_failure)
SELECT 'bulk', g, 3, now(), CASE WHEN g > $1 THEN 'primary answered 503 for bulk/' || g ELSE 'no space left on device' END
FROM generate_series(1, $1 + 2) g`, registry.ReasonScanRows)
	require.NoError(t, err)
	q = registry.ReasonQuery{Replicable: "bulk", Reason: "primary answered 503 for bulk/N", Limit: 10}
	p, err = store.FailedWithReason(ctx, q)
	require.NoError(t, err)
	require.Empty(t, p.Rows)
	require.False(t, p.Done, "stopped at the scan bound")
	require.Equal(t, int64(registry.ReasonScanRows), p.After)
	q.After = p.After
	p, err = store.FailedWithReason(ctx, q)
	require.NoError(t, err)
	require.True(t, p.Done)
	require.Len(t, p.Rows, 2)
	require.Equal(t, int64(registry.ReasonScanRows+1), p.Rows[0].ModelID)
}

// Checksums.Failed pages through the primary's failed checksum rows of
// one type or of all, with their failure texts.
func TestChecksumsFailed(t *testing.T) {
	ctx := context.Background()
	db := pg.NewDatabase(t)
	require.NoError(t, registry.MigratePrimary(ctx, db))
	_, err := db.ExecContext(ctx, `
INSERT INTO geo_checksums (replicable, model_id, state, checksum, failure, retry_count, retry_at)
SELECT CASE WHEN g % 3 = 0 THEN 'b' ELSE 'a' END, g,
  CASE WHEN g % 2 = 0 THEN 3 ELSE 2 END,
  md5(g::text) || md5(g::text),
  CASE WHEN g % 2 = 0 THEN 'open a/' || g || ': no such file or directory' END,
  CASE WHEN g % 2 = 0 THEN 2 ELSE 0 END,
  CASE WHEN g % 2 = 0 THEN now() END
FROM generate_series(1, 20) g`)
	require.NoError(t, err)
	sums, err := registry.NewChecksums(db)
	require.NoError(t, err)

	var keys []registry.Key
	q := registry.FailedQuery{Limit: 3}
	for {
		rows, err := sums.Failed(ctx, q)
		require.NoError(t, err)
		for _, r := range rows {
			require.Equal(t, registry.VerificationFailed, r.State)
			require.Equal(t, 2, r.RetryCount)
			require.Contains(t, r.Failure, "no such file")
			require.NotEmpty(t, r.Checksum)
			keys = append(keys, registry.Key{Replicable: r.Replicable, ModelID: r.ModelID})
		}
		if len(rows) < q.Limit {
			break
		}
		q.After = keys[len(keys)-1]
	}
	var want []registry.Key
	for _, name := range []string{"a", "b"} {
		for g := int64(2); g <= 20; g += 2 {
			if (g%3 == 0) == (name == "b") {
				want = append(want, registry.Key{Replicable: name, ModelID: g})
			}
		}
	}
	require.Equal(t, want, keys)

	rows, err := sums.Failed(ctx, registry.FailedQuery{Replicable: "b", Limit: 100})
	require.NoError(t, err)
	require.Len(t, rows, 3) // 6, 12, 18
	_, err = sums.Failed(ctx, registry.FailedQuery{})
	require.ErrorContains(t, err, "limit = 0")
}

// Counts' JSON names are snake_case, as the rest of a status report's
// (geoctl status -o json and the status page's /status.json print them
// under .types[].counts): they were the Go field names.
func TestCountsJSONIsSnakeCase(t *testing.T) {
	b, err := json.Marshal(registry.Counts{Total: 3, VerificationSucceeded: 2, MissingOnPrimary: 1})
	require.NoError(t, err)
	var m map[string]int64
	require.NoError(t, json.Unmarshal(b, &m))
	snake := regexp.MustCompile(`^[a-z]+(_[a-z]+)*$`)
	for k := range m {
		require.Regexp(t, snake, k, "Counts JSON name")
	}
	require.Len(t, m, 12)
	require.Equal(t, int64(3), m["total"])
	require.Equal(t, int64(2), m["verification_succeeded"])
	require.Equal(t, int64(1), m["missing_on_primary"])
}
