package regstore_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/strategy"
)

func TestNewStoreValidates(t *testing.T) {
	t.Parallel()
	if _, err := regstore.NewStore(nil, regstore.Options{}); err == nil {
		t.Error("NewStore(nil db) = nil error, want one")
	}
	db := pg.NewDatabase(t)
	_, err := regstore.NewStore(db, regstore.Options{MaxFailureLen: -1})
	if err == nil || !strings.Contains(err.Error(), "MaxFailureLen") {
		t.Errorf("NewStore(MaxFailureLen -1) = %v, want an error naming MaxFailureLen", err)
	}
}

func TestMarkPending(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, clock := newStore(t, regstore.Options{})

	n, err := s.MarkPending(ctx, "a", []int64{3, 1, 2, 2, 1})
	if err != nil || n != 3 {
		t.Fatalf("MarkPending of new ids with duplicates = %d, %v; want 3, nil", n, err)
	}
	r1 := mustGet(t, s, "a", 1)
	if r1.State != registry.StatePending || r1.RetryCount != 0 || r1.Seq == 0 || !r1.CreatedAt.Equal(clock.Now()) {
		t.Fatalf("new row = %+v, want pending, retry_count 0, a seq, created now", r1)
	}

	// Already pending rows keep their seq (FIFO place) and are not counted.
	n, err = s.MarkPending(ctx, "a", []int64{1})
	if err != nil || n != 0 {
		t.Fatalf("MarkPending of a pending row = %d, %v; want 0, nil", n, err)
	}
	if got := mustGet(t, s, "a", 1).Seq; got != r1.Seq {
		t.Fatalf("seq of a re-marked pending row = %d, want unchanged %d", got, r1.Seq)
	}

	// A synced row goes back to pending with a new seq and no last_synced_at.
	c := claimOne(t, s, "w", "a")
	if ok, err := s.SettleSynced(ctx, "w", c, regstore.SyncedResult{BlobKey: "k", Size: 3}, nil); !ok || err != nil {
		t.Fatalf("SettleSynced = %v, %v", ok, err)
	}
	if r := mustGet(t, s, "a", c.ModelID); r.State != registry.StateSynced || r.LastSyncedAt.IsZero() {
		t.Fatalf("settled row = %+v, want synced with last_synced_at", r)
	}
	if n, err := s.MarkPending(ctx, "a", []int64{c.ModelID}); err != nil || n != 1 {
		t.Fatalf("MarkPending of a synced row = %d, %v; want 1, nil", n, err)
	}
	r := mustGet(t, s, "a", c.ModelID)
	if r.State != registry.StatePending || r.Seq <= c.Seq || !r.LastSyncedAt.IsZero() || r.LeaseOwner != "" {
		t.Fatalf("re-marked synced row = %+v, want pending, seq > %d, last_synced_at cleared, no lease", r, c.Seq)
	}
	if r.BlobKey != "k" {
		t.Errorf("blob_key after MarkPending = %q, want the last sync's key kept", r.BlobKey)
	}

	// A failed row goes back to pending with retry_count reset.
	c = claimOne(t, s, "w", "a")
	if ok, err := s.SettleFailed(ctx, "w", c, "boom", true); !ok || err != nil {
		t.Fatalf("SettleFailed = %v, %v", ok, err)
	}
	mustMarkPending(t, s, "a", c.ModelID)
	r = mustGet(t, s, "a", c.ModelID)
	if r.State != registry.StatePending || r.RetryCount != 0 || !r.RetryAt.IsZero() || r.MissingOnPrimary {
		t.Fatalf("re-marked failed row = %+v, want pending, retry_count 0, no retry_at, not missing", r)
	}

	// Many ids in one call.
	if n, err := s.MarkPending(ctx, "b", ids(1, 20000)); err != nil || n != 20000 {
		t.Fatalf("MarkPending of 20000 ids = %d, %v", n, err)
	}
}

func TestInsertMissing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _ := newStore(t, regstore.Options{})
	mustMarkPending(t, s, "a", 5)
	c := claimOne(t, s, "w", "a")
	if ok, err := s.SettleSynced(ctx, "w", c, regstore.SyncedResult{BlobKey: "k5"}, nil); !ok || err != nil {
		t.Fatalf("SettleSynced = %v, %v", ok, err)
	}
	n, err := s.InsertMissing(ctx, "a", ids(1, 12000))
	if err != nil || n != 11999 {
		t.Fatalf("InsertMissing(1..12000) with 5 tracked = %d, %v; want 11999, nil", n, err)
	}
	if r := mustGet(t, s, "a", 5); r.State != registry.StateSynced || r.Seq != c.Seq {
		t.Fatalf("existing row after InsertMissing = %+v, want untouched (synced, seq %d)", r, c.Seq)
	}
	if r := mustGet(t, s, "a", 12000); r.State != registry.StatePending {
		t.Fatalf("inserted row state = %v, want pending", r.State)
	}
	if n, err := s.InsertMissing(ctx, "a", []int64{1, 1, 12001, 12001}); err != nil || n != 1 {
		t.Fatalf("InsertMissing with duplicates = %d, %v; want 1, nil", n, err)
	}
	if n, err := s.InsertMissing(ctx, "a", nil); err != nil || n != 0 {
		t.Fatalf("InsertMissing(nil) = %d, %v", n, err)
	}
}

// TestInsertMissingCopy checks InsertMissing's COPY path: it writes the
// same rows as the INSERT (the store's clock rounded alike, pending, a seq
// each, any type name), fails whole on an id that has a row and leaves the
// connection usable, after which InsertMissing's fallback inserts the
// rest; InsertMissing takes COPY for a large ascending batch only; the
// maintained counts see rows written either way.
func TestInsertMissingCopy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, db, clock := newStore(t, regstore.Options{})
	db.SetMaxOpenConns(1) // a connection left broken by a failed COPY would fail what follows
	at := time.Date(2031, 5, 6, 7, 8, 9, 123456789, time.FixedZone("east", 5*3600))
	clock.Set(at)
	const name = "odd\tname\\ with\nescapes"
	n, err := s.CopyMissing(ctx, name, ids(1, 3000))
	require.NoError(t, err)
	require.EqualValues(t, 3000, n)
	n, err = s.InsertMissing(ctx, name, ids(9001, 9010)) // the INSERT: too few for COPY
	require.NoError(t, err)
	require.EqualValues(t, 10, n)
	require.Zero(t, s.Copies())
	var got struct {
		N       int64     `db:"n"`
		Seqs    int64     `db:"seqs"`
		Pending int64     `db:"pending"`
		Times   int64     `db:"times"`
		At      time.Time `db:"at"`
	}
	require.NoError(t, db.GetContext(ctx, &got, `
SELECT count(*) AS n, count(DISTINCT seq) AS seqs, count(*) FILTER (WHERE state = 0) AS pending,
  count(DISTINCT created_at) + count(DISTINCT updated_at) AS times, min(created_at) AS at
FROM geo_registry WHERE replicable = $1`, name))
	require.EqualValues(t, 3010, got.N)
	require.EqualValues(t, 3010, got.Seqs)
	require.EqualValues(t, 3010, got.Pending)
	require.EqualValues(t, 2, got.Times, "COPY and INSERT rows must carry one and the same created_at and updated_at")
	require.True(t, got.At.Equal(at.Round(time.Microsecond)), "created_at = %v, want %v", got.At, at)

	_, err = s.CopyMissing(ctx, name, ids(2990, 4000))
	var pe *pq.Error
	require.True(t, errors.As(err, &pe) && pe.Code == "23505", "COPY over existing rows = %v, want a unique violation", err)
	var count int64
	require.NoError(t, db.GetContext(ctx, &count, `SELECT count(*) FROM geo_registry WHERE replicable = $1`, name))
	require.EqualValues(t, 3010, count, "a failed COPY must leave no rows")

	n, err = s.InsertMissing(ctx, name, ids(2990, 4000))
	require.NoError(t, err)
	require.EqualValues(t, 1000, n, "InsertMissing over 11 existing rows")
	require.Zero(t, s.Copies(), "the batch with existing rows fell back to the INSERT")
	n, err = s.InsertMissing(ctx, name, ids(4001, 5000))
	require.NoError(t, err)
	require.EqualValues(t, 1000, n)
	require.EqualValues(t, 1, s.Copies(), "a large ascending batch of new ids goes by COPY")
	n, err = s.InsertMissing(ctx, name, append(ids(6001, 6500), 6001))
	require.NoError(t, err)
	require.EqualValues(t, 500, n)
	require.EqualValues(t, 1, s.Copies(), "a batch with a repeated id goes by INSERT")
	require.Equal(t, exactCounts(t, s), maintainedCounts(t, s))
}

func TestIDsInRange(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _ := newStore(t, regstore.Options{})
	mustMarkPending(t, s, "a", 1, 3, 5, 7, 9, 11)
	mustMarkPending(t, s, "b", 4, 6)
	for _, tc := range []struct {
		after, upTo int64
		limit       int
		want        []int64
	}{
		{0, 100, 100, []int64{1, 3, 5, 7, 9, 11}},
		{3, 9, 100, []int64{5, 7, 9}},
		{3, 9, 2, []int64{5, 7}},
		{11, 100, 10, []int64{}},
	} {
		got, err := s.IDsInRange(ctx, "a", tc.after, tc.upTo, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(tc.want) || (len(got) > 0 && !equalIDs(got, tc.want)) {
			t.Errorf("IDsInRange(a, %d, %d, %d) = %v, want %v", tc.after, tc.upTo, tc.limit, got, tc.want)
		}
	}
	if _, err := s.IDsInRange(ctx, "a", 0, 10, 0); err == nil {
		t.Error("IDsInRange with limit 0 = nil error, want one")
	}
}

func equalIDs(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestBackoff checks R4 with a deterministic Backoff: delays double per
// consecutive failure up to the cap (4h when missing on primary), claiming
// a due retry keeps retry_count, and only success resets it.
func TestBackoff(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	policy := strategy.Backoff{Base: 10 * time.Second, Max: time.Hour, MaxMissing: 4 * time.Hour, Jitter: -1}
	s, _, clock := newStore(t, regstore.Options{Retry: policy})

	for _, tc := range []struct {
		name    string
		id      int64
		missing bool
		limit   time.Duration
	}{
		{"present", 1, false, time.Hour},
		{"missing on primary", 2, true, 4 * time.Hour},
	} {
		mustMarkPending(t, s, "a", tc.id)
		want := 10 * time.Second
		var prevDelay time.Duration
		for failures := 1; failures <= 14; failures++ {
			c := claimOne(t, s, "w", "a")
			if c.ModelID != tc.id || c.RetryCount != failures-1 {
				t.Fatalf("%s: claim %d = id %d retry_count %d, want id %d retry_count %d",
					tc.name, failures, c.ModelID, c.RetryCount, tc.id, failures-1)
			}
			if got := mustGet(t, s, "a", tc.id).RetryCount; got != failures-1 {
				t.Fatalf("%s: retry_count after claiming a due retry = %d, want %d (claims must not reset it)", tc.name, got, failures-1)
			}
			// A stale RetryCount in the claim must not matter.
			c.RetryCount = 0
			if ok, err := s.SettleFailed(ctx, "w", c, "boom", tc.missing); !ok || err != nil {
				t.Fatalf("%s: SettleFailed = %v, %v", tc.name, ok, err)
			}
			r := mustGet(t, s, "a", tc.id)
			delay := r.RetryAt.Sub(clock.Now())
			if r.State != registry.StateFailed || r.RetryCount != failures || r.MissingOnPrimary != tc.missing {
				t.Fatalf("%s: after failure %d row = %+v, want failed, retry_count %d, missing %v", tc.name, failures, r, failures, tc.missing)
			}
			if delay != min(want, tc.limit) {
				t.Fatalf("%s: delay after failure %d = %v, want %v", tc.name, failures, delay, min(want, tc.limit))
			}
			if delay < prevDelay {
				t.Fatalf("%s: delay after failure %d = %v, shorter than the previous %v", tc.name, failures, delay, prevDelay)
			}
			prevDelay = delay
			want *= 2
			// Not due yet: nothing to claim.
			clock.Advance(delay - time.Second)
			if cs := mustClaim(t, s, "w", time.Minute, regstore.TypeLimit{Replicable: "a", Limit: 10}); len(cs) != 0 {
				t.Fatalf("%s: claimed %d rows 1s before retry_at, want 0", tc.name, len(cs))
			}
			clock.Advance(time.Second)
		}
		if prevDelay != tc.limit {
			t.Fatalf("%s: final delay = %v, want the cap %v", tc.name, prevDelay, tc.limit)
		}
		c := claimOne(t, s, "w", "a")
		if ok, err := s.SettleSynced(ctx, "w", c, regstore.SyncedResult{BlobKey: "k"}, nil); !ok || err != nil {
			t.Fatalf("SettleSynced = %v, %v", ok, err)
		}
		if r := mustGet(t, s, "a", tc.id); r.RetryCount != 0 || !r.RetryAt.IsZero() || r.LastSyncFailure != "" || r.MissingOnPrimary {
			t.Fatalf("%s: after success row = %+v, want retry_count 0, no retry_at, no failure", tc.name, r)
		}
	}
}

func TestFailureTruncated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _ := newStore(t, regstore.Options{MaxFailureLen: 255})
	mustMarkPending(t, s, "a", 1)
	reason := "x" + strings.Repeat("é", 300) // 601 bytes; a 2-byte rune straddles byte 255
	c := claimOne(t, s, "w", "a")
	if ok, err := s.SettleFailed(ctx, "w", c, reason, false); !ok || err != nil {
		t.Fatalf("SettleFailed = %v, %v", ok, err)
	}
	got := mustGet(t, s, "a", 1).LastSyncFailure
	kept, marked := strings.CutSuffix(got, "…")
	if len(got) > 255 || len(got) < 254 || !utf8.ValidString(got) || !marked || !strings.HasPrefix(reason, kept) {
		t.Fatalf("last_sync_failure = %d bytes %q (valid UTF-8 %v), want a valid prefix and \"…\" in at most 255 bytes", len(got), got, utf8.ValidString(got))
	}

	// Invalid UTF-8 and NUL bytes are stored, not rejected.
	mustMarkPending(t, s, "a", 2)
	c = claimOne(t, s, "w", "a")
	if ok, err := s.SettleFailed(ctx, "w", c, "bad \xff byte \x00 nul", false); !ok || err != nil {
		t.Fatalf("SettleFailed with invalid UTF-8 = %v, %v", ok, err)
	}
	if got := mustGet(t, s, "a", 2).LastSyncFailure; got != "bad \uFFFD byte  nul" {
		t.Fatalf("last_sync_failure = %q", got)
	}
}

func TestTruncateNeverSplitsRunes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, max := range []int{1, 2, 3, 4, 5, 6} {
		s, _, _ := newStore(t, regstore.Options{MaxFailureLen: max})
		mustMarkPending(t, s, "a", 1)
		c := claimOne(t, s, "w", "a")
		if _, err := s.SettleFailed(ctx, "w", c, "€€", false); err != nil { // 3-byte runes
			t.Fatal(err)
		}
		got := mustGet(t, s, "a", 1).LastSyncFailure
		// Bounds below the marker's 3 bytes cut without it.
		want := map[int]string{1: "", 2: "", 3: "…", 4: "…", 5: "…", 6: "€€"}[max]
		if got != want {
			t.Errorf("MaxFailureLen %d: last_sync_failure = %q, want %q", max, got, want)
		}
	}
}

// TestFailureCutIsMarked is issue 20 item 11: a failure text cut to
// MaxFailureLen ended without a marker, so an operator could not tell it
// was cut. A cut text ends with "…" within the bound (counted in bytes,
// cut on a rune boundary); a text that fits, even exactly, is unchanged.
func TestFailureCutIsMarked(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const max = 40
	s, _, _ := newStore(t, regstore.Options{MaxFailureLen: max})
	fits := strings.Repeat("f", max)
	for i, tc := range []struct {
		name, reason, want string
	}{
		{"shorter", "blob: primary answered 503", "blob: primary answered 503"},
		{"exactly the bound", fits, fits},
		{"one byte over", fits + "x", fits[:max-3] + "…"},
		{"long ASCII", strings.Repeat("0123456789", 10), "0123456789012345678901234567890123456…"},
		// 2-byte runes: 37 bytes for the text would split one; 36 are kept.
		{"runes straddling the cut", "x" + strings.Repeat("é", 40), "x" + strings.Repeat("é", 18) + "…"},
		// 4-byte runes: 37 bytes hold 9 of them.
		{"4-byte runes", strings.Repeat("😀", 20), strings.Repeat("😀", 9) + "…"},
		{"NUL and invalid UTF-8 removed before cutting", "a\x00b\xff" + strings.Repeat("c", 50), "ab\uFFFD" + strings.Repeat("c", 32) + "…"},
	} {
		id := int64(i + 1)
		mustMarkPending(t, s, "a", id)
		c := claimOne(t, s, "w", "a")
		if ok, err := s.SettleFailed(ctx, "w", c, tc.reason, false); !ok || err != nil {
			t.Fatalf("%s: SettleFailed = %v, %v", tc.name, ok, err)
		}
		got := mustGet(t, s, "a", id).LastSyncFailure
		if got != tc.want {
			t.Errorf("%s: last_sync_failure = %q, want %q", tc.name, got, tc.want)
		}
		if len(got) > max || !utf8.ValidString(got) {
			t.Errorf("%s: last_sync_failure = %d bytes (valid UTF-8 %v), want at most %d valid", tc.name, len(got), utf8.ValidString(got), max)
		}
	}
}
