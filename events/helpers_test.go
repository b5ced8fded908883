package events_test

import (
	"context"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/geotest/pgtest"
	"github.com/geoframework/geo/registry"
)

var pg = pgtest.New(pgtest.Options{})

func TestMain(m *testing.M) { os.Exit(pg.Run(m)) }

var names = []string{"package_file", "upload"}

// env is a primary database (with the outbox) and a tracking database.
type env struct {
	primaryURL string
	primary    *sqlx.DB
	tracking   *sqlx.DB
	pub        *events.Publisher
}

func newEnv(t testing.TB) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{primaryURL: pg.NewDatabaseURL(t)}
	e.primary = sqlx.MustOpen("postgres", e.primaryURL)
	e.primary.SetMaxOpenConns(20)
	t.Cleanup(func() { e.primary.Close() })
	e.tracking = pg.NewDatabase(t)
	require.NoError(t, registry.MigratePrimary(ctx, e.primary))
	require.NoError(t, registry.MigrateTracking(ctx, e.tracking))
	var err error
	e.pub, err = events.NewPublisher(names)
	require.NoError(t, err)
	return e
}

// config is a consumer configuration reading e's primary directly.
func (e *env) config(t testing.TB, h events.Handler) events.ConsumerConfig {
	return events.ConsumerConfig{
		Source:       e.primary,
		Tracking:     e.tracking,
		Handler:      h,
		Known:        e.pub.Known,
		PollInterval: 10 * time.Millisecond,
		Logger:       zaptest.NewLogger(t),
	}
}

// publish commits one transaction publishing an OpCreated event for each
// model id.
func (e *env) publish(t testing.TB, replicable string, ids ...int64) {
	t.Helper()
	ctx := context.Background()
	tx, err := e.primary.BeginTxx(ctx, nil)
	require.NoError(t, err)
	for _, id := range ids {
		require.NoError(t, e.pub.Publish(ctx, tx, replicable, events.OpCreated, id, ""))
	}
	require.NoError(t, tx.Commit())
}

// run starts c.Run in a goroutine; the returned stop cancels it and
// checks that Run returned nil.
func run(t testing.TB, c *events.Consumer) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run = %v, want nil after cancel", err)
				}
			case <-time.After(waitGuard):
				t.Errorf("Run did not return within %v of cancel", waitGuard)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// The waits of these tests are tied to progress, so that a loaded 2-core
// machine (make test runs packages side by side, with -race) slows them
// without failing them: waitGuard bounds a wait for one step of a
// consumer or the database (a hang guard, reached only when something is
// broken), and stall how long waitGrowing accepts no progress.
const (
	waitGuard = 2 * time.Minute
	stall     = time.Minute
)

// waitFor polls cond until it holds or d (a hang guard) passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, with a deadline
	}
}

// waitGrowing polls n until it reaches want; it fails when n stays the
// same for stall (no progress), however long the whole wait takes.
func waitGrowing(t testing.TB, what string, n func() int, want int) {
	t.Helper()
	last, changed := n(), time.Now()
	for last < want {
		if time.Since(changed) >= stall {
			t.Fatalf("waiting for %s: %d of %d, no progress for %v", what, last, want, stall)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, with a deadline
		if cur := n(); cur != last {
			last, changed = cur, time.Now()
		}
	}
}

func waitActive(t testing.TB, c *events.Consumer) {
	t.Helper()
	waitFor(t, waitGuard, "consumer active", func() bool { return c.Stats().Active })
}

// recorder is a Handler that keeps every batch and checks order.
type recorder struct {
	mu      sync.Mutex
	batches [][]events.Event
	seen    map[int64]int // event id -> deliveries
	// before, when set, runs before a batch is recorded; a non-nil error
	// fails the batch (and it is not recorded).
	before func(ctx context.Context, batch []events.Event) error
}

func newRecorder() *recorder { return &recorder{seen: map[int64]int{}} }

func (r *recorder) HandleEvents(ctx context.Context, batch []events.Event) error {
	if r.before != nil {
		if err := r.before(ctx, batch); err != nil {
			return err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches = append(r.batches, batch)
	for _, e := range batch {
		r.seen[e.ID]++
	}
	return nil
}

// distinct is the number of distinct event ids delivered.
func (r *recorder) distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

func (r *recorder) events() []events.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []events.Event
	for _, b := range r.batches {
		out = append(out, b...)
	}
	return out
}

func (r *recorder) modelIDs() []int64 {
	var out []int64
	for _, e := range r.events() {
		out = append(out, e.ModelID)
	}
	return out
}

func before(a, b events.Event) bool {
	return a.XID < b.XID || (a.XID == b.XID && a.ID < b.ID)
}

// checkBatchOrder fails unless every batch is in strictly increasing
// (XID, ID) order.
func (r *recorder) checkBatchOrder(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, b := range r.batches {
		for j := 1; j < len(b); j++ {
			if !before(b[j-1], b[j]) {
				t.Fatalf("batch %d: event %d (xid %d id %d) delivered after (xid %d id %d): not in (xid, id) order",
					i, j, b[j].XID, b[j].ID, b[j-1].XID, b[j-1].ID)
			}
		}
	}
}

// outboxIDs returns every event id committed in the primary's outbox.
func (e *env) outboxIDs(t testing.TB) []int64 {
	t.Helper()
	var ids []int64
	require.NoError(t, e.primary.SelectContext(context.Background(), &ids, `SELECT id FROM geo_events ORDER BY id`))
	return ids
}

func sortedKeys(m map[int64]int) []int64 {
	out := make([]int64, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
