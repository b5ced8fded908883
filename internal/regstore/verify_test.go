package regstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
)

// syncedRows makes ids of replicable synced with verification pending.
func syncedRows(t *testing.T, s *regstore.Store, replicable string, ids ...int64) {
	t.Helper()
	ctx := context.Background()
	mustMarkPending(t, s, replicable, ids...)
	claims, err := s.Claim(ctx, regstore.ClaimParams{Lease: regstore.Lease{Owner: "syncer", Duration: time.Minute}, Limits: []regstore.TypeLimit{{Replicable: replicable, Limit: len(ids)}}})
	require.NoError(t, err)
	require.Len(t, claims, len(ids))
	for _, c := range claims {
		ok, err := s.SettleSynced(ctx, "syncer", c, regstore.SyncedResult{BlobKey: "k", Size: 1, Checksum: "ab"}, nil)
		require.NoError(t, err)
		require.True(t, ok)
	}
}

// TestSettleVerifyPendingOnlyHeldClaims: the claims still held go back to
// verification pending until retryAt, in one call; a claim lost meanwhile
// (the row was updated and marked pending) is left alone.
func TestSettleVerifyPendingOnlyHeldClaims(t *testing.T) {
	s, _, clock := newStore(t, regstore.Options{})
	ctx := context.Background()
	syncedRows(t, s, "alpha", 1, 2, 3)
	vcs, err := s.ClaimVerification(ctx, regstore.VerifyClaimParams{Lease: regstore.Lease{Owner: "verifier", Duration: time.Minute}, Replicable: "alpha", Limit: 10, ReverifyInterval: time.Hour})
	require.NoError(t, err)
	require.Len(t, vcs, 3)
	mustMarkPending(t, s, "alpha", 2) // an update: the claim on 2 is stale

	retryAt := clock.Now().Add(time.Minute)
	n, err := s.SettleVerifyPending(ctx, "verifier", vcs, retryAt)
	require.NoError(t, err)
	require.Equal(t, int64(2), n)
	for _, id := range []int64{1, 3} {
		r := mustGet(t, s, "alpha", id)
		require.Equal(t, registry.VerificationPending, r.VerificationState, "row %d", id)
		require.True(t, r.VerificationRetryAt.Equal(retryAt), "row %d: retry at %v, want %v", id, r.VerificationRetryAt, retryAt)
		require.Empty(t, r.LeaseOwner, "row %d keeps no lease", id)
	}
	require.Equal(t, registry.StatePending, mustGet(t, s, "alpha", 2).State, "the updated row is left to its new sync")

	n, err = s.SettleVerifyPending(ctx, "verifier", nil, retryAt)
	require.NoError(t, err)
	require.Zero(t, n)
}
