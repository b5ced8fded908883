package replicator_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/internal/testtype"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/replicator/transfer"
	"github.com/geoframework/geo/strategy"
)

// runPrimary starts a Primary's background work (verification, pruning)
// over the fixture's primary database and storage, with a fast poll;
// mod adjusts the configuration. set nil means the world's strategies.
func (f *fixture) runPrimary(t *testing.T, set *replicator.Set, mod func(*replicator.PrimaryConfig)) *replicator.Primary {
	t.Helper()
	if set == nil {
		set = f.Strategies
	}
	cfg := replicator.PrimaryConfig{
		Strategies: set, DB: f.PrimaryDB, Storage: f.PrimaryStorage,
		Secrets: transfer.NewStaticSecrets(f.Credentials), Logger: f.Logger.Named("primary-verify"),
		VerifyPollInterval: 50 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := replicator.NewPrimary(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done, "Primary.Run")
	})
	return p
}

// waitChecksum waits until record id's checksum row satisfies cond.
func waitChecksum(t *testing.T, cs *registry.Checksums, name string, id int64, what string, cond func(r registry.ChecksumRow) bool) registry.ChecksumRow {
	t.Helper()
	var row registry.ChecksumRow
	geotest.WaitFor(t, stall, what, func() (bool, string) {
		var err error
		row, err = cs.Get(context.Background(), name, id)
		if err != nil {
			return false, err.Error()
		}
		return cond(row), fmt.Sprintf("%+v", row)
	})
	return row
}

func succeeded(r registry.ChecksumRow) bool { return r.State == registry.VerificationSucceeded }

// waitRow waits until record id's registry row satisfies cond.
// waitEventsConsumed waits until sec's event consumer has polled twice
// more with nothing left after its cursor: every event published so far
// has been handled. Records created before a secondary starts reach it
// twice, by the start-up consistency pass and by their created events;
// an event handled after the pass's row was synced makes the record
// pending and syncs it again (correct, R1). Tests that then change the
// local copy wait for this first, so that late sync cannot interleave.
func waitEventsConsumed(t *testing.T, sec *replicator.Secondary) {
	t.Helper()
	polls := sec.Consumer().Stats().Polls
	geotest.WaitFor(t, stall, "events consumed", func() (bool, string) {
		st := sec.Consumer().Stats()
		return st.Polls >= polls+2 && st.LagEvents == 0, fmt.Sprintf("%d polls, %d events after the cursor", st.Polls-polls, st.LagEvents)
	})
}

func waitRow(t *testing.T, store *registry.Store, id int64, what string, cond func(r registry.Row) bool) registry.Row {
	t.Helper()
	var row registry.Row
	geotest.WaitFor(t, stall, what, func() (bool, string) {
		var err error
		row, err = store.Get(context.Background(), "item", id)
		if err != nil {
			return false, err.Error()
		}
		return cond(row), fmt.Sprintf("state %s verification %s mismatch %v retry %d/%d failure %q/%q",
			row.State, row.VerificationState, row.ChecksumMismatch, row.RetryCount, row.VerificationRetryCount,
			row.LastSyncFailure, row.VerificationFailure)
	})
	return row
}

func verifiedRow(r registry.Row) bool {
	return r.State == registry.StateSynced && r.VerificationState == registry.VerificationSucceeded
}

// sha256sum returns the checksum of the file at path as the sha256sum tool
// computes it, or, without the tool, by hashing the file directly.
func sha256sum(t *testing.T, path string) string {
	t.Helper()
	if tool, err := exec.LookPath("sha256sum"); err == nil {
		out, err := exec.Command(tool, path).Output()
		require.NoError(t, err)
		return strings.Fields(string(out))[0]
	}
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// recObserver counts verification results and skipped downloads.
type recObserver struct {
	mu                   sync.Mutex
	verifyOK, verifyFail int
	skipped              int
}

func (o *recObserver) SyncDone(_ string, out replicator.SyncOutcome, _ int64, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if out == replicator.ResultSkipped {
		o.skipped++
	}
}

func (o *recObserver) VerifyDone(_ string, ok bool, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if ok {
		o.verifyOK++
	} else {
		o.verifyFail++
	}
}

func (o *recObserver) EventsSkipped(string, int) {}
func (o *recObserver) LocalMissing(string, int)  {}

func (o *recObserver) counts() (ok, fail, skipped int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.verifyOK, o.verifyFail, o.skipped
}

// flipBit flips one bit of the file in place, as rot would: one byte
// rewritten, never a truncated file that a concurrent reader (a
// re-verification) could see empty. It returns the new contents.
func flipBit(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	b[len(b)/2] ^= 0x01
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(b[len(b)/2:len(b)/2+1], int64(len(b)/2))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	return b
}

func (f *fixture) secondaryPath(t *testing.T, id int64) string {
	t.Helper()
	key, err := f.items.BlobKey(context.Background(), id)
	require.NoError(t, err)
	return filepath.Join(f.SecondaryRoot, filepath.FromSlash(key))
}

func (f *fixture) primaryPath(t *testing.T, id int64) string {
	t.Helper()
	key, err := f.items.BlobKey(context.Background(), id)
	require.NoError(t, err)
	return filepath.Join(f.PrimaryRoot, filepath.FromSlash(key))
}

func TestPrimaryChecksumsMatchSha256sum(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true) // runs its own primary engine
	ctx := context.Background()
	var ids []int64
	for i := 0; i < 3; i++ { // with events
		id, err := f.app.Create(ctx, 0, payload(i, 1000+i*777))
		require.NoError(t, err)
		ids = append(ids, id)
	}
	pre, err := f.app.BulkCreate(ctx, 5, 0, func(i int) []byte { return payload(10+i, 3<<20/(i+1)) }) // backfill only
	require.NoError(t, err)
	ids = append(ids, pre...)
	empty, err := f.app.Create(ctx, 0, nil)
	require.NoError(t, err)
	ids = append(ids, empty)
	att, err := f.other.create(ctx, f.PrimaryStorage, payload(99, 4321))
	require.NoError(t, err)
	lost, err := f.app.Create(ctx, 0, payload(50, 100))
	require.NoError(t, err)
	require.NoError(t, os.Remove(f.primaryPath(t, lost)))
	silentlyGone, err := f.app.Create(ctx, 0, payload(51, 100))
	require.NoError(t, err)

	clock := &fakeClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	p := f.runPrimary(t, nil, func(c *replicator.PrimaryConfig) {
		c.Now = clock.Now
		c.Retry = strategy.Backoff{Base: time.Hour, Jitter: -1}
	})
	cs := p.Checksums()
	for _, id := range ids {
		row := waitChecksum(t, cs, "item", id, "checksum stored", succeeded)
		path := f.primaryPath(t, id)
		require.Equal(t, sha256sum(t, path), row.Checksum, "item %d: checksum vs sha256sum", id)
		st, err := os.Stat(path)
		require.NoError(t, err)
		require.Equal(t, st.Size(), row.Size, "item %d: size", id)
	}
	row := waitChecksum(t, cs, "attachment", att, "attachment checksum stored", succeeded)
	require.Equal(t, sha(payload(99, 4321)), row.Checksum)

	// A missing file is a failure with a clear reason, retried with a
	// backoff that grows across consecutive failures (GitLab #607991).
	for n, want := range []time.Duration{time.Hour, 2 * time.Hour, 4 * time.Hour} {
		row = waitChecksum(t, cs, "item", lost, fmt.Sprintf("missing file: failure %d", n+1), func(r registry.ChecksumRow) bool {
			return r.State == registry.VerificationFailed && r.RetryCount == n+1
		})
		require.Contains(t, row.Failure, "file missing on the primary")
		require.Equal(t, want, row.RetryAt.Sub(clock.Now()), "backoff after failure %d", n+1)
		clock.Add(want + time.Second)
	}

	// Deleted with an event: the row goes at once; without one: the next
	// backfill (due: the clock moved hours) removes it.
	// The publisher removes the row in the delete's transaction; a backfill
	// pass that listed the record just before may insert it again (seen in
	// CI), and the verifier then finds the record gone and removes it, all
	// without the clock moving.
	require.NoError(t, f.app.Delete(ctx, ids[0], true))
	geotest.WaitFor(t, stall, "deleted event removes the checksum row", func() (bool, string) {
		_, err := cs.Get(ctx, "item", ids[0])
		return errors.Is(err, registry.ErrNotFound), fmt.Sprint(err)
	})
	require.NoError(t, f.app.Delete(ctx, silentlyGone, false))
	// The clock moved hours above, so a backfill may already have run
	// before this delete (seen in CI under load): make the next one due.
	clock.Add(15*time.Minute + time.Second) // the default VerifyBackfillInterval
	geotest.WaitFor(t, stall, "backfill removes the row of a record gone without an event", func() (bool, string) {
		_, err := cs.Get(ctx, "item", silentlyGone)
		return errors.Is(err, registry.ErrNotFound), fmt.Sprint(err)
	})
}

// gatedOpener is the items type with an Opener that holds the first open of
// one record after opening its current bytes, until released.
type gatedOpener struct {
	*testtype.Type
	storage *blob.Bucket
	hold    int64
	arrived chan struct{}
	release chan struct{}
	once    sync.Once
}

func (g *gatedOpener) OpenBlob(ctx context.Context, id int64) (io.ReadSeekCloser, int64, error) {
	key, err := g.BlobKey(ctx, id)
	if err != nil {
		return nil, 0, err
	}
	r, err := g.storage.Open(ctx, key)
	if errors.Is(err, blob.ErrNotExist) {
		return nil, 0, fmt.Errorf("%w: %s", strategy.ErrBlobMissing, key)
	}
	if err != nil {
		return nil, 0, err
	}
	if id == g.hold {
		first := false
		g.once.Do(func() { first = true })
		if first {
			close(g.arrived)
			select {
			case <-g.release:
			case <-ctx.Done():
			}
		}
	}
	return r, r.Size(), nil
}

func TestPrimaryUpdateDuringChecksumKeepsNoStaleChecksum(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true) // runs its own primary engine
	ctx := context.Background()
	oldBytes, newBytes := payload(1, 50_000), payload(2, 60_000)
	id, err := f.app.Create(ctx, 0, oldBytes)
	require.NoError(t, err)
	g := &gatedOpener{Type: &testtype.Type{TypeName: "item", Table: "items", DB: f.PrimaryDB},
		storage: f.PrimaryStorage, hold: id, arrived: make(chan struct{}), release: make(chan struct{})}
	set := replicator.NewSet()
	require.NoError(t, set.Register(g))
	p := f.runPrimary(t, set, nil)
	waitClosed(t, g.arrived, "checksum of the old bytes in progress")
	require.NoError(t, f.app.Update(ctx, id, newBytes))
	row, err := p.Checksums().Get(ctx, "item", id)
	require.NoError(t, err)
	require.Equal(t, registry.VerificationPending, row.State, "an update during checksumming makes the row pending")
	close(g.release)
	row = waitChecksum(t, p.Checksums(), "item", id, "checksum of the new bytes stored", succeeded)
	require.Equal(t, sha(newBytes), row.Checksum, "no stale checksum: got the old bytes' = %v", row.Checksum == sha(oldBytes))
}

func TestSecondaryVerificationRepairsCorruptionAndMissingFiles(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true) // runs its own primary engine
	ctx := context.Background()
	p := f.runPrimary(t, nil, nil)
	aBytes, bBytes := payload(1, 3000), payload(2, 5000)
	a, err := f.app.Create(ctx, 0, aBytes)
	require.NoError(t, err)
	b, err := f.app.Create(ctx, 0, bBytes)
	require.NoError(t, err)
	waitChecksum(t, p.Checksums(), "item", a, "primary checksum a", succeeded)
	waitChecksum(t, p.Checksums(), "item", b, "primary checksum b", succeeded)

	obs := &recObserver{}
	sec := f.secondaryItems()
	cfg := f.SecondaryConfig(sec)
	cfg.Observer = obs
	// A failed row waits an hour, until the test makes it due (retryNow)
	// after reading it: with a retry due in 300 ms, a loaded machine's
	// look at the failed row came after the resync had claimed it.
	cfg.Retry = strategy.Backoff{Base: time.Hour, Jitter: -1}
	r := f.Start(cfg)
	retryNow := func(id int64) {
		t.Helper()
		_, err := f.TrackingDB.ExecContext(ctx, `UPDATE geo_registry SET retry_at = $1 WHERE replicable = 'item' AND model_id = $2 AND state = 3`,
			time.Now().Add(-time.Second), id)
		require.NoError(t, err)
		r.Wake()
	}
	waitEventsConsumed(t, r.Secondary)
	waitRow(t, r.Store(), a, "a synced and verified", verifiedRow)
	waitRow(t, r.Store(), b, "b synced and verified", verifiedRow)

	// A bit flipped at rest: an operator's reverify finds it long before
	// the 7-day re-verification; the mismatch is recorded with both
	// checksums, and the row is re-downloaded.
	bad := flipBit(t, f.secondaryPath(t, a))
	before := f.Transfers.Count("item", a)
	n, err := r.Reverify(ctx, "item", []int64{a})
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	row := waitRow(t, r.Store(), a, "mismatch recorded", func(r registry.Row) bool { return r.ChecksumMismatch })
	require.Equal(t, registry.StateFailed, row.State, "a mismatch sends the row to resync")
	require.Equal(t, sha(bad), row.VerificationChecksum)
	require.Equal(t, sha(aBytes), row.VerificationChecksumMismatched)
	require.Contains(t, row.VerificationFailure, "checksum mismatch")
	require.Contains(t, row.LastSyncFailure, "verification failed")
	require.Equal(t, 1, row.VerificationRetryCount)
	retryNow(a)
	waitRow(t, r.Store(), a, "a repaired", func(r registry.Row) bool { return verifiedRow(r) && !r.ChecksumMismatch })
	got, err := os.ReadFile(f.secondaryPath(t, a))
	require.NoError(t, err)
	require.Equal(t, sha(aBytes), sha(got), "repaired bytes")
	require.Greater(t, f.Transfers.Count("item", a), before, "repaired by a download")

	// A file deleted on the secondary: detected and downloaded again.
	require.NoError(t, os.Remove(f.secondaryPath(t, b)))
	before = f.Transfers.Count("item", b)
	n, err = r.ReverifyAll(ctx, "item", false)
	require.NoError(t, err)
	require.Equal(t, int64(2), n)
	row = waitRow(t, r.Store(), b, "b's missing file recorded", func(r registry.Row) bool { return r.State == registry.StateFailed })
	require.Contains(t, row.VerificationFailure, "missing on the secondary")
	retryNow(b)
	geotest.WaitFor(t, stall, "b re-downloaded", func() (bool, string) {
		got, err := os.ReadFile(f.secondaryPath(t, b))
		return err == nil && bytes.Equal(got, bBytes) && f.Transfers.Count("item", b) > before, fmt.Sprint(err)
	})
	row = waitRow(t, r.Store(), b, "b verified", verifiedRow)
	_, fails, _ := obs.counts()
	require.Equal(t, 2, fails, "verification failures reported to the Observer")
	_, err = r.Reverify(ctx, "nope", []int64{1})
	require.ErrorIs(t, err, strategy.ErrUnknownReplicable)
}

func TestPrimaryCorruptedAfterChecksumDoesNotOverwriteGoodCopies(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true) // runs its own primary engine
	ctx := context.Background()
	p := f.runPrimary(t, nil, func(c *replicator.PrimaryConfig) {
		c.ReverifyInterval = 300 * time.Millisecond
		c.Retry = strategy.Backoff{Base: time.Hour}
	})
	good := payload(1, 8000)
	id, err := f.app.Create(ctx, 0, good)
	require.NoError(t, err)
	waitChecksum(t, p.Checksums(), "item", id, "primary checksum", succeeded)
	sec := f.secondaryItems()
	r := f.Start(f.SecondaryConfig(sec))
	waitRow(t, r.Store(), id, "synced and verified", verifiedRow)

	// The primary's file rots (no application change, no event).
	bad := flipBit(t, f.primaryPath(t, id))
	row := waitChecksum(t, p.Checksums(), "item", id, "primary re-verification reports the corruption", func(r registry.ChecksumRow) bool {
		return r.State == registry.VerificationFailed
	})
	require.Equal(t, fmt.Sprintf("checksum changed on the primary: stored %s, now %s", sha(good), sha(bad)), row.Failure)
	require.Equal(t, sha(good), row.Checksum, "the good checksum is kept")

	// A due retry finds the good copy in place, matching the good
	// checksum: it keeps it without a transfer (downloads are skipped
	// whenever the local copy matches, on any attempt).
	before := f.Transfers.Count("item", id)
	_, err = f.TrackingDB.ExecContext(ctx, `UPDATE geo_registry SET state = 3, retry_count = 1, retry_at = $1 WHERE replicable = 'item' AND model_id = $2`,
		time.Now().Add(-time.Second), id)
	require.NoError(t, err)
	r.Wake()
	waitRow(t, r.Store(), id, "retry kept the local good copy", verifiedRow)
	require.Equal(t, before, f.Transfers.Count("item", id), "no transfer for a matching local copy")
	got, err := os.ReadFile(f.secondaryPath(t, id))
	require.NoError(t, err)
	require.Equal(t, sha(good), sha(got), "the secondary's good copy is kept")

	// Without a local copy the download gets the bad bytes, which do not
	// match the good checksum: the sync fails and nothing is stored.
	require.NoError(t, os.Remove(f.secondaryPath(t, id)))
	_, err = r.Store().Resync(ctx, "item", []int64{id})
	require.NoError(t, err)
	r.Wake()
	srow := waitRow(t, r.Store(), id, "download of the corrupted bytes fails", func(r registry.Row) bool {
		return r.State == registry.StateFailed && r.RetryCount >= 1
	})
	require.Contains(t, srow.LastSyncFailure, "checksum mismatch")
	require.Greater(t, f.Transfers.Count("item", id), before)
	_, err = os.Stat(f.secondaryPath(t, id))
	require.ErrorIs(t, err, os.ErrNotExist, "the corrupted bytes are never stored")
}

func TestSkipDownloadWhenPresentAndMatching(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true) // runs its own primary engine
	ctx := context.Background()
	ids, err := f.app.BulkCreate(ctx, 20, 0, func(i int) []byte { return payload(i, 2000+i) })
	require.NoError(t, err)
	p := f.runPrimary(t, nil, nil) // its first backfill finds them
	for _, id := range ids {
		waitChecksum(t, p.Checksums(), "item", id, "primary checksum", succeeded)
	}
	// A restored secondary: every file already there, one of them stale.
	for i, id := range ids {
		b, err := os.ReadFile(f.primaryPath(t, id))
		require.NoError(t, err)
		if i == 0 {
			b = []byte("stale")
		}
		key, err := f.items.BlobKey(ctx, id)
		require.NoError(t, err)
		w, err := f.SecondaryStorage.Create(ctx, key, nil)
		require.NoError(t, err)
		_, err = w.Write(b)
		require.NoError(t, err)
		require.NoError(t, w.Commit(ctx))
	}
	obs := &recObserver{}
	sec := f.secondaryItems()
	cfg := f.SecondaryConfig(sec)
	cfg.Observer = obs
	r := f.Start(cfg)
	f.waitConverged(t, stall, sec)
	for _, id := range ids {
		waitRow(t, r.Store(), id, "synced and verified", verifiedRow)
	}
	require.Equal(t, 1, f.Transfers.Count("item", -1), "transfers: only the stale copy is downloaded")
	require.Equal(t, 1, f.Transfers.Count("item", ids[0]))
	_, _, skipped := obs.counts()
	require.Equal(t, 19, skipped, "skipped downloads reported")
}

func TestVerificationBackoffGrowsAcrossResyncs(t *testing.T) { // GitLab #607991
	t.Parallel()
	f := newFixture(t, true) // runs its own primary engine
	ctx := context.Background()
	p := f.runPrimary(t, nil, nil)
	good := payload(3, 4000)
	id, err := f.app.Create(ctx, 0, good)
	require.NoError(t, err)
	waitChecksum(t, p.Checksums(), "item", id, "primary checksum", succeeded)

	clock := &fakeClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	sec := f.secondaryItems()
	cfg := f.SecondaryConfig(sec)
	cfg.Now = clock.Now
	cfg.Retry = strategy.Backoff{Base: time.Hour, Max: 8 * time.Hour, Jitter: -1}
	cfg.ReverifyInterval = 24 * time.Hour
	r := f.Start(cfg)
	waitRow(t, r.Store(), id, "synced and verified", verifiedRow)
	path := f.secondaryPath(t, id)
	for n := 1; n <= 3; n++ {
		flipBit(t, path)
		clock.Add(25 * time.Hour) // re-verification due
		row := waitRow(t, r.Store(), id, fmt.Sprintf("verification failure %d", n), func(r registry.Row) bool {
			return r.State == registry.StateFailed && r.VerificationRetryCount == n
		})
		want := time.Hour << (n - 1)
		require.True(t, row.ChecksumMismatch)
		require.Equal(t, want, row.RetryAt.Sub(clock.Now()), "resync backoff after verification failure %d", n)
		require.Equal(t, want, row.VerificationRetryAt.Sub(clock.Now()), "verification backoff after failure %d", n)
		clock.Add(want + time.Second) // the resync is due
		r.Wake()
		row = waitRow(t, r.Store(), id, fmt.Sprintf("resync %d", n), verifiedRow)
		require.Equal(t, n, row.VerificationRetryCount, "a resync keeps verification_retry_count")
		got, err := os.ReadFile(path)
		require.NoError(t, err)
		require.Equal(t, sha(good), sha(got))
	}
	clock.Add(25 * time.Hour)
	waitRow(t, r.Store(), id, "a verification success resets the count", func(r registry.Row) bool {
		return verifiedRow(r) && r.VerificationRetryCount == 0
	})
}
