package regstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/internal/regstore"
)

// TestKeySpacesSeparateKinds: R7 holds per key space (one kind's
// storage). A blob row and a repository row naming the same string name
// different data (a file in the blob storage, a directory under the
// repository root): neither keeps the other's data, on every removal
// path (Delete, DeleteRows, a settle batch mixing both kinds,
// ClearStagedKey). Within a space references still count (a repository
// path reused after a delete), and a type the map does not list keeps a
// key in every space.
func TestKeySpacesSeparateKinds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _ := newStore(t, regstore.Options{KeySpaces: map[string]string{
		"pkg": "blob", "lfs": "blob", "project": "repository", "wiki": "repository",
	}})
	const k = "g/p.git"

	// Delete: a blob row's key is removed although a repository row
	// names the same string.
	syncedAt(t, s, "pkg", 1, k)
	syncedAt(t, s, "project", 1, k)
	var blobs, repos removals
	_, err := s.Delete(ctx, "pkg", 1, "", blobs.remove)
	require.NoError(t, err)
	require.Equal(t, []string{k}, blobs.got(), "the repository row must not keep the blob's bytes")

	// Within the repository space a reference counts: wiki/1 names the
	// path too (a path reused after a delete), so the delete keeps it.
	syncedAt(t, s, "wiki", 1, k)
	_, err = s.Delete(ctx, "project", 1, "", repos.remove)
	require.NoError(t, err)
	require.Empty(t, repos.got(), "wiki/1 of the same space still names the path")
	_, err = s.Delete(ctx, "wiki", 1, "", repos.remove)
	require.NoError(t, err)
	require.Equal(t, []string{k}, repos.got())

	// DeleteRows (orphans, the bulk path).
	syncedAt(t, s, "project", 2, "x.git")
	syncedAt(t, s, "pkg", 2, "x.git")
	var bulk []string
	gone, err := s.DeleteRows(ctx, "project", []int64{2}, func(_ context.Context, keys []string) error {
		bulk = append(bulk, keys...)
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, []int64{2}, gone)
	require.Equal(t, []string{"x.git"}, bulk, "pkg/2's blob at the same string must not keep the repository")

	// A settle batch mixing kinds, both rows leaving the same string: each
	// kind's data is removed from its own storage.
	syncedAt(t, s, "pkg", 3, "old")
	syncedAt(t, s, "project", 3, "old")
	mustMarkPending(t, s, "pkg", 3)
	mustMarkPending(t, s, "project", 3)
	claims := mustClaim(t, s, "w", time.Minute,
		regstore.TypeLimit{Replicable: "pkg", Limit: 1}, regstore.TypeLimit{Replicable: "project", Limit: 1})
	require.Len(t, claims, 2)
	var bl, rp removals
	var items []regstore.SettleItem
	for _, c := range claims {
		rm := bl.remove
		if c.Replicable == "project" {
			rm = rp.remove
		}
		items = append(items, regstore.SettleItem{Claim: c, Result: regstore.SyncedResult{BlobKey: "new/" + c.Replicable}, Remove: rm})
	}
	for i, o := range s.SettleSyncedBatch(ctx, "w", items) {
		require.NoError(t, o.Err, "item %d", i)
		require.True(t, o.Settled, "item %d", i)
	}
	require.Equal(t, []string{"old"}, bl.got(), "the blob storage's old key")
	require.Equal(t, []string{"old"}, rp.got(), "the repository root's old path")

	// ClearStagedKey: a staged path no other repository row names goes,
	// whatever blob rows name.
	syncedAt(t, s, "pkg", 4, "staged.git")
	mustMarkPending(t, s, "project", 4)
	c := claimOne(t, s, "w", "project")
	_, err = s.StageKeys(ctx, "w", []regstore.Staging{{Claim: c, Key: "staged.git"}})
	require.NoError(t, err)
	c.StagedKey = "staged.git"
	var cl removals
	held, err := s.ClearStagedKey(ctx, "w", c, cl.remove)
	require.NoError(t, err)
	require.True(t, held)
	require.Equal(t, []string{"staged.git"}, cl.got())

	// A type the map does not list keeps the key in every space.
	syncedAt(t, s, "unlisted", 5, "shared")
	syncedAt(t, s, "project", 5, "shared")
	var un removals
	_, err = s.Delete(ctx, "project", 5, "", un.remove)
	require.NoError(t, err)
	require.Empty(t, un.got(), "a row of an unlisted type counts in every space")
}

// TestKeySpacesDefaultIsOneSpace: without KeySpaces every type shares one
// space, as before key spaces existed.
func TestKeySpacesDefaultIsOneSpace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _ := newStore(t, regstore.Options{})
	syncedAt(t, s, "pkg", 1, "k")
	syncedAt(t, s, "project", 1, "k")
	var r removals
	_, err := s.Delete(ctx, "pkg", 1, "", r.remove)
	require.NoError(t, err)
	require.Empty(t, r.got())
}
