package replicator_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/blob/dirblob"
	"github.com/geoframework/geo/blob/driver"
	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/strategy"
)

// The engine-level tests of R7 (shared keys), with the content-addressed
// mode of the test type: items with equal bytes share one key, and a key
// comes back with its bytes. They do not rest on one adopter's example.

// newCASFixture is a fixture whose items are content-addressed.
func newCASFixture(t *testing.T) *fixture {
	t.Helper()
	f := newFixture(t)
	f.app.ContentAddressed = true
	return f
}

// casConfig is a secondary configuration for the shared-key tests: the
// existence scan is left at an hour so that a lost file shows as a loss
// instead of being repaired behind the test's back.
func (f *fixture) casConfig(sec strategy.BlobStrategy) replicator.SecondaryConfig {
	cfg := f.SecondaryConfig(sec)
	cfg.ExistenceScanInterval = time.Hour
	return cfg
}

// waitHolds waits until item id is synced and the secondary holds want at
// its key; a synced row without the bytes fails the test at once (a lost
// file), unless a loss is expected to be repaired.
func (f *fixture) waitHolds(t *testing.T, store *registry.Store, id int64, want []byte) {
	t.Helper()
	geotest.WaitFor(t, stall, fmt.Sprintf("item %d synced with its bytes", id), func() (bool, string) {
		row, err := store.Get(context.Background(), "item", id)
		if err != nil {
			return false, err.Error()
		}
		if row.State != registry.StateSynced {
			return false, "state " + row.State.String()
		}
		got, err := os.ReadFile(filepath.Join(f.SecondaryRoot, filepath.FromSlash(row.BlobKey)))
		if errors.Is(err, os.ErrNotExist) {
			t.Fatalf("item %d: got synced at %s with no file, want its bytes (R7: a shared key's bytes were removed)", id, row.BlobKey)
		}
		if err != nil || !bytes.Equal(got, want) {
			return false, fmt.Sprintf("bytes at %s: %d bytes, %v", row.BlobKey, len(got), err)
		}
		return true, ""
	})
}

// TestSharedKeySwapLosesNothing is the adopter's report of issue 19, 100
// times: item A holds X and is synced; then A is updated to Y and B is
// created with X. A's sync leaves X's key, which B now names: the bytes
// must stay for B. Before R7, A's settle removed "A's old copy", which was
// B's file (6 rounds in 7 lost it).
func TestSharedKeySwapLosesNothing(t *testing.T) {
	t.Parallel()
	f := newCASFixture(t)
	ctx := context.Background()
	sec := f.secondaryItems()
	r := f.Start(f.casConfig(sec))
	for round := range 100 {
		x, y := payload(2*round, 700), payload(2*round+1, 900)
		a, err := f.app.Create(ctx, 0, x)
		require.NoError(t, err)
		f.waitHolds(t, r.Store(), a, x)
		require.NoError(t, f.app.Update(ctx, a, y))
		b, err := f.app.Create(ctx, 0, x)
		require.NoError(t, err)
		f.waitHolds(t, r.Store(), a, y)
		f.waitHolds(t, r.Store(), b, x)
	}
	f.waitConverged(t, stall, sec)
}

// TestSharedKeyRemovalPaths: every way a row stops naming a key keeps the
// bytes while another row names it, and removes them with the last one:
// a deleted event, an orphan (a delete whose event was lost), a record
// leaving the scope, and an update to a new key.
func TestSharedKeyRemovalPaths(t *testing.T) {
	t.Parallel()
	f := newCASFixture(t)
	ctx := context.Background()
	shared := payload(1, 1000)
	// Region 1 is the secondary's scope.
	ids := make([]int64, 5)
	for i := range ids {
		id, err := f.app.Create(ctx, 1, shared)
		require.NoError(t, err)
		ids[i] = id
	}
	sec := f.secondaryItems(1)
	cfg := f.casConfig(sec)
	cfg.ConsistencyInterval = time.Hour
	r := f.Start(cfg)
	for _, id := range ids {
		f.waitHolds(t, r.Store(), id, shared)
	}
	key, err := f.items.BlobKey(ctx, ids[0])
	require.NoError(t, err)
	gone := func(id int64) {
		t.Helper()
		geotest.WaitFor(t, stall, fmt.Sprintf("item %d's row removed", id), func() (bool, string) {
			_, err := r.Store().Get(ctx, "item", id)
			return errors.Is(err, registry.ErrNotFound), fmt.Sprint(err)
		})
	}
	stillThere := func(what string, keep int64) {
		t.Helper()
		f.waitHolds(t, r.Store(), keep, shared)
		_, err := f.SecondaryStorage.Stat(ctx, key)
		require.NoError(t, err, "%s: the shared bytes", what)
	}

	require.NoError(t, f.app.Delete(ctx, ids[0], true)) // deleted event
	gone(ids[0])
	stillThere("after a deleted event", ids[1])

	require.NoError(t, f.app.Delete(ctx, ids[1], false)) // lost event: an orphan
	r.TriggerConsistency()
	gone(ids[1])
	stillThere("after an orphan's removal", ids[2])

	require.NoError(t, f.app.SetRegion(ctx, ids[2], 2)) // leaves the scope
	r.TriggerConsistency()
	gone(ids[2])
	stillThere("after a record left the scope", ids[3])

	other := payload(2, 1000)
	require.NoError(t, f.app.Update(ctx, ids[3], other)) // moves to another key
	f.waitHolds(t, r.Store(), ids[3], other)
	stillThere("after an update to another key", ids[4])

	require.NoError(t, f.app.Delete(ctx, ids[4], true)) // the last one
	gone(ids[4])
	geotest.WaitFor(t, stall, "the shared bytes removed with the last row naming them", func() (bool, string) {
		_, err := f.SecondaryStorage.Stat(ctx, key)
		return errors.Is(err, blob.ErrNotExist), fmt.Sprint(err)
	})
	f.waitConverged(t, stall, sec)
}

// failFor answers 503 to the transfers of one record while on.
type failFor struct {
	next http.Handler
	path string
	mu   sync.Mutex
	on   bool
}

func (h *failFor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	on := h.on
	h.mu.Unlock()
	if on && r.URL.Path == h.path {
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
		return
	}
	h.next.ServeHTTP(w, r)
}

// TestSharedKeySkipsDownloadOnAnyAttempt: a sync whose key already holds
// bytes matching the primary's checksum neither downloads nor rewrites
// them, on a retry as on a first attempt. B's first attempt fails (the
// primary refuses its transfer); A, with the same bytes, syncs meanwhile;
// B's retry then finds the bytes at its key and transfers nothing.
func TestSharedKeySkipsDownloadOnAnyAttempt(t *testing.T) {
	t.Parallel()
	f := newCASFixture(t)
	ctx := context.Background()
	same := payload(3, 5000)
	b, err := f.app.Create(ctx, 0, same)
	require.NoError(t, err)
	sums, err := registry.NewChecksums(f.PrimaryDB)
	require.NoError(t, err)
	geotest.WaitFor(t, stall, "the primary's checksum of b", func() (bool, string) {
		got, err := sums.Checksum(ctx, "item", b)
		return err == nil && got == sha(same), fmt.Sprint(got, err)
	})
	ff := &failFor{next: f.Primary.Handler(), path: fmt.Sprintf("/geo/v1/blobs/item/%d", b), on: true}
	srv := httptest.NewServer(ff)
	t.Cleanup(srv.Close)
	sec := f.secondaryItems()
	cfg := f.casConfig(sec)
	cfg.PrimaryURL = srv.URL
	cfg.Retry = strategy.Backoff{Base: time.Hour} // retried only when the test says
	r := f.Start(cfg)
	r.TriggerConsistency()
	waitRow(t, r.Store(), b, "b's first attempt fails", func(row registry.Row) bool {
		return row.State == registry.StateFailed && row.RetryCount == 1
	})
	a, err := f.app.Create(ctx, 0, same)
	require.NoError(t, err)
	f.waitHolds(t, r.Store(), a, same)
	require.Equal(t, 0, f.Transfers.Count("item", b))

	_, err = f.TrackingDB.ExecContext(ctx, `UPDATE geo_registry SET retry_at = $1 WHERE replicable = 'item' AND model_id = $2`,
		time.Now().Add(-time.Second), b)
	require.NoError(t, err)
	r.Wake()
	f.waitHolds(t, r.Store(), b, same)
	require.Equal(t, 0, f.Transfers.Count("item", b), "b's retry found its bytes at its key: no transfer")
	row, err := r.Store().Get(ctx, "item", b)
	require.NoError(t, err)
	require.Equal(t, registry.VerificationSucceeded, row.VerificationState)
}

// vanishing is the secondary's storage backend, where the bytes a sync
// found at a key disappear right after it looked (another record's
// removal, racing the sync's staging of the key), once.
type vanishing struct {
	*dirblob.Dir
	mu  sync.Mutex
	key string
}

func (v *vanishing) NewRangeReader(ctx context.Context, key string, offset, length int64) (driver.Reader, error) {
	rd, err := v.Dir.NewRangeReader(ctx, key, offset, length)
	v.mu.Lock()
	defer v.mu.Unlock()
	if err == nil && key == v.key {
		v.key = ""
		if rerr := os.Remove(filepath.Join(v.Root(), filepath.FromSlash(key))); rerr != nil {
			rd.Close()
			return nil, rerr
		}
	}
	return rd, err
}

// TestSkippedBytesGoneAtSettleAreDownloaded: a sync that found its bytes
// present and skipped the download re-checks them when it settles. If
// they went in between (a removal that ran before this row staged the
// key), it must not settle synced without them: it downloads under the
// same claim and settles with the bytes.
func TestSkippedBytesGoneAtSettleAreDownloaded(t *testing.T) {
	t.Parallel()
	f := newCASFixture(t)
	ctx := context.Background()
	same := payload(4, 3000)
	a, err := f.app.Create(ctx, 0, same)
	require.NoError(t, err)
	sec := f.secondaryItems()
	obs := &outcomeCounter{n: map[replicator.SyncOutcome]int{}}
	cfg := f.casConfig(sec)
	cfg.Observer = obs
	r := f.Start(cfg)
	f.waitHolds(t, r.Store(), a, same)
	key, err := f.items.BlobKey(ctx, a)
	require.NoError(t, err)
	require.NoError(t, r.Stop())

	// b, with the same bytes, is created while no secondary runs, and the
	// primary checksums it: the next secondary's sync of b finds the bytes
	// at b's key matching, and sees them vanish once it has read them.
	b, err := f.app.Create(ctx, 0, same)
	require.NoError(t, err)
	sums, err := registry.NewChecksums(f.PrimaryDB)
	require.NoError(t, err)
	geotest.WaitFor(t, stall, "the primary's checksum of b", func() (bool, string) {
		got, err := sums.Checksum(ctx, "item", b)
		return err == nil && got == sha(same), fmt.Sprint(got, err)
	})
	dir, err := dirblob.New(f.SecondaryRoot)
	require.NoError(t, err)
	v := &vanishing{Dir: dir, key: key}
	storage := blob.NewBucket(v)
	t.Cleanup(func() { storage.Close() })
	cfg = f.casConfig(sec)
	cfg.Storage = storage
	cfg.Observer = obs
	r = f.Start(cfg)
	f.waitHolds(t, r.Store(), b, same)
	require.Equal(t, 1, f.Transfers.Count("item", b), "b downloaded after its skip found the bytes gone")
	v.mu.Lock()
	require.Empty(t, v.key, "the bytes vanished after the sync looked")
	v.mu.Unlock()
	f.waitHolds(t, r.Store(), a, same)
}

// TestExistenceScanRestoresRemovedFile: R7's detection. A synced file that
// no other row names is removed outside geo (an operator's rm); within
// one scan interval plus a scan the row leaves synced, says why, and the
// file comes back; the other records are not transferred again.
func TestExistenceScanRestoresRemovedFile(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ids := f.createItems(t, 20, 800)
	sec := f.secondaryItems()
	obs := &missingCounter{}
	cfg := f.SecondaryConfig(sec)
	cfg.ExistenceScanInterval = 200 * time.Millisecond
	cfg.Observer = obs
	r := f.Start(cfg)
	f.waitConverged(t, stall, sec)
	before := f.Transfers.Count("item", -1)

	victim := ids[7]
	seq := waitRow(t, r.Store(), victim, "synced", func(row registry.Row) bool { return row.State == registry.StateSynced }).Seq
	require.NoError(t, os.Remove(f.secondaryPath(t, victim)))
	waitRow(t, r.Store(), victim, "the row leaves synced", func(row registry.Row) bool {
		return row.Seq != seq
	})
	geotest.WaitFor(t, stall, "the file comes back", func() (bool, string) {
		got, err := os.ReadFile(f.secondaryPath(t, victim))
		return err == nil && bytes.Equal(got, payload(7, 800)), fmt.Sprint(err)
	})
	row := waitRow(t, r.Store(), victim, "synced again", verifiedRow)
	require.Empty(t, row.LastSyncFailure, "cleared by the successful sync")
	require.Equal(t, before+1, f.Transfers.Count("item", -1), "only the removed file is transferred again")
	require.Equal(t, 1, obs.get("item"))
	f.waitConverged(t, stall, sec)
}

// missingCounter counts LocalMissing reports per type.
type missingCounter struct {
	replicator.NopObserver
	mu sync.Mutex
	n  map[string]int
}

func (m *missingCounter) LocalMissing(replicable string, n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.n == nil {
		m.n = map[string]int{}
	}
	m.n[replicable] += n
}

func (m *missingCounter) get(replicable string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n[replicable]
}
