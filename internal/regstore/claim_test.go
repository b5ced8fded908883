package regstore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
)

func TestClaimOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, clock := newStore(t, regstore.Options{})

	// FIFO by seq, not by id.
	mustMarkPending(t, s, "a", 50)
	mustMarkPending(t, s, "a", 30)
	mustMarkPending(t, s, "a", 90)
	for _, want := range []int64{50, 30, 90} {
		c := claimOne(t, s, "w", "a")
		if c.ModelID != want || c.PrevState != registry.StatePending {
			t.Fatalf("claim = id %d from %v, want id %d from pending (FIFO by seq)", c.ModelID, c.PrevState, want)
		}
		if ok, err := s.SettleFailed(ctx, "w", c, "x", false); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	// 50, 30, 90 are failed and due in 10-12.5s. Add fresh pending work.
	clock.Advance(time.Hour)
	mustMarkPending(t, s, "a", 7)
	mustMarkPending(t, s, "a", 6)
	cs := mustClaim(t, s, "w", time.Minute, regstore.TypeLimit{Replicable: "a", Limit: 3})
	if len(cs) != 3 {
		t.Fatalf("claimed %d, want 3", len(cs))
	}
	pending, failed := 0, 0
	for _, c := range cs {
		switch c.PrevState {
		case registry.StatePending:
			pending++
		case registry.StateFailed:
			failed++
			if c.RetryCount != 1 {
				t.Errorf("due retry claim retry_count = %d, want 1", c.RetryCount)
			}
		}
	}
	if pending != 2 || failed != 1 {
		t.Fatalf("claimed %d pending and %d failed rows, want 1 due retry (a quarter of 3, at least one) and 2 pending", pending, failed)
	}
	if err := s.Release(ctx, "w", cs); err != nil {
		t.Fatal(err)
	}

	// Per-type limits, several types in one statement.
	mustMarkPending(t, s, "b", ids(1, 10)...)
	cs = mustClaim(t, s, "w", time.Minute,
		regstore.TypeLimit{Replicable: "a", Limit: 4},
		regstore.TypeLimit{Replicable: "b", Limit: 2},
		regstore.TypeLimit{Replicable: "b", Limit: 1},
		regstore.TypeLimit{Replicable: "c", Limit: 5},
		regstore.TypeLimit{Replicable: "d", Limit: 0})
	per := map[string]int{}
	for _, c := range cs {
		per[c.Replicable]++
		if c.LeaseExpiresAt != clock.Now().Add(time.Minute) {
			t.Errorf("lease expires at %v, want %v", c.LeaseExpiresAt, clock.Now().Add(time.Minute))
		}
	}
	if per["a"] != 4 || per["b"] != 3 || len(per) != 2 {
		t.Fatalf("claims per type = %v, want a:4 b:3", per)
	}
}

// TestClaimOrderUnderBacklog: however large the pending backlog (100,000
// rows here), one claim takes every started row whose lease expired (a
// dead worker's) first, then due retries up to a quarter of its limit,
// then pending rows in FIFO order; with no pending rows left, due retries
// fill the whole claim. Before, the pending branch came first and took
// every claim while the backlog lasted: a dead worker's rows waited hours
// behind a backfill (issue 20, item 2).
func TestClaimOrderUnderBacklog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, db, clock := newStore(t, regstore.Options{})
	if _, err := db.ExecContext(ctx, `
INSERT INTO geo_registry (replicable, model_id, created_at, updated_at)
SELECT 'a', g, now(), now() FROM generate_series(1, 100000) g`); err != nil {
		t.Fatal(err)
	}
	now := clock.Now()
	// Rows 100001-100003 were claimed by a worker that died (leases
	// expired); 100004-100053 failed and are due; 100054 failed, not due.
	if _, err := db.ExecContext(ctx, `
INSERT INTO geo_registry (replicable, model_id, created_at, updated_at, state, lease_owner, lease_expires_at, retry_count, retry_at)
SELECT 'a', g, now(), now(),
  CASE WHEN g <= 100003 THEN 1 ELSE 3 END,
  CASE WHEN g <= 100003 THEN 'dead' END,
  CASE WHEN g <= 100003 THEN $1::timestamptz - interval '1 second' END,
  CASE WHEN g <= 100003 THEN 0 ELSE 1 END,
  CASE WHEN g > 100003 AND g < 100054 THEN $1::timestamptz - (g - 100000) * interval '1 second'
       WHEN g = 100054 THEN $1::timestamptz + interval '1 hour' END
FROM generate_series(100001, 100054) g`, now); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `ANALYZE geo_registry`); err != nil {
		t.Fatal(err)
	}
	byState := func(cs []regstore.Claim) map[registry.State][]int64 {
		out := map[registry.State][]int64{}
		for _, c := range cs {
			out[c.PrevState] = append(out[c.PrevState], c.ModelID)
		}
		for _, ids := range out {
			slices.Sort(ids)
		}
		return out
	}
	got := byState(mustClaim(t, s, "w", time.Minute, regstore.TypeLimit{Replicable: "a", Limit: 32}))
	if want := []int64{100001, 100002, 100003}; !slices.Equal(got[registry.StateStarted], want) {
		t.Fatalf("expired leases claimed: got %v, want %v first", got[registry.StateStarted], want)
	}
	// The oldest due retries: retry_at falls with the id, so the largest ids.
	if want := ids(100046, 100053); !slices.Equal(got[registry.StateFailed], want) {
		t.Fatalf("due retries claimed: got %v, want the 8 oldest %v (a quarter of 32)", got[registry.StateFailed], want)
	}
	if want := ids(1, 21); !slices.Equal(got[registry.StatePending], want) {
		t.Fatalf("pending claimed: got %v, want the first 21 in FIFO order %v", got[registry.StatePending], want)
	}

	// Without pending rows, due retries fill the claim, never the one not due.
	if _, err := db.ExecContext(ctx, `DELETE FROM geo_registry WHERE state = 0`); err != nil {
		t.Fatal(err)
	}
	got = byState(mustClaim(t, s, "w", time.Minute, regstore.TypeLimit{Replicable: "a", Limit: 100}))
	if want := ids(100004, 100045); !slices.Equal(got[registry.StateFailed], want) || len(got) != 1 {
		t.Fatalf("claim without pending rows: got %v, want the 42 remaining due retries %v", got, want)
	}
}

// TestClaimersNeverShareRows runs several claimers with separate owners
// until all work is done: no row is ever handed to two claimers, and no
// claim exceeds a type's limit.
func TestClaimersNeverShareRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _ := newStore(t, regstore.Options{})
	const perType = 1200
	if _, err := s.InsertMissing(ctx, "a", ids(1, perType)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.InsertMissing(ctx, "b", ids(1, perType)); err != nil {
		t.Fatal(err)
	}
	limits := []regstore.TypeLimit{{Replicable: "a", Limit: 10}, {Replicable: "b", Limit: 7}}

	var mu sync.Mutex
	seen := map[registry.Key]string{}
	errs := make(chan error, 100)
	report := func(err error) { // never blocks: the first 100 errors are enough
		select {
		case errs <- err:
		default:
		}
	}
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		owner := fmt.Sprintf("worker-%d", w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				cs, err := s.Claim(ctx, regstore.ClaimParams{Lease: regstore.Lease{Owner: owner, Duration: time.Hour}, Limits: limits})
				if err != nil {
					report(err)
					return
				}
				if len(cs) == 0 {
					return
				}
				per := map[string]int{}
				mu.Lock()
				for _, c := range cs {
					per[c.Replicable]++
					if prev, dup := seen[c.Key()]; dup {
						report(fmt.Errorf("row %v claimed by %s and by %s", c.Key(), prev, owner))
					}
					seen[c.Key()] = owner
				}
				mu.Unlock()
				if per["a"] > 10 || per["b"] > 7 {
					report(fmt.Errorf("one claim took %v, want at most a:10 b:7", per))
				}
				for _, c := range cs {
					if ok, err := s.SettleSynced(ctx, owner, c, regstore.SyncedResult{BlobKey: "k"}, nil); !ok || err != nil {
						report(fmt.Errorf("SettleSynced(%v) = %v, %v", c.Key(), ok, err))
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(seen) != 2*perType {
		t.Errorf("claimed %d distinct rows, want %d", len(seen), 2*perType)
	}
	counts, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if counts["a"].Synced != perType || counts["b"].Synced != perType {
		t.Errorf("synced = a:%d b:%d, want %d each", counts["a"].Synced, counts["b"].Synced, perType)
	}
}

// TestExpiredLeaseReclaimed checks R3: a dead worker's row is claimable by
// another owner once its lease expires, and the old owner can no longer
// settle, renew or delete it.
func TestExpiredLeaseReclaimed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, clock := newStore(t, regstore.Options{})
	mustMarkPending(t, s, "a", 1)
	lease := 30 * time.Second
	old := mustClaim(t, s, "old", lease, regstore.TypeLimit{Replicable: "a", Limit: 1})[0]

	clock.Advance(20 * time.Second)
	if lost, err := s.RenewLeases(ctx, regstore.Lease{Owner: "old", Duration: lease}, []regstore.Claim{old}); err != nil || len(lost) != 0 {
		t.Fatalf("RenewLeases by the holder = %v, %v; want nothing lost", lost, err)
	}
	if r := mustGet(t, s, "a", 1); !r.LeaseExpiresAt.Equal(clock.Now().Add(lease)) {
		t.Fatalf("renewed lease expires at %v, want %v", r.LeaseExpiresAt, clock.Now().Add(lease))
	}
	clock.Advance(lease) // exactly at expiry: not yet reclaimable
	if cs := mustClaim(t, s, "new", lease, regstore.TypeLimit{Replicable: "a", Limit: 1}); len(cs) != 0 {
		t.Fatalf("claimed a row whose lease has not expired: %+v", cs)
	}
	clock.Advance(time.Millisecond)
	cs := mustClaim(t, s, "new", lease, regstore.TypeLimit{Replicable: "a", Limit: 1})
	if len(cs) != 1 || cs[0].PrevState != registry.StateStarted || cs[0].Seq != old.Seq {
		t.Fatalf("claim after expiry = %+v, want the row, from started", cs)
	}
	if lost, err := s.RenewLeases(ctx, regstore.Lease{Owner: "old", Duration: lease}, []regstore.Claim{old}); err != nil || len(lost) != 1 || lost[0] != old.Key() {
		t.Fatalf("RenewLeases by the old owner = %v, %v; want [%v] lost", lost, err, old.Key())
	}
	if ok, err := s.SettleSynced(ctx, "old", old, regstore.SyncedResult{BlobKey: "k"}, func(context.Context) error {
		t.Error("publish called for a lost claim")
		return nil
	}); ok || err != nil {
		t.Fatalf("SettleSynced by the old owner = %v, %v; want false, nil", ok, err)
	}
	if ok, err := s.SettleFailed(ctx, "old", old, "x", false); ok || err != nil {
		t.Fatalf("SettleFailed by the old owner = %v, %v; want false, nil", ok, err)
	}
	if ok, err := s.DeleteIfClaim(ctx, "old", old, func(context.Context, string) error {
		t.Error("remove called for a lost claim")
		return nil
	}); ok || err != nil {
		t.Fatalf("DeleteIfClaim by the old owner = %v, %v; want false, nil", ok, err)
	}
	if ok, err := s.SettleSynced(ctx, "new", cs[0], regstore.SyncedResult{BlobKey: "k"}, nil); !ok || err != nil {
		t.Fatalf("SettleSynced by the new owner = %v, %v; want true, nil", ok, err)
	}
}

func TestRelease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, clock := newStore(t, regstore.Options{})
	mustMarkPending(t, s, "a", 1, 2)
	c1 := claimOne(t, s, "w", "a")
	if ok, err := s.SettleFailed(ctx, "w", c1, "x", false); !ok || err != nil {
		t.Fatal(ok, err)
	}
	clock.Advance(time.Hour)
	cs := mustClaim(t, s, "w", time.Minute, regstore.TypeLimit{Replicable: "a", Limit: 2})
	if len(cs) != 2 {
		t.Fatalf("claimed %d, want 2", len(cs))
	}
	if err := s.Release(ctx, "other", cs); err != nil {
		t.Fatal(err)
	}
	if r := mustGet(t, s, "a", 1); r.State != registry.StateStarted {
		t.Fatalf("Release by a non-owner changed the row: %v", r.State)
	}
	if err := s.Release(ctx, "w", cs); err != nil {
		t.Fatal(err)
	}
	r1, r2 := mustGet(t, s, "a", 1), mustGet(t, s, "a", 2)
	if r1.State != registry.StateFailed || r1.RetryCount != 1 || r1.LeaseOwner != "" {
		t.Errorf("released due retry = %+v, want failed again, retry_count 1, no lease", r1)
	}
	if r2.State != registry.StatePending || r2.LeaseOwner != "" || !r2.LeaseExpiresAt.IsZero() {
		t.Errorf("released pending row = %+v, want pending, no lease", r2)
	}
	if cs := mustClaim(t, s, "w2", time.Minute, regstore.TypeLimit{Replicable: "a", Limit: 5}); len(cs) != 2 {
		t.Errorf("claims after Release = %d, want both rows claimable", len(cs))
	}
}

func TestSettleSyncedVerification(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, clock := newStore(t, regstore.Options{})
	mustMarkPending(t, s, "a", 1, 2, 3)

	c := claimOne(t, s, "w", "a")
	if ok, err := s.SettleSynced(ctx, "w", c, regstore.SyncedResult{BlobKey: "k1", Size: 9, Checksum: "aa", PrimaryChecksum: "aa"}, nil); !ok || err != nil {
		t.Fatal(ok, err)
	}
	r := mustGet(t, s, "a", 1)
	if r.VerificationState != registry.VerificationSucceeded || !r.VerifiedAt.Equal(clock.Now()) ||
		r.VerificationChecksum != "aa" || r.BlobKey != "k1" || r.BlobSize != 9 || !r.LastSyncedAt.Equal(clock.Now()) {
		t.Fatalf("row synced with matching checksums = %+v", r)
	}

	c = claimOne(t, s, "w", "a")
	if ok, err := s.SettleSynced(ctx, "w", c, regstore.SyncedResult{BlobKey: "k2", Checksum: "bb"}, nil); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if r := mustGet(t, s, "a", 2); r.VerificationState != registry.VerificationPending || !r.VerifiedAt.IsZero() || r.VerificationChecksum != "bb" {
		t.Fatalf("row synced without a primary checksum = %+v, want verification pending", r)
	}

	// R6: a mismatch is never a success.
	c = claimOne(t, s, "w", "a")
	ok, err := s.SettleSynced(ctx, "w", c, regstore.SyncedResult{BlobKey: "k3", Checksum: "cc", PrimaryChecksum: "dd"},
		func(context.Context) error { t.Error("publish called on a checksum mismatch"); return nil })
	if ok || !errors.Is(err, blob.ErrChecksumMismatch) {
		t.Fatalf("SettleSynced with a mismatch = %v, %v; want false, ErrChecksumMismatch", ok, err)
	}
	if r := mustGet(t, s, "a", 3); r.State != registry.StateStarted {
		t.Fatalf("row after a rejected mismatch = %v, want still started", r.State)
	}

	// A publish error rolls back: the row stays started and can be failed.
	errDisk := errors.New("disk full")
	ok, err = s.SettleSynced(ctx, "w", c, regstore.SyncedResult{BlobKey: "k3"}, func(context.Context) error { return errDisk })
	if ok || !errors.Is(err, errDisk) {
		t.Fatalf("SettleSynced with a failing publish = %v, %v; want false and the publish error", ok, err)
	}
	if r := mustGet(t, s, "a", 3); r.State != registry.StateStarted || r.BlobKey != "" {
		t.Fatalf("row after a failed publish = %+v, want started and unchanged", r)
	}
	if ok, err := s.SettleFailed(ctx, "w", c, "disk full", false); !ok || err != nil {
		t.Fatalf("SettleFailed after a failed publish = %v, %v", ok, err)
	}
}

func TestDelete(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _ := newStore(t, regstore.Options{})
	mustMarkPending(t, s, "a", 1, 2)
	c := claimOne(t, s, "w", "a")
	if ok, err := s.SettleSynced(ctx, "w", c, regstore.SyncedResult{BlobKey: "key-1"}, nil); !ok || err != nil {
		t.Fatal(ok, err)
	}

	errRemove := errors.New("EIO")
	existed, err := s.Delete(ctx, "a", 1, "", func(context.Context, string) error { return errRemove })
	if existed || !errors.Is(err, errRemove) {
		t.Fatalf("Delete with a failing remove = %v, %v; want false and the remove error", existed, err)
	}
	mustGet(t, s, "a", 1) // kept

	var got []string
	record := func(_ context.Context, key string) error { got = append(got, key); return nil }
	if existed, err := s.Delete(ctx, "a", 1, "", record); !existed || err != nil {
		t.Fatalf("Delete(1) = %v, %v", existed, err)
	}
	if existed, err := s.Delete(ctx, "a", 2, "", record); !existed || err != nil { // never synced: no key
		t.Fatalf("Delete(2) = %v, %v", existed, err)
	}
	if existed, err := s.Delete(ctx, "a", 3, "", record); existed || err != nil { // no row
		t.Fatalf("Delete(3) = %v, %v", existed, err)
	}
	if strings.Join(got, ",") != "key-1" {
		t.Fatalf("remove got keys %q, want [key-1] (rows without a key remove nothing)", got)
	}
	if _, err := s.Get(ctx, "a", 1); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Get after Delete = %v, want ErrNotFound", err)
	}

	// DeleteIfClaim only deletes a current claim.
	mustMarkPending(t, s, "a", 4)
	c = claimOne(t, s, "w", "a")
	mustMarkPending(t, s, "a", 4) // an event: the claim is stale
	if ok, err := s.DeleteIfClaim(ctx, "w", c, record); ok || err != nil {
		t.Fatalf("DeleteIfClaim of a stale claim = %v, %v; want false, nil", ok, err)
	}
	mustGet(t, s, "a", 4)
	c = claimOne(t, s, "w", "a")
	if ok, err := s.DeleteIfClaim(ctx, "w", c, record); !ok || err != nil {
		t.Fatalf("DeleteIfClaim of a current claim = %v, %v; want true, nil", ok, err)
	}
	if _, err := s.Get(ctx, "a", 4); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Get after DeleteIfClaim = %v, want ErrNotFound", err)
	}
}

// TestR1StaleSettleAfterMarkPending is R1's deterministic half: an event
// after the claim makes the settle a no-op and leaves the row pending, even
// when another worker of the same owner has claimed the new generation.
func TestR1StaleSettleAfterMarkPending(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _ := newStore(t, regstore.Options{})
	mustMarkPending(t, s, "a", 1)
	c := claimOne(t, s, "w", "a")
	mustMarkPending(t, s, "a", 1)
	stale := func(step string) {
		t.Helper()
		if ok, err := s.SettleSynced(ctx, "w", c, regstore.SyncedResult{BlobKey: "k"}, func(context.Context) error {
			t.Errorf("%s: publish called for a stale claim", step)
			return nil
		}); ok || err != nil {
			t.Fatalf("%s: SettleSynced of the stale claim = %v, %v; want false, nil", step, ok, err)
		}
		if ok, err := s.SettleFailed(ctx, "w", c, "x", false); ok || err != nil {
			t.Fatalf("%s: SettleFailed of the stale claim = %v, %v; want false, nil", step, ok, err)
		}
		if ok, err := s.DeleteIfClaim(ctx, "w", c, nil); ok || err != nil {
			t.Fatalf("%s: DeleteIfClaim of the stale claim = %v, %v; want false, nil", step, ok, err)
		}
	}
	stale("after the event")
	if r := mustGet(t, s, "a", 1); r.State != registry.StatePending || r.Seq == c.Seq || r.RetryCount != 0 {
		t.Fatalf("row = %+v, want pending with a new seq", r)
	}
	// Another worker with the same owner claims the new generation.
	c2 := claimOne(t, s, "w", "a")
	stale("after the re-claim")
	if r := mustGet(t, s, "a", 1); r.State != registry.StateStarted || r.Seq != c2.Seq {
		t.Fatalf("row = %+v, want started by the new claim (seq %d)", r, c2.Seq)
	}
	if lost, err := s.RenewLeases(ctx, regstore.Lease{Owner: "w", Duration: time.Minute}, []regstore.Claim{c, c2}); err != nil || len(lost) != 1 || lost[0] != c.Key() {
		t.Fatalf("RenewLeases(stale, current) = %v, %v; want only the stale claim lost", lost, err)
	}
}

// TestR1ConcurrentMarkPending races an event (MarkPending, then a re-claim
// by another worker of the same owner, as in one process's pool) against
// the settle of a claim taken before the event. Whatever the interleaving,
// the stale sync must never mark the row synced: it ends started by the
// re-claim, with the newer generation.
func TestR1ConcurrentMarkPending(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _ := newStore(t, regstore.Options{})
	const iterations = 200
	settledFirst, eventFirst := 0, 0
	for i := int64(1); i <= iterations; i++ {
		mustMarkPending(t, s, "a", i)
		c := claimOne(t, s, "w", "a")
		if c.ModelID != i {
			t.Fatalf("claimed %d, want %d", c.ModelID, i)
		}
		start := make(chan struct{})
		type result struct {
			claims []regstore.Claim
			err    error
		}
		done := make(chan result, 1)
		settleDone := make(chan struct{})
		go func() {
			<-start
			if _, err := s.MarkPending(ctx, "a", []int64{i}); err != nil {
				done <- result{err: err}
				return
			}
			// While the stale settle's transaction is open it may hold the
			// row's lock (READ COMMITTED locks the newest version before
			// rechecking), and SKIP LOCKED then skips the row: try again
			// until the settle has ended, then once more.
			for {
				ended := false
				select {
				case <-settleDone:
					ended = true
				default:
				}
				cs, err := s.Claim(ctx, regstore.ClaimParams{Lease: regstore.Lease{Owner: "w", Duration: time.Minute}, Limits: []regstore.TypeLimit{{Replicable: "a", Limit: 1}}})
				if err != nil || len(cs) > 0 || ended {
					done <- result{cs, err}
					return
				}
			}
		}()
		close(start)
		ok, err := s.SettleSynced(ctx, "w", c, regstore.SyncedResult{BlobKey: "k"}, func(context.Context) error {
			runtime.Gosched()
			return nil
		})
		close(settleDone)
		if err != nil {
			t.Fatalf("iteration %d: SettleSynced: %v", i, err)
		}
		res := <-done
		if res.err != nil {
			t.Fatalf("iteration %d: event: %v", i, res.err)
		}
		if len(res.claims) != 1 || res.claims[0].Seq <= c.Seq {
			t.Fatalf("iteration %d: re-claim after the event = %+v, want the row with a newer seq than %d", i, res.claims, c.Seq)
		}
		if ok {
			settledFirst++
		} else {
			eventFirst++
		}
		r := mustGet(t, s, "a", i)
		if r.State != registry.StateStarted || r.Seq != res.claims[0].Seq {
			t.Fatalf("iteration %d (stale settle returned %v): row state %v seq %d, want started by the re-claim (seq %d): an update was lost",
				i, ok, r.State, r.Seq, res.claims[0].Seq)
		}
		if ok, err := s.SettleSynced(ctx, "w", res.claims[0], regstore.SyncedResult{BlobKey: "k"}, nil); !ok || err != nil {
			t.Fatalf("iteration %d: settling the re-claim = %v, %v; want true", i, ok, err)
		}
	}
	t.Logf("settle first: %d, event first: %d", settledFirst, eventFirst)
}

// TestR2SettleRacingDelete races a settle (whose publish writes the file)
// against a delete (whose remove deletes it). Whatever the interleaving,
// neither row nor file may survive.
func TestR2SettleRacingDelete(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _ := newStore(t, regstore.Options{})
	dir := t.TempDir()
	const iterations = 150
	published := 0
	for i := int64(1); i <= iterations; i++ {
		path := filepath.Join(dir, fmt.Sprint(i))
		mustMarkPending(t, s, "a", i)
		c := claimOne(t, s, "w", "a")
		start := make(chan struct{})
		delErr := make(chan error, 1)
		go func() {
			<-start
			_, err := s.Delete(ctx, "a", i, "", func(context.Context, string) error {
				// The key is unknown (never synced) or the published one:
				// the caller removes the record's path either way.
				if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
					return err
				}
				return nil
			})
			delErr <- err
		}()
		close(start)
		ok, err := s.SettleSynced(ctx, "w", c, regstore.SyncedResult{BlobKey: fmt.Sprint(i)}, func(context.Context) error {
			tmp := path + ".tmp"
			if err := os.WriteFile(tmp, []byte("bytes"), 0o644); err != nil {
				return err
			}
			return os.Rename(tmp, path)
		})
		if err != nil {
			t.Fatalf("iteration %d: SettleSynced: %v", i, err)
		}
		if err := <-delErr; err != nil {
			t.Fatalf("iteration %d: Delete: %v", i, err)
		}
		if ok {
			published++
		}
		if _, err := s.Get(ctx, "a", i); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("iteration %d: row survived the delete: %v", i, err)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("iteration %d (settled %v): file survived the delete: stat = %v", i, ok, err)
		}
	}
	t.Logf("settled before the delete: %d of %d", published, iterations)
}

// analyzedRegistry returns a store whose registry holds rows 1..50000 of
// type "a", shaped by update (an UPDATE of geo_registry) and analyzed, for
// plan tests.
func analyzedRegistry(t *testing.T, update string) *regstore.Store {
	t.Helper()
	ctx := context.Background()
	s, db, _ := newStore(t, regstore.Options{})
	if _, err := s.InsertMissing(ctx, "a", ids(1, 50000)); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{update, `ANALYZE geo_registry`} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// TestClaimUsesPartialIndexes checks with EXPLAIN that each branch of the
// claim walks its partial index on a table dominated by synced rows.
func TestClaimUsesPartialIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := analyzedRegistry(t, `
UPDATE geo_registry SET state = CASE WHEN model_id % 100 = 0 THEN 3 WHEN model_id % 100 = 1 THEN 1 WHEN model_id % 100 = 2 THEN 0 ELSE 2 END,
  retry_at = now(), lease_expires_at = now()`)
	plan, err := s.ExplainClaim(ctx, "w", time.Minute, []regstore.TypeLimit{{Replicable: "a", Limit: 100}})
	if err != nil {
		t.Fatal(err)
	}
	for _, idx := range []string{"geo_registry_pending", "geo_registry_failed_due", "geo_registry_lease"} {
		if !strings.Contains(plan, idx) {
			t.Errorf("claim plan does not use %s:\n%s", idx, plan)
		}
	}
	if strings.Contains(plan, "Seq Scan on geo_registry") {
		t.Errorf("claim plan scans geo_registry sequentially:\n%s", plan)
	}
}

// TestKeyJoinedStatementsUseIndexes checks the plans of the statements that
// join a batch of keys to geo_registry, as the Store runs them (prepared,
// in a transaction with rowPlansSQL), on a registry of 20,000 rows: at
// that size the planner, guessing 50 to 100 keys, would otherwise
// hash-join against a sequential scan of every row on each call (8 ms per
// claim; the test logs which plans would).
func TestKeyJoinedStatementsUseIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, db, _ := newStore(t, regstore.Options{})
	if _, err := s.InsertMissing(ctx, "a", ids(1, 20000)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `UPDATE geo_registry SET state = 1, lease_owner = 'w' WHERE model_id <= 100`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `ANALYZE geo_registry`); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	keys := []any{"w", pq.Array([]string{"a", "a"}), pq.Array([]int64{1, 2}), pq.Array([]int64{1, 1})}
	for _, tc := range []struct {
		name, query string
		args        []any
	}{
		{"claim", regstore.ClaimSQL, []any{pq.Array([]string{"a"}), pq.Array([]int64{3}), now, "w", now.Add(time.Minute)}},
		{"lock held", regstore.LockHeldSQL, keys},
		{"clear staged key", regstore.ClearStagedSQL, keys},
		{"stage keys", regstore.StageKeysSQL, append(slices.Clone(keys), pq.Array([]string{"k/1", "k/2"}))},
		{"renew leases", regstore.RenewLeasesSQL, append(slices.Clone(keys), now, now)},
		{"settle batch", regstore.SettleBatchSQL, []any{"w", now, pq.Array([]string{"a"}), pq.Array([]int64{1}), pq.Array([]int64{1}),
			pq.Array([]string{"k/1"}), pq.Array([]int64{4}), pq.Array([]int16{2}), pq.Array([]string{"00"})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan, err := s.ExplainPrepared(ctx, regstore.RowPlansSQL, tc.query, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(plan, "Seq Scan on geo_registry") {
				t.Errorf("plan scans geo_registry sequentially:\n%s", plan)
			}
			without, err := s.ExplainPrepared(ctx, "", tc.query, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("without the settings, sequential scan: %v", strings.Contains(without, "Seq Scan on geo_registry"))
		})
	}
}
