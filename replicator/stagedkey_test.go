package replicator_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/blob/dirblob"
	"github.com/geoframework/geo/blob/driver"
	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/strategy"
)

// failAfterPublish is a Storage whose Commit for one key makes the bytes
// visible and then fails, once: what blob.Bucket reports when the directory
// fsync after the rename fails, and what a crash between the publish and
// the settle's commit leaves behind (bytes at a final key no row records).
type failAfterPublish struct {
	*dirblob.Dir
	mu   sync.Mutex
	key  string
	done bool
	// removeFail, when set, makes the next Remove of that key fail, once;
	// removed says it did.
	removeFail string
	removed    bool
}

func (s *failAfterPublish) Delete(ctx context.Context, key string) error {
	s.mu.Lock()
	fail := key != "" && key == s.removeFail && !s.removed
	if fail {
		s.removed = true
	}
	s.mu.Unlock()
	if fail {
		return fmt.Errorf("remove %q: %w", key, errors.New("injected EIO"))
	}
	return s.Dir.Delete(ctx, key)
}

func (s *failAfterPublish) failRemoveOnce(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeFail = key
}

func (s *failAfterPublish) removeFailed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.removed
}

func (s *failAfterPublish) NewWriter(ctx context.Context, key string, opts *driver.WriterOptions) (driver.Writer, error) {
	w, err := s.Dir.NewWriter(ctx, key, opts)
	if err != nil {
		return nil, err
	}
	return &failAfterPublishWriter{Writer: w, s: s, key: key}, nil
}

type failAfterPublishWriter struct {
	driver.Writer
	s   *failAfterPublish
	key string
}

func (w *failAfterPublishWriter) Commit(ctx context.Context) error {
	if err := w.Writer.Commit(ctx); err != nil {
		return err
	}
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	if w.key == w.s.key && !w.s.done {
		w.s.done = true
		return fmt.Errorf("sync directory of %q: %w", w.key, errors.New("injected EIO"))
	}
	return nil
}

// TestPublishedButUnrecordedKeyIsRemoved is the regression test for bytes
// left forever at a key no registry row recorded (found by geochaos crash
// and disk-errors as an extra file). A sync published a record's bytes at
// key B but its settle did not commit (here the publish reports a failure
// after the rename; a crash at that moment does the same). The row kept
// its previous key, so when the record moved to key C and was synced
// again, nothing removed B. The key being published is now recorded
// (staged_key) before the bytes become visible, and removed by the next
// sync or delete.
func TestPublishedButUnrecordedKeyIsRemoved(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	id, _, storage, sec := f.failedAfterPublish(t)
	keyB := storage.key
	_, err := f.SecondaryStorage.Stat(ctx, keyB)
	require.NoError(t, err, "the failed publish left its bytes at %s", keyB)

	// The record moves to a new key; its sync must clean up B.
	require.NoError(t, f.app.Update(ctx, id, payload(2, 2000)))
	f.waitConverged(t, stall, sec)
}

// failedAfterPublish creates a record and starts a secondary whose storage
// fails, once, the commit of that record's key after publishing it, and
// waits for the record's row to be failed. Failed rows wait an hour, so
// the test's next update decides what happens.
func (f *fixture) failedAfterPublish(t *testing.T) (int64, *geotest.Running, *failAfterPublish, strategy.BlobStrategy) {
	t.Helper()
	id, err := f.app.Create(context.Background(), 0, payload(1, 1000))
	require.NoError(t, err)
	var storage *failAfterPublish
	r, sec := f.startFaulty(t, id, func(dir *dirblob.Dir, key string) driver.Bucket {
		storage = &failAfterPublish{Dir: dir, key: key}
		return storage
	}, func(cfg *replicator.SecondaryConfig) { cfg.Retry = fixedRetry(time.Hour) })
	f.waitRowState(t, r.Store(), id, registry.StateFailed)
	return id, r, storage, sec
}

type fixedRetry time.Duration

func (d fixedRetry) NextRetry(int, bool) time.Duration { return time.Duration(d) }

// waitRowState waits until item id's row is in state want.
func (f *fixture) waitRowState(t *testing.T, store *registry.Store, id int64, want registry.State) {
	t.Helper()
	geotest.WaitFor(t, stall, fmt.Sprintf("row %d %v", id, want), func() (bool, string) {
		row, err := store.Get(context.Background(), "item", id)
		return err == nil && row.State == want, fmt.Sprintf("state %v retry %d failure %q (%v)", row.State, row.RetryCount, row.LastSyncFailure, err)
	})
}

// TestStagedKeyNotForgottenWhenItsRemovalFails is the regression test for
// an extra file found by CI's geochaos disk-errors: a row named bytes
// published without settling (staged key B); the record moved to key C and
// its sync recorded C as the staged key before removing B, and that
// removal failed. B was then named nowhere, and no later sync or delete
// removed it. The sync now removes B, and clears it, before staging C.
func TestStagedKeyNotForgottenWhenItsRemovalFails(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	id, r, storage, sec := f.failedAfterPublish(t)
	keyB := storage.key

	// The record moves to key C; removing B fails once.
	storage.failRemoveOnce(keyB)
	require.NoError(t, f.app.Update(ctx, id, payload(2, 2000)))
	geotest.WaitFor(t, stall, fmt.Sprintf("the removal of %s attempted", keyB), func() (bool, string) {
		row, err := r.Store().Get(ctx, "item", id)
		return storage.removeFailed(), fmt.Sprintf("not attempted; row %v seq %d (%v)", row.State, row.Seq, err)
	})
	f.waitRowState(t, r.Store(), id, registry.StateFailed)

	// The record moves again; B must not be left behind.
	require.NoError(t, f.app.Update(ctx, id, payload(3, 3000)))
	f.waitConverged(t, stall, sec)
}

// publishWatch is a Storage that reports when a download of one key has
// its bytes fsynced (downloaded) and records, at the moment that key is
// published, the staged key its registry row has committed.
type publishWatch struct {
	*dirblob.Dir
	db         *sqlx.DB
	id         int64
	key        string
	downloaded chan struct{}
	published  chan string // the committed staged_key seen at publish
}

func (p *publishWatch) NewWriter(ctx context.Context, key string, opts *driver.WriterOptions) (driver.Writer, error) {
	w, err := p.Dir.NewWriter(ctx, key, opts)
	if err != nil || key != p.key {
		return w, err
	}
	return &publishWatchWriter{Writer: w, p: p}, nil
}

type publishWatchWriter struct {
	driver.Writer
	p *publishWatch
}

func (w *publishWatchWriter) Sync(ctx context.Context) error {
	err := w.Writer.(driver.Syncer).Sync(ctx)
	select {
	case w.p.downloaded <- struct{}{}:
	default:
	}
	return err
}

func (w *publishWatchWriter) Commit(ctx context.Context) error {
	var staged string
	err := w.p.db.GetContext(ctx, &staged,
		`SELECT coalesce(staged_key, '') FROM geo_registry WHERE replicable = 'item' AND model_id = $1`, w.p.id)
	if err != nil {
		staged = "error: " + err.Error()
	}
	select {
	case w.p.published <- staged:
	default:
	}
	return w.Writer.Commit(ctx)
}

// TestStagedKeyIsDurableBeforePublish: a key must be committed as the
// row's staged key before its bytes are published (else a crash between
// the publish and the settle's commit leaves bytes no row names). The
// claimed batch's staging runs beside the transfer; a sync may skip the
// settle's own staging only for a key that staging committed. Every
// staging statement is held on an advisory lock until the download is
// done: nothing may be published meanwhile, and the publish after the
// release must see the staged key committed. (Trusting the batch's staging
// before it commits fails here.)
func TestStagedKeyIsDurableBeforePublish(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	id, err := f.app.Create(ctx, 0, payload(1, 1000))
	require.NoError(t, err)
	key, err := f.items.BlobKey(ctx, id)
	require.NoError(t, err)
	// Hold the staging statement (and only it) before it locks any row.
	_, err = f.TrackingDB.ExecContext(ctx, `
CREATE FUNCTION test_hold_staging() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_query() LIKE '%staged_key = k.key%' THEN
    PERFORM pg_advisory_xact_lock_shared(4242);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER test_hold_staging BEFORE UPDATE ON geo_registry
  FOR EACH STATEMENT EXECUTE FUNCTION test_hold_staging();`)
	require.NoError(t, err)
	hold, err := f.TrackingDB.Conn(ctx)
	require.NoError(t, err)
	defer hold.Close()
	_, err = hold.ExecContext(ctx, `SELECT pg_advisory_lock(4242)`)
	require.NoError(t, err)
	released := false
	release := func() {
		if !released {
			released = true
			_, err := hold.ExecContext(ctx, `SELECT pg_advisory_unlock(4242)`)
			require.NoError(t, err)
		}
	}
	defer release()

	watch := &publishWatch{db: f.TrackingDB, id: id, key: key,
		downloaded: make(chan struct{}, 1), published: make(chan string, 1)}
	r, _ := f.startFaulty(t, id, func(dir *dirblob.Dir, _ string) driver.Bucket {
		watch.Dir = dir
		return watch
	}, func(*replicator.SecondaryConfig) {})
	r.TriggerConsistency()
	waitClosed(t, watch.downloaded, "the record's bytes downloaded")
	geotest.WaitFor(t, stall, "the staging statement waits on the held lock", func() (bool, string) {
		var n int
		err := f.TrackingDB.GetContext(ctx, &n, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted`)
		return err == nil && n > 0, fmt.Sprint(n, err)
	})
	// The bytes are ready and the staging is held: a settle that did not
	// wait would publish now, within milliseconds.
	select {
	case staged := <-watch.published:
		t.Fatalf("published while the staging was held (committed staged key %q)", staged)
	case <-time.After(500 * time.Millisecond):
	}
	release()
	select {
	case staged := <-watch.published:
		require.Equal(t, key, staged, "the row's committed staged key when its bytes were published")
	case <-time.After(hangGuard):
		t.Fatalf("not published within %v of the staging's release", hangGuard)
	}
	f.waitRowState(t, r.Store(), id, registry.StateSynced)
}
