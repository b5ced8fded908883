package regstore_test

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/geoframework/geo/geotest/pgtest"
	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
)

var pg = pgtest.New(pgtest.Options{})

func TestMain(m *testing.M) { os.Exit(pg.Run(m)) }

// fakeClock is a settable clock for Options.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// newStore returns a store on a fresh, migrated database with a fake clock
// (unless opts.Now is set).
func newStore(tb testing.TB, opts regstore.Options) (*regstore.Store, *sqlx.DB, *fakeClock) {
	tb.Helper()
	db := pg.NewDatabase(tb)
	if err := registry.MigrateTracking(context.Background(), db); err != nil {
		tb.Fatalf("MigrateTracking: %v", err)
	}
	clock := newClock()
	if opts.Now == nil {
		opts.Now = clock.Now
	}
	s, err := regstore.NewStore(db, opts)
	if err != nil {
		tb.Fatalf("NewStore: %v", err)
	}
	return s, db, clock
}

func mustGet(t *testing.T, s *regstore.Store, replicable string, id int64) registry.Row {
	t.Helper()
	r, err := s.Get(context.Background(), replicable, id)
	if err != nil {
		t.Fatalf("Get(%s, %d): %v", replicable, id, err)
	}
	return r
}

func mustMarkPending(t *testing.T, s *regstore.Store, replicable string, ids ...int64) {
	t.Helper()
	if _, err := s.MarkPending(context.Background(), replicable, ids); err != nil {
		t.Fatalf("MarkPending(%s, %v): %v", replicable, ids, err)
	}
}

func mustClaim(t *testing.T, s *regstore.Store, owner string, lease time.Duration, limits ...regstore.TypeLimit) []regstore.Claim {
	t.Helper()
	cs, err := s.Claim(context.Background(), regstore.ClaimParams{Lease: regstore.Lease{Owner: owner, Duration: lease}, Limits: limits})
	if err != nil {
		t.Fatalf("Claim(%s, %v): %v", owner, limits, err)
	}
	return cs
}

// claimOne claims exactly one row of replicable or fails the test.
func claimOne(t *testing.T, s *regstore.Store, owner, replicable string) regstore.Claim {
	t.Helper()
	cs := mustClaim(t, s, owner, time.Minute, regstore.TypeLimit{Replicable: replicable, Limit: 1})
	if len(cs) != 1 {
		t.Fatalf("Claim(%s, %s, 1) returned %d claims, want 1", owner, replicable, len(cs))
	}
	return cs[0]
}

func ids(from, to int64) []int64 {
	var out []int64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}
