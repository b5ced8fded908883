package replicator_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/blob/dirblob"
	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/strategy"
)

// gate wraps the primary's handler: it counts concurrent transfers per
// type and can hold a chosen record's transfer after its first bytes, so a
// test can change the record while the sync is in flight.
type gate struct {
	next http.Handler

	mu       sync.Mutex
	cur      map[string]int
	peak     map[string]int
	curTotal int
	peakAll  int
	hold     map[string]chan struct{} // "type/id" -> released when closed
	arrived  map[string]chan struct{}
	delay    time.Duration
}

func newGate(next http.Handler) *gate {
	return &gate{next: next, cur: map[string]int{}, peak: map[string]int{}, hold: map[string]chan struct{}{}, arrived: map[string]chan struct{}{}}
}

// Hold makes the next transfer of typ/id stop after its first write until
// the returned release is called; arrived is closed when it is held.
func (g *gate) Hold(typ string, id int64) (arrived <-chan struct{}, release func()) {
	k := fmt.Sprintf("%s/%d", typ, id)
	g.mu.Lock()
	defer g.mu.Unlock()
	rel := make(chan struct{})
	arr := make(chan struct{})
	g.hold[k], g.arrived[k] = rel, arr
	var once sync.Once
	return arr, func() { once.Do(func() { close(rel) }) }
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/geo/v1/blobs/"), "/")
	typ := parts[0]
	k := strings.Join(parts, "/")
	g.mu.Lock()
	g.cur[typ]++
	g.curTotal++
	g.peak[typ] = max(g.peak[typ], g.cur[typ])
	g.peakAll = max(g.peakAll, g.curTotal)
	rel, arr := g.hold[k], g.arrived[k]
	delete(g.hold, k)
	delete(g.arrived, k)
	delay := g.delay
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.cur[typ]--
		g.curTotal--
		g.mu.Unlock()
	}()
	if delay > 0 {
		time.Sleep(delay) // simulated transfer time, so syncs overlap
	}
	if rel != nil {
		w = &holdWriter{ResponseWriter: w, arrived: arr, release: rel}
	}
	g.next.ServeHTTP(w, r)
}

type holdWriter struct {
	http.ResponseWriter
	arrived chan struct{}
	release chan struct{}
	held    bool
}

func (h *holdWriter) Write(p []byte) (int, error) {
	if !h.held && len(p) > 1 {
		h.held = true
		n, err := h.ResponseWriter.Write(p[:1])
		if f, ok := h.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		close(h.arrived)
		<-h.release
		if err != nil {
			return n, err
		}
		m, err := h.ResponseWriter.Write(p[1:])
		return n + m, err
	}
	return h.ResponseWriter.Write(p)
}

func (h *holdWriter) Flush() {
	if f, ok := h.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (f *fixture) gated(t *testing.T) (*gate, string) {
	g := newGate(f.Primary.Handler())
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return g, srv.URL
}

// waitClosed waits for ch to be closed, with a hang guard.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(hangGuard):
		t.Fatalf("%s: not reached within %v", what, hangGuard)
	}
}

func TestUpdateDuringSyncEndsWithNewBytes(t *testing.T) { // R1 end to end
	t.Parallel()
	for _, inPlace := range []bool{false, true} {
		t.Run(fmt.Sprintf("in_place=%v", inPlace), func(t *testing.T) {
			f := newFixture(t)
			ctx := context.Background()
			g, url := f.gated(t)
			id, err := f.app.Create(ctx, 0, payload(1, 64<<10))
			require.NoError(t, err)
			arrived, release := g.Hold("item", id)
			defer release()
			sec := f.secondaryItems()
			cfg := f.SecondaryConfig(sec)
			cfg.PrimaryURL = url
			f.Start(cfg)
			waitClosed(t, arrived, "first sync in flight")
			held, err := trackingStore(t, f).Get(ctx, "item", id)
			require.NoError(t, err)
			require.Equal(t, registry.StateStarted, held.State, "row of the sync in flight")
			newBytes := payload(2, 70<<10)
			if inPlace {
				require.NoError(t, f.app.UpdateInPlace(ctx, id, newBytes))
			} else {
				require.NoError(t, f.app.Update(ctx, id, newBytes))
			}
			// The update's event must reach the registry while the old sync is
			// still running.
			geotest.WaitFor(t, stall, "update event gives the row a new generation", func() (bool, string) {
				row, err := trackingStore(t, f).Get(ctx, "item", id)
				return err == nil && row.Seq != held.Seq, fmt.Sprint(row.State, row.Seq, err)
			})
			release()
			f.waitConverged(t, stall, sec)
			key, _ := f.items.BlobKey(ctx, id)
			got, err := os.ReadFile(filepath.Join(f.SecondaryRoot, key))
			require.NoError(t, err)
			require.Equal(t, sha(newBytes), sha(got), "R1: secondary bytes after an update during sync")
		})
	}
}

func TestDeleteDuringSyncLeavesNothing(t *testing.T) { // R2 end to end
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	g, url := f.gated(t)
	id, err := f.app.Create(ctx, 0, payload(1, 64<<10))
	require.NoError(t, err)
	keep, err := f.app.Create(ctx, 0, payload(2, 10))
	require.NoError(t, err)
	key, _ := f.items.BlobKey(ctx, id)
	arrived, release := g.Hold("item", id)
	defer release()
	sec := f.secondaryItems()
	cfg := f.SecondaryConfig(sec)
	cfg.PrimaryURL = url
	r := f.Start(cfg)
	waitClosed(t, arrived, "sync in flight")
	require.NoError(t, f.app.Delete(ctx, id, true))
	geotest.WaitFor(t, stall, "deleted event removes the row", func() (bool, string) {
		_, err := r.Store().Get(ctx, "item", id)
		return err != nil, fmt.Sprint(err)
	})
	release()
	f.waitConverged(t, stall, sec)
	_, err = os.Stat(filepath.Join(f.SecondaryRoot, key))
	require.True(t, os.IsNotExist(err), "R2: file of a record deleted during its sync: stat err = %v, want not exist", err)
	_, err = r.Store().Get(ctx, "item", keep)
	require.NoError(t, err)
}

func TestCapacityIsNeverExceeded(t *testing.T) { // R5
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	_, err := f.app.BulkCreate(ctx, 60, 0, func(i int) []byte { return payload(i, 1000) })
	require.NoError(t, err)
	other := f.other
	for i := 0; i < 60; i++ {
		_, err := other.create(ctx, f.PrimaryStorage, payload(i, 700))
		require.NoError(t, err)
	}
	g, url := f.gated(t)
	// Long enough that the syncs a claim starts together overlap at the
	// primary on a loaded machine too (at 30 ms, one started late could
	// miss the others, and the budget looked unused).
	g.delay = 200 * time.Millisecond
	sec := f.secondaryItems()
	cfg := f.SecondaryConfig(sec, other)
	cfg.PrimaryURL = url
	cfg.SyncCapacityPerType = 3
	cfg.SyncCapacityTotal = 5
	f.Start(cfg)
	f.waitConverged(t, stall, sec, other)
	g.mu.Lock()
	defer g.mu.Unlock()
	require.LessOrEqual(t, g.peakAll, 5, "total concurrent transfers")
	require.LessOrEqual(t, g.peak["item"], 3, "concurrent item transfers")
	require.LessOrEqual(t, g.peak["attachment"], 3, "concurrent attachment transfers")
	require.GreaterOrEqual(t, g.peakAll, 4, "the budget is used: peak concurrent transfers")
	require.Greater(t, g.peak["attachment"], 0)
}

// attachments is a second blob type with a different key scheme
// (content-addressed), written as an adopter would: one small adapter.
type attachments struct{ db *sqlx.DB }

func (a *attachments) Name() string { return "attachment" }

func (a *attachments) IDs(ctx context.Context, after int64, limit int) ([]int64, error) {
	var ids []int64
	err := a.db.SelectContext(ctx, &ids, `SELECT id FROM attachments WHERE id > $1 ORDER BY id LIMIT $2`, after, limit)
	return ids, err
}

func (a *attachments) BlobKey(ctx context.Context, id int64) (string, error) {
	var digest string
	err := a.db.GetContext(ctx, &digest, `SELECT digest FROM attachments WHERE id = $1`, id)
	if err != nil {
		if strings.Contains(err.Error(), "no rows") {
			return "", fmt.Errorf("attachment %d: %w", id, strategy.ErrNotFound)
		}
		return "", err
	}
	return "cas/" + digest[:2] + "/" + digest[2:4] + "/" + digest + "-" + strconv.FormatInt(id, 10), nil
}

func (a *attachments) setup(ctx context.Context) error {
	_, err := a.db.ExecContext(ctx, `CREATE TABLE attachments (id bigserial PRIMARY KEY, digest text NOT NULL)`)
	return err
}

func (a *attachments) create(ctx context.Context, st *blob.Bucket, data []byte) (int64, error) {
	var id int64
	if err := a.db.GetContext(ctx, &id, `INSERT INTO attachments (digest) VALUES ($1) RETURNING id`, sha(data)); err != nil {
		return 0, err
	}
	key, err := a.BlobKey(ctx, id)
	if err != nil {
		return 0, err
	}
	w, err := st.Create(ctx, key, nil)
	if err != nil {
		return 0, err
	}
	if _, err := w.Write(data); err != nil {
		return 0, err
	}
	return id, w.Commit(ctx)
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestGracefulShutdownReleasesClaims(t *testing.T) { // R3
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	g, url := f.gated(t)
	id, err := f.app.Create(ctx, 0, payload(1, 64<<10))
	require.NoError(t, err)
	arrived, release := g.Hold("item", id)
	defer release()
	cfg := f.SecondaryConfig(f.secondaryItems())
	cfg.PrimaryURL = url
	cfg.ShutdownGrace = 200 * time.Millisecond
	r := f.Start(cfg)
	r.TriggerConsistency()
	waitClosed(t, arrived, "sync in flight")
	stopped := make(chan error, 1)
	go func() { stopped <- r.Stop() }()
	var stopErr error
	select {
	case stopErr = <-stopped:
	case <-time.After(hangGuard):
		t.Fatal("Run did not return after its context ended")
	}
	release()
	require.NoError(t, stopErr)
	row, err := r.Store().Get(ctx, "item", id)
	require.NoError(t, err)
	require.Equal(t, registry.StatePending, row.State, "row state after shutdown interrupted its sync")
	require.Empty(t, row.LeaseOwner, "lease owner after release")
	d, err := f.Compare(ctx, f.secondaryItems())
	require.NoError(t, err)
	require.Zero(t, d.TempFiles, "temporary files after shutdown: %s", d)
}

func TestDeadWorkersClaimsAndTempFilesAreRecovered(t *testing.T) { // R3
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	ids, err := f.app.BulkCreate(ctx, 20, 0, func(i int) []byte { return payload(i, 3000) })
	require.NoError(t, err)
	store, err := regstore.NewStore(f.TrackingDB, regstore.Options{})
	require.NoError(t, err)
	_, err = store.InsertMissing(ctx, "item", ids)
	require.NoError(t, err)
	// A worker in another process claims everything, starts writing, and
	// dies: its claims stay started and its temporary file stays on disk.
	const deadLease = 2 * time.Second
	claims, err := store.Claim(ctx, regstore.ClaimParams{Lease: regstore.Lease{Owner: "dead-worker", Duration: deadLease}, Limits: []regstore.TypeLimit{{Replicable: "item", Limit: 100}}})
	require.NoError(t, err)
	require.Len(t, claims, 20)
	deadDir, err := dirblob.Open(f.SecondaryRoot)
	require.NoError(t, err)
	w, err := deadDir.Create(ctx, "items/0/partial", nil)
	require.NoError(t, err)
	_, err = w.Write([]byte("half a file"))
	require.NoError(t, err)
	require.NoError(t, deadDir.Close()) // the process is gone: its lock is released, its temp file is not
	// A new secondary process starts on the same root and tracking DB.
	fresh, err := dirblob.Open(f.SecondaryRoot)
	require.NoError(t, err)
	t.Cleanup(func() { fresh.Close() })
	sec := f.secondaryItems()
	cfg := f.SecondaryConfig(sec)
	cfg.Storage = fresh
	f.Start(cfg)
	// Reclaimed once the dead lease expires: measured from that expiry,
	// for the reclaim alone (one claim by the new secondary), not for
	// the syncs and the comparison after it, which a loaded machine may
	// make slow (the test timed all of it against 20 s).
	expired := claims[0].LeaseExpiresAt
	geotest.WaitFor(t, stall, "the dead worker's rows reclaimed", func() (bool, string) {
		var held int
		err := f.TrackingDB.GetContext(ctx, &held, `SELECT count(*) FROM geo_registry WHERE lease_owner = 'dead-worker'`)
		return err == nil && held == 0, fmt.Sprintf("%d rows still leased to the dead worker (%v)", held, err)
	})
	reclaimed := time.Since(expired)
	require.Less(t, reclaimed, 5*deadLease, "dead worker's rows reclaimed within a few lease periods of its lease's expiry")
	f.waitConverged(t, stall, sec)
}

func TestTwoSecondariesShareTheWork(t *testing.T) { // scale-out
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	_, err := f.app.BulkCreate(ctx, 2000, 0, func(i int) []byte { return payload(i, 256) })
	require.NoError(t, err)
	sec := f.secondaryItems()
	a := f.SecondaryConfig(sec)
	a.Owner = "secondary-a"
	b := f.SecondaryConfig(f.secondaryItems())
	b.Owner = "secondary-b"
	second, err := dirblob.Open(f.SecondaryRoot)
	require.NoError(t, err)
	t.Cleanup(func() { second.Close() })
	b.Storage = second
	f.Start(a)
	f.Start(b)
	f.waitConverged(t, stall, sec)
	require.Empty(t, f.Transfers.Overlaps(), "records transferred twice at the same time")
	// A transfer may be repeated after a failure (a timeout on a loaded
	// machine), but never while another is running for the same record.
	require.GreaterOrEqual(t, f.Transfers.Count("item", -1), 2000, "transfers")
}

var _ = atomic.Int64{}

func trackingStore(t *testing.T, f *fixture) *registry.Store {
	s, err := registry.NewStore(f.TrackingDB, registry.Options{})
	require.NoError(t, err)
	return s
}

// engineStore is the engines' store over the fixture's tracking database,
// for tests that drive rows as an engine would.
func engineStore(t *testing.T, f *fixture) *regstore.Store {
	s, err := regstore.NewStore(f.TrackingDB, regstore.Options{})
	require.NoError(t, err)
	return s
}
