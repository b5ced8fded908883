package regstore_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
)

// removals records the keys a remove function was called with.
type removals struct {
	mu   sync.Mutex
	keys []string
}

func (r *removals) remove(_ context.Context, key string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.keys = append(r.keys, key)
	return nil
}

func (r *removals) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Clone(r.keys)
	slices.Sort(out)
	return out
}

// syncedAt makes row id of replicable synced at key.
func syncedAt(t *testing.T, s *regstore.Store, replicable string, id int64, key string) {
	t.Helper()
	mustMarkPending(t, s, replicable, id)
	c := claimOne(t, s, "w", replicable)
	require.Equal(t, id, c.ModelID)
	ok, err := s.SettleSynced(context.Background(), "w", c, regstore.SyncedResult{BlobKey: key}, nil)
	require.NoError(t, err)
	require.True(t, ok)
}

// TestDeleteKeepsSharedKeys: R7 on the delete paths. Bytes at a key are
// removed only when no other row (of any type) records or stages the
// key: a record deleted while another names its key (content-addressed
// types share keys) leaves the bytes; the last one removes them. The
// deleted event's key counts like the row's own.
func TestDeleteKeepsSharedKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _ := newStore(t, regstore.Options{})
	syncedAt(t, s, "lfs", 1, "lfs/aa/X")
	syncedAt(t, s, "lfs", 2, "lfs/aa/X")
	syncedAt(t, s, "other", 7, "lfs/aa/X") // another type, same storage

	var r removals
	_, err := s.Delete(ctx, "lfs", 1, "lfs/aa/X", r.remove)
	require.NoError(t, err)
	require.Empty(t, r.got(), "delete of 1 while 2 and other/7 record the key")

	// A staged key is a reference too.
	mustMarkPending(t, s, "lfs", 3)
	c := claimOne(t, s, "w", "lfs")
	_, err = s.StageKeys(ctx, "w", []regstore.Staging{{Claim: c, Key: "lfs/bb/Y"}})
	require.NoError(t, err)
	_, err = s.Delete(ctx, "lfs", 9, "lfs/bb/Y", r.remove) // no row, the event's key only
	require.NoError(t, err)
	require.Empty(t, r.got(), "a deleted event's key that row 3 stages")

	_, err = s.Delete(ctx, "lfs", 2, "", r.remove)
	require.NoError(t, err)
	require.Empty(t, r.got(), "other/7 still records the key")
	_, err = s.Delete(ctx, "other", 7, "", r.remove)
	require.NoError(t, err)
	require.Equal(t, []string{"lfs/aa/X"}, r.got(), "the last row naming the key")

	// DeleteIfClaim (record gone on the primary) follows the same rule.
	syncedAt(t, s, "lfs", 4, "lfs/cc/Z")
	mustMarkPending(t, s, "lfs", 4, 5)
	var c4, c5 regstore.Claim
	for _, c := range mustClaim(t, s, "w", time.Minute, regstore.TypeLimit{Replicable: "lfs", Limit: 2}) {
		if c.ModelID == 4 {
			c4 = c
		} else {
			c5 = c
		}
	}
	_, err = s.StageKeys(ctx, "w", []regstore.Staging{{Claim: c5, Key: "lfs/cc/Z"}})
	require.NoError(t, err)
	r = removals{}
	ok, err := s.DeleteIfClaim(ctx, "w", c4, r.remove)
	require.NoError(t, err)
	require.True(t, ok)
	require.Empty(t, r.got(), "row 5 stages the key row 4 recorded")
}

// TestSettleReleasesKeysByReference: the keys a row stops naming when it
// settles at a new key (its previous blob key, its staged key) are removed
// only when no other row names them, also within one batch: a swap of two
// rows' keys in one batch keeps both; two rows leaving one key in one
// batch remove it once.
func TestSettleReleasesKeysByReference(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _ := newStore(t, regstore.Options{})
	syncedAt(t, s, "a", 1, "X")
	syncedAt(t, s, "a", 2, "Y")
	syncedAt(t, s, "a", 3, "W")
	syncedAt(t, s, "a", 4, "W")
	syncedAt(t, s, "b", 5, "V")
	mustMarkPending(t, s, "a", 1, 2, 3, 4)
	claims := mustClaim(t, s, "w", time.Minute, regstore.TypeLimit{Replicable: "a", Limit: 4})
	require.Len(t, claims, 4)
	newKey := map[int64]string{1: "Y", 2: "X", 3: "V", 4: "U"} // 1 and 2 swap; 3 and 4 leave W
	var stagings []regstore.Staging
	for _, c := range claims {
		stagings = append(stagings, regstore.Staging{Claim: c, Key: newKey[c.ModelID]})
	}
	_, err := s.StageKeys(ctx, "w", stagings)
	require.NoError(t, err)
	var r removals
	var items []regstore.SettleItem
	for _, c := range claims {
		c.StagedKey = newKey[c.ModelID]
		items = append(items, regstore.SettleItem{Claim: c, Result: regstore.SyncedResult{BlobKey: newKey[c.ModelID]}, Remove: r.remove})
	}
	for i, o := range s.SettleSyncedBatch(ctx, "w", items) {
		require.NoError(t, o.Err, "item %d", i)
		require.True(t, o.Settled, "item %d", i)
	}
	require.Equal(t, []string{"W"}, r.got(), "W is left by 3 and 4; X and Y change hands; V is b/5's")

	// A failing removal keeps the releasing row started, naming its old
	// key, for a retry.
	mustMarkPending(t, s, "a", 4)
	c := claimOne(t, s, "w", "a")
	out := s.SettleSyncedBatch(ctx, "w", []regstore.SettleItem{{Claim: c, Result: regstore.SyncedResult{BlobKey: "T"},
		Remove: func(context.Context, string) error { return errors.New("EIO") }}})
	require.ErrorContains(t, out[0].Err, "EIO")
	row := mustGet(t, s, "a", 4)
	require.Equal(t, registry.StateStarted, row.State)
	require.Equal(t, "U", row.BlobKey)
}

// TestKeyRemovalAndStagingAreAtomic: R7's check and removal are atomic
// against a sync that starts naming the key. A removal under way (its
// remove still running) holds the key: a StageKeys of that key waits for
// it to commit. And a staging under way (not yet committed) holds the key:
// a removal waits, then sees the reference and keeps the bytes.
func TestKeyRemovalAndStagingAreAtomic(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, db, _ := newStore(t, regstore.Options{})
	syncedAt(t, s, "a", 1, "K")
	mustMarkPending(t, s, "a", 2)
	c2 := claimOne(t, s, "w", "a")

	// A removal of K under way: row 1 deleted, remove held.
	inRemove, release := make(chan struct{}), make(chan struct{})
	deleted := make(chan error, 1)
	go func() {
		_, err := s.Delete(ctx, "a", 1, "", func(context.Context, string) error {
			close(inRemove)
			<-release
			return nil
		})
		deleted <- err
	}()
	<-inRemove
	staged := make(chan error, 1)
	go func() {
		_, err := s.StageKeys(ctx, "w", []regstore.Staging{{Claim: c2, Key: "K"}})
		staged <- err
	}()
	waitAdvisoryWaiter(t, db)
	select {
	case err := <-staged:
		t.Fatalf("StageKeys of a key being removed returned (%v) before the removal committed", err)
	default:
	}
	close(release)
	require.NoError(t, <-deleted)
	require.NoError(t, <-staged)

	// A staging under way (row 3 names K, uncommitted, holding K's lock as
	// StageKeys does) makes a removal of K wait and then keep the bytes.
	syncedAt(t, s, "a", 4, "K2")
	tx, err := db.BeginTxx(ctx, nil)
	require.NoError(t, err)
	defer tx.Rollback()
	_, err = tx.ExecContext(ctx, `INSERT INTO geo_registry (replicable, model_id, created_at, updated_at, staged_key) VALUES ('a', 3, now(), now(), 'K2')`)
	require.NoError(t, err)
	_, err = tx.ExecContext(ctx, regstore.LockKeysSQL, `{K2}`)
	require.NoError(t, err)
	var r removals
	done := make(chan error, 1)
	go func() {
		_, err := s.Delete(ctx, "a", 4, "", r.remove)
		done <- err
	}()
	waitAdvisoryWaiter(t, db)
	require.NoError(t, tx.Commit())
	require.NoError(t, <-done)
	require.Empty(t, r.got(), "row 3's staged reference, committed while the removal waited")
}

// waitAdvisoryWaiter waits until some backend of db's database waits for
// an advisory lock.
func waitAdvisoryWaiter(t *testing.T, db interface {
	GetContext(ctx context.Context, dest any, q string, args ...any) error
}) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var n int
		err := db.GetContext(context.Background(), &n, `SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND NOT l.granted AND a.datname = current_database()`)
		if err == nil && n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no backend waiting for a key lock within a minute (%d, %v)", n, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
