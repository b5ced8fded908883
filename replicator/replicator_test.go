package replicator_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/geotest/pgtest"
	"github.com/geoframework/geo/internal/testtype"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/strategy"
)

var pg = pgtest.New(pgtest.Options{})

// The waits of these tests are tied to progress, so that a loaded 2-core
// machine (make test runs packages side by side, with -race) slows them
// without failing them:
//   - stall is how long a geotest.WaitFor accepts no change in what it
//     watches (a row's state, a count, a cursor);
//   - hangGuard is how long a test waits for one event it cannot watch
//     progress towards (a channel closed by a held transfer, a Run that
//     returns): reached only when something is broken.
const (
	stall     = time.Minute
	hangGuard = 2 * time.Minute
)

func TestMain(m *testing.M) { os.Exit(pg.Run(m)) }

// fixture is a world with the items test type.
type fixture struct {
	*geotest.World
	items *testtype.Type // primary's view (unscoped)
	app   *testtype.App
	other *attachments // a second type with another key scheme
}

// newFixture builds the test world. With manualPrimary the test runs the
// primary's verification itself (runPrimary), so no second engine with
// another clock competes for its rows.
func newFixture(t *testing.T, manualPrimary ...bool) *fixture {
	t.Helper()
	var items *testtype.Type
	var other *attachments
	w := geotest.NewWorld(t, geotest.WorldConfig{Verbose: os.Getenv("GEO_VERBOSE") != "", ManualPrimary: len(manualPrimary) > 0 && manualPrimary[0],
		Server: pg,
		Setup: func(ctx context.Context, db *sqlx.DB) error {
			if _, err := db.ExecContext(ctx, testtype.Schema("items")); err != nil {
				return err
			}
			return (&attachments{db: db}).setup(ctx)
		},
		Strategies: func(db *sqlx.DB) []strategy.BlobStrategy {
			items = &testtype.Type{TypeName: "item", Table: "items", DB: db}
			other = &attachments{db: db}
			return []strategy.BlobStrategy{items, other}
		},
	})
	return &fixture{World: w, items: items, other: other, app: &testtype.App{Type: items, Storage: w.PrimaryStorage, Publisher: w.Primary.Publisher()}}
}

// secondaryItems is the secondary's adapter: reads the primary DB (the
// replica in production), optionally scoped to regions.
func (f *fixture) secondaryItems(regions ...int) *testtype.Type {
	t := &testtype.Type{TypeName: "item", Table: "items", DB: f.PrimaryDB}
	if len(regions) > 0 {
		t.Regions = regions
	}
	return t
}

// createItems creates n items through the application (events
// published), item i with payload(i, size), and returns their ids.
func (f *fixture) createItems(t *testing.T, n, size int) []int64 {
	t.Helper()
	ids := make([]int64, 0, n)
	for i := range n {
		id, err := f.app.Create(context.Background(), 0, payload(i, size))
		require.NoError(t, err)
		ids = append(ids, id)
	}
	return ids
}

func payload(i, size int) []byte {
	b := make([]byte, size)
	for j := range b {
		b[j] = byte(i*31 + j*7)
	}
	return b
}

// waitConverged waits until the secondary is an exact copy of the
// primary; it fails when the difference has not changed for stall.
func (f *fixture) waitConverged(t *testing.T, stall time.Duration, strategies ...strategy.BlobStrategy) {
	t.Helper()
	ctx := context.Background()
	geotest.WaitFor(t, stall, "secondary converges to the primary", func() (bool, string) {
		d, err := f.Compare(ctx, strategies...)
		if err != nil {
			return false, err.Error()
		}
		return d.OK(), d.String()
	})
}

func TestBackfillSyncsPreexistingRecords(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	_, err := f.app.BulkCreate(ctx, 1000, 0, func(i int) []byte { return payload(i, 100+i%3000) })
	require.NoError(t, err)
	sec := f.secondaryItems()
	f.Start(f.SecondaryConfig(sec))
	f.waitConverged(t, stall, sec)
}

func TestOrphansAndScope(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	inScope, err := f.app.BulkCreate(ctx, 60, 1, func(i int) []byte { return payload(i, 500) })
	require.NoError(t, err)
	_, err = f.app.BulkCreate(ctx, 20, 2, func(i int) []byte { return payload(i, 500) })
	require.NoError(t, err)
	sec := f.secondaryItems(1)
	r := f.Start(f.SecondaryConfig(sec))
	f.waitConverged(t, stall, sec)

	// Deleted on the primary without any event: only the consistency pass
	// can notice.
	for _, id := range inScope[:10] {
		require.NoError(t, f.app.Delete(ctx, id, false))
	}
	// Left the scope: its copy must go.
	for _, id := range inScope[10:15] {
		require.NoError(t, f.app.SetRegion(ctx, id, 2))
	}
	r.TriggerConsistency()
	f.waitConverged(t, stall, sec)
	var rows int
	require.NoError(t, f.TrackingDB.GetContext(ctx, &rows, `SELECT count(*) FROM geo_registry`))
	require.Equal(t, 45, rows, "orphans removed: registry rows")
}

// fakeClock is a settable clock for backoff tests.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestMissingOnPrimaryBacksOffToItsCap(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	// Without an event: the consistency pass makes the row. A created
	// event could be delivered late (the consumer's first start position
	// is the cluster's snapshot xmin, held back by other tests'
	// transactions) and make the row pending again mid-test, which
	// restarts the retry count.
	created, err := f.app.BulkCreate(ctx, 1, 0, func(int) []byte { return payload(1, 100) })
	require.NoError(t, err)
	id := created[0]
	key, err := f.items.BlobKey(ctx, id)
	require.NoError(t, err)
	require.NoError(t, f.PrimaryStorage.Remove(ctx, key)) // the file is lost on the primary

	clock := &fakeClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	cfg := f.SecondaryConfig(f.secondaryItems())
	cfg.Now = clock.Now
	cfg.Retry = strategy.Backoff{Base: time.Hour, Jitter: -1} // 1h, 2h, 4h, then the 4h cap
	r := f.Start(cfg)
	r.TriggerConsistency()
	store := r.Store()
	want := []time.Duration{time.Hour, 2 * time.Hour, 4 * time.Hour, 4 * time.Hour, 4 * time.Hour}
	for n, delay := range want {
		var row registry.Row
		geotest.WaitFor(t, stall, fmt.Sprintf("failure %d recorded", n+1), func() (bool, string) {
			row, err = store.Get(ctx, "item", id)
			if err != nil {
				return false, err.Error()
			}
			return row.State == registry.StateFailed && row.RetryCount == n+1, fmt.Sprintf("state %v retry_count %d", row.State, row.RetryCount)
		})
		require.True(t, row.MissingOnPrimary, "missing_on_primary after failure %d", n+1)
		got := row.RetryAt.Sub(clock.Now())
		require.Equal(t, delay, got, "backoff after failure %d", n+1)
		clock.Add(got + time.Second) // the retry is due
		r.Wake()
	}
}
