package regstore_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
)

// TestStageKeysRecordsAndDeleteRemovesIt checks StageKeys end to end: the
// staged key is returned by the next claim, cleared by a settle, and
// removed by a delete of a row that still has it.
func TestStageKeysRecordsAndDeleteRemovesIt(t *testing.T) {
	store, _, _ := newStore(t, regstore.Options{})
	ctx := context.Background()
	_, err := store.MarkPending(ctx, "item", []int64{1, 2})
	require.NoError(t, err)
	claims, err := store.Claim(ctx, regstore.ClaimParams{Lease: regstore.Lease{Owner: "w1", Duration: time.Minute}, Limits: []regstore.TypeLimit{{Replicable: "item", Limit: 2}}})
	require.NoError(t, err)
	require.Len(t, claims, 2)
	var stagings []regstore.Staging
	for _, c := range claims {
		stagings = append(stagings, regstore.Staging{Claim: c, Key: "k/new"})
	}
	got, err := store.StageKeys(ctx, "w1", stagings)
	require.NoError(t, err)
	require.Equal(t, map[registry.Key]bool{claims[0].Key(): true, claims[1].Key(): true}, got)
	// The settle of row 1 does not happen (a crash); row 2's does.
	c2 := claims[0]
	if c2.ModelID != 2 {
		c2 = claims[1]
	}
	ok, err := store.SettleSynced(ctx, "w1", c2, regstore.SyncedResult{BlobKey: "k/new"}, nil)
	require.NoError(t, err)
	require.True(t, ok)
	var staged []struct {
		ID  int64  `db:"model_id"`
		Key string `db:"k"`
	}
	require.NoError(t, store.DB().SelectContext(ctx, &staged, `SELECT model_id, coalesce(staged_key, '') AS k FROM geo_registry ORDER BY model_id`))
	require.Equal(t, "k/new", staged[0].Key, "row 1 keeps the staged key")
	require.Equal(t, "", staged[1].Key, "the settle clears it")

	var removed []string
	var mu sync.Mutex
	remove := func(_ context.Context, key string) error {
		mu.Lock()
		removed = append(removed, key)
		mu.Unlock()
		return nil
	}
	_, err = store.Delete(ctx, "item", 1, "", remove)
	require.NoError(t, err)
	require.Empty(t, removed, "Delete keeps a staged key that another row records (R7)")
	_, err = store.Delete(ctx, "item", 2, "", remove)
	require.NoError(t, err)
	require.Equal(t, []string{"k/new"}, removed, "the last row naming the key removes its bytes")
}

// TestClearStagedKey: the bytes at a claim's staged key are removed under
// the row lock and the key forgotten only if the removal succeeded; a
// claim no longer held removes nothing; StageKeys refuses to record a new
// staged key over a different one that was not cleared.
func TestClearStagedKey(t *testing.T) {
	store, _, _ := newStore(t, regstore.Options{})
	ctx := context.Background()
	stagedKey := func() string {
		var k string
		require.NoError(t, store.DB().GetContext(ctx, &k, `SELECT coalesce(staged_key, '') FROM geo_registry WHERE model_id = 1`))
		return k
	}
	claim := func() regstore.Claim {
		claims, err := store.Claim(ctx, regstore.ClaimParams{Lease: regstore.Lease{Owner: "w1", Duration: time.Minute}, Limits: []regstore.TypeLimit{{Replicable: "item", Limit: 1}}})
		require.NoError(t, err)
		require.Len(t, claims, 1)
		return claims[0]
	}
	_, err := store.MarkPending(ctx, "item", []int64{1})
	require.NoError(t, err)
	c := claim()
	stage := func(c regstore.Claim, key string) (map[registry.Key]bool, error) {
		return store.StageKeys(ctx, "w1", []regstore.Staging{{Claim: c, Key: key}})
	}
	staged, err := stage(c, "k/b")
	require.NoError(t, err)
	require.True(t, staged[c.Key()])
	_, err = store.SettleFailed(ctx, "w1", c, "publish failed", false)
	require.NoError(t, err)
	_, err = store.MarkPending(ctx, "item", []int64{1}) // the record moved
	require.NoError(t, err)
	c = claim()
	require.Equal(t, "k/b", c.StagedKey)

	// Recording k/c over k/b is refused.
	_, err = stage(c, "k/c")
	require.ErrorContains(t, err, "ClearStagedKey first")
	// Staging the key already staged, or the key already recorded, needs
	// no statement and stages nothing.
	staged, err = stage(c, "k/b")
	require.NoError(t, err)
	require.Empty(t, staged)
	require.Equal(t, "k/b", stagedKey())

	// A failed removal keeps the key named.
	held, err := store.ClearStagedKey(ctx, "w1", c, func(context.Context, string) error { return errors.New("EIO") })
	require.ErrorContains(t, err, "EIO")
	require.False(t, held)
	require.Equal(t, "k/b", stagedKey())

	// Another owner removes nothing.
	held, err = store.ClearStagedKey(ctx, "w2", c, func(context.Context, string) error {
		t.Error("remove called for a claim not held")
		return nil
	})
	require.NoError(t, err)
	require.False(t, held)

	var removed []string
	held, err = store.ClearStagedKey(ctx, "w1", c, func(_ context.Context, key string) error {
		removed = append(removed, key)
		return nil
	})
	require.NoError(t, err)
	require.True(t, held)
	require.Equal(t, []string{"k/b"}, removed)
	require.Equal(t, "", stagedKey())
	c.StagedKey = ""
	staged, err = stage(c, "k/c")
	require.NoError(t, err)
	require.True(t, staged[c.Key()])
	require.Equal(t, "k/c", stagedKey())

	// A claim no longer held stages nothing and says so.
	_, err = store.MarkPending(ctx, "item", []int64{1})
	require.NoError(t, err)
	c.StagedKey = ""
	staged, err = store.StageKeys(ctx, "w1", []regstore.Staging{{Claim: c, Key: "k/d"}})
	require.NoError(t, err)
	require.Empty(t, staged)
	require.Equal(t, "k/c", stagedKey())
}

// TestRequeueRemoval: a deleted record whose bytes could not be removed
// goes back to the claim queue, with the event's key kept as the staged
// key when the row names no other; a claim in flight is made stale; a
// failed row keeps its backoff.
func TestRequeueRemoval(t *testing.T) {
	store, _, _ := newStore(t, regstore.Options{})
	ctx := context.Background()
	type rowState struct {
		State registry.State `db:"state"`
		Key   string         `db:"k"`
		Retry int            `db:"retry_count"`
		Seq   int64          `db:"seq"`
	}
	get := func(id int64) rowState {
		t.Helper()
		var r rowState
		require.NoError(t, store.DB().GetContext(ctx, &r, `SELECT state, coalesce(staged_key, '') AS k, retry_count, seq FROM geo_registry WHERE replicable = 'item' AND model_id = $1`, id))
		return r
	}
	requeue := func(id int64, key string, wantNamed bool) {
		t.Helper()
		named, err := store.RequeueRemoval(ctx, "item", id, key)
		require.NoError(t, err)
		require.Equal(t, wantNamed, named, "row %d names %q", id, key)
	}

	// No row: one is created, pending, naming the event's key.
	requeue(1, "k/1", true)
	require.Equal(t, rowState{State: registry.StatePending, Key: "k/1", Seq: get(1).Seq}, get(1))

	// A synced row recording the same key: pending, nothing staged (the
	// recorded key is removed anyway).
	_, err := store.MarkPending(ctx, "item", []int64{2, 3, 5})
	require.NoError(t, err)
	claims, err := store.Claim(ctx, regstore.ClaimParams{Lease: regstore.Lease{Owner: "w1", Duration: time.Minute}, Limits: []regstore.TypeLimit{{Replicable: "item", Limit: 4}}})
	require.NoError(t, err)
	require.Len(t, claims, 4)
	byID := map[int64]regstore.Claim{}
	for _, c := range claims {
		byID[c.ModelID] = c
	}
	ok, err := store.SettleSynced(ctx, "w1", byID[2], regstore.SyncedResult{BlobKey: "k/2"}, nil)
	require.NoError(t, err)
	require.True(t, ok)
	requeue(2, "k/2", true)
	r2 := get(2)
	require.Equal(t, registry.StatePending, r2.State)
	require.Equal(t, "", r2.Key)

	// A row claimed and staged elsewhere: its claim goes stale, and its
	// staged key is kept rather than overwritten (reported: the event's
	// key is not recorded).
	c3 := byID[3]
	_, err = store.StageKeys(ctx, "w1", []regstore.Staging{{Claim: c3, Key: "k/3-staged"}})
	require.NoError(t, err)
	requeue(3, "k/3-event", false)
	r3 := get(3)
	require.Equal(t, registry.StatePending, r3.State)
	require.Equal(t, "k/3-staged", r3.Key)
	ok, err = store.SettleSynced(ctx, "w1", c3, regstore.SyncedResult{BlobKey: "k/3-staged"}, nil)
	require.NoError(t, err)
	require.False(t, ok, "the claim from before the requeue is stale")

	// A row already pending stays pending, keeps its seq and gains the key.
	_, err = store.MarkPending(ctx, "item", []int64{4})
	require.NoError(t, err)
	seq4 := get(4).Seq
	requeue(4, "k/4", true)
	require.Equal(t, rowState{State: registry.StatePending, Key: "k/4", Seq: seq4}, get(4))

	// A failed row keeps its state and backoff (a consistency pass meeting
	// the same orphan again must not reset them).
	failed, err := store.SettleFailed(ctx, "w1", byID[5], "remove: input/output error", false)
	require.NoError(t, err)
	require.True(t, failed)
	before := get(5)
	require.Equal(t, registry.StateFailed, before.State)
	requeue(5, "", true)
	require.Equal(t, before, get(5))
}
