package regstore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
)

// exactCounts counts the rows themselves, in one grouped pass: what the
// maintained counts must say.
func exactCounts(t *testing.T, s *regstore.Store) map[string]registry.Counts {
	t.Helper()
	var groups []struct {
		Replicable string `db:"replicable"`
		State      int16  `db:"state"`
		VState     int16  `db:"verification_state"`
		N          int64  `db:"n"`
		Mismatch   int64  `db:"mismatch"`
		Missing    int64  `db:"missing"`
	}
	require.NoError(t, s.DB().SelectContext(context.Background(), &groups, `
SELECT replicable, state, verification_state, count(*) AS n,
  count(*) FILTER (WHERE checksum_mismatch) AS mismatch,
  count(*) FILTER (WHERE missing_on_primary) AS missing
FROM geo_registry GROUP BY replicable, state, verification_state`))
	out := map[string]registry.Counts{}
	for _, g := range groups {
		c := out[g.Replicable]
		c.Total += g.N
		switch registry.State(g.State) {
		case registry.StatePending:
			c.Pending += g.N
		case registry.StateStarted:
			c.Started += g.N
		case registry.StateSynced:
			c.Synced += g.N
		case registry.StateFailed:
			c.Failed += g.N
		}
		switch registry.VerificationState(g.VState) {
		case registry.VerificationPending:
			c.VerificationPending += g.N
		case registry.VerificationStarted:
			c.VerificationStarted += g.N
		case registry.VerificationSucceeded:
			c.VerificationSucceeded += g.N
		case registry.VerificationFailed:
			c.VerificationFailed += g.N
		case registry.VerificationDisabled:
			c.VerificationDisabled += g.N
		}
		c.ChecksumMismatch += g.Mismatch
		c.MissingOnPrimary += g.Missing
		out[g.Replicable] = c
	}
	return out
}

func maintainedCounts(t *testing.T, s *regstore.Store) map[string]registry.Counts {
	t.Helper()
	got, err := s.Counts(context.Background())
	require.NoError(t, err)
	out := map[string]registry.Counts{}
	for name, c := range got {
		out[name] = c.Counts
	}
	return out
}

// TestStatusCountsFollowEveryChange drives rows through every transition
// the engines make (inserts, event upserts, claims, settles, failures,
// verification, resyncs, deletes), from several goroutines at once while
// folds run, and checks the maintained counts against a full recount.
func TestStatusCountsFollowEveryChange(t *testing.T) {
	s, db, _ := newStore(t, regstore.Options{Now: time.Now})
	ctx := context.Background()
	types := []string{"alpha", "beta"}
	const ids = 300

	var wg sync.WaitGroup
	errs := make(chan error, 16)
	stop := make(chan struct{})
	for w := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			owner := fmt.Sprintf("worker-%d", w)
			for i := 0; i < 150; i++ {
				typ := types[rng.IntN(len(types))]
				some := []int64{rng.Int64N(ids) + 1, rng.Int64N(ids) + 1, rng.Int64N(ids) + 1}
				var err error
				switch rng.IntN(6) {
				case 0:
					_, err = s.InsertMissing(ctx, typ, some)
				case 1:
					_, err = s.MarkPending(ctx, typ, some)
				case 2:
					var claims []regstore.Claim
					claims, err = s.Claim(ctx, regstore.ClaimParams{Lease: regstore.Lease{Owner: owner, Duration: time.Minute}, Limits: []regstore.TypeLimit{{Replicable: typ, Limit: 5}}})
					for j, c := range claims {
						if err != nil {
							break
						}
						switch j % 3 {
						case 0:
							_, err = s.SettleSynced(ctx, owner, c, regstore.SyncedResult{BlobKey: fmt.Sprintf("k/%d", c.ModelID), Size: 1, Checksum: "ab", PrimaryChecksum: "ab"}, nil)
						case 1:
							_, err = s.SettleFailed(ctx, owner, c, "primary answered 500", j%2 == 0)
						default:
							outs := s.SettleSyncedBatch(ctx, owner, []regstore.SettleItem{{Claim: c, Result: regstore.SyncedResult{BlobKey: fmt.Sprintf("k/%d", c.ModelID), Size: 1, Checksum: "cd"}}})
							err = outs[0].Err
						}
					}
				case 3:
					var vcs []regstore.VerifyClaim
					vcs, err = s.ClaimVerification(ctx, regstore.VerifyClaimParams{Lease: regstore.Lease{Owner: owner, Duration: time.Minute}, Replicable: typ, Limit: 5, ReverifyInterval: time.Hour})
					for j, c := range vcs {
						if err != nil {
							break
						}
						if j%2 == 0 {
							_, err = s.SettleVerified(ctx, owner, c, "cd")
						} else {
							_, err = s.SettleVerifyFailed(ctx, owner, c, regstore.VerifyFailure{Reason: "mismatch", LocalChecksum: "ee", PrimaryChecksum: "cd", Mismatch: true, Resync: j%4 == 1})
						}
					}
				case 4:
					_, err = s.Delete(ctx, typ, some[0], "", nil)
				case 5:
					_, err = s.Resync(ctx, typ, some[:1])
				}
				if err != nil && !strings.Contains(err.Error(), "40P01") {
					errs <- fmt.Errorf("worker %d step %d: %w", w, i, err)
					return
				}
			}
		})
	}
	var folds sync.WaitGroup
	folds.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := s.FoldCounts(ctx); err != nil {
				errs <- fmt.Errorf("fold: %w", err)
				return
			}
		}
	})
	wg.Wait()
	close(stop)
	folds.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	want := exactCounts(t, s)
	require.NotEmpty(t, want)
	require.Equal(t, want, maintainedCounts(t, s), "maintained counts after the workload")
	require.NoError(t, s.FoldCounts(ctx))
	require.Equal(t, want, maintainedCounts(t, s), "after a fold")
	var rows int
	require.NoError(t, db.GetContext(ctx, &rows, `SELECT count(*) FROM geo_registry_counts`))
	require.LessOrEqual(t, rows, 2*4*5*2*2, "a fold leaves at most one row per group")
}

// TestStatusCountsSeededByMigration: rows present before the counts
// existed are counted by the migration that creates them.
func TestStatusCountsSeededByMigration(t *testing.T) {
	s, db, _ := newStore(t, regstore.Options{})
	ctx := context.Background()
	mustMarkPending(t, s, "alpha", 1, 2, 3)
	_, err := s.InsertMissing(ctx, "beta", []int64{7, 8})
	require.NoError(t, err)
	// Forget the counts, as if the rows predated migration 0007, and run
	// the migration's own seeding statement again through RecountCounts.
	_, err = db.ExecContext(ctx, `DELETE FROM geo_registry_counts`)
	require.NoError(t, err)
	require.Empty(t, maintainedCounts(t, s))
	require.NoError(t, s.RecountCounts(ctx))
	require.Equal(t, exactCounts(t, s), maintainedCounts(t, s))
	require.Equal(t, int64(3), maintainedCounts(t, s)["alpha"].Pending)
}

// TestRegistryRefusesTruncate: TRUNCATE has no transition table, so it
// would leave the counts wrong; it is refused with a message saying why.
func TestRegistryRefusesTruncate(t *testing.T) {
	s, db, _ := newStore(t, regstore.Options{})
	mustMarkPending(t, s, "alpha", 1)
	_, err := db.ExecContext(context.Background(), `TRUNCATE geo_registry`)
	require.ErrorContains(t, err, "DELETE the rows instead")
	require.Equal(t, int64(1), maintainedCounts(t, s)["alpha"].Total)
}

// TestStatusCountsLastProgress: LastProgressAt is the latest time a row
// became synced or verified, and stays when the row changes again.
func TestStatusCountsLastProgress(t *testing.T) {
	s, _, clock := newStore(t, regstore.Options{})
	ctx := context.Background()
	mustMarkPending(t, s, "alpha", 1)
	got, err := s.Counts(ctx)
	require.NoError(t, err)
	require.True(t, got["alpha"].LastProgressAt.IsZero(), "nothing synced yet")

	claims, err := s.Claim(ctx, regstore.ClaimParams{Lease: regstore.Lease{Owner: "w", Duration: time.Minute}, Limits: []regstore.TypeLimit{{Replicable: "alpha", Limit: 1}}})
	require.NoError(t, err)
	require.Len(t, claims, 1)
	syncedAt := clock.Now()
	ok, err := s.SettleSynced(ctx, "w", claims[0], regstore.SyncedResult{BlobKey: "k/1", Size: 1, Checksum: "ab"}, nil)
	require.NoError(t, err)
	require.True(t, ok)
	clock.Advance(time.Hour)
	mustMarkPending(t, s, "alpha", 1) // an update: the row leaves synced
	got, err = s.Counts(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), got["alpha"].Pending)
	require.True(t, got["alpha"].LastProgressAt.Equal(syncedAt), "got %v, want %v", got["alpha"].LastProgressAt, syncedAt)
}
