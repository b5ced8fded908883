package geotest

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/blob/dirblob"
	"github.com/geoframework/geo/geotest/pgtest"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/replicator/transfer"
	"github.com/geoframework/geo/strategy"
)

// TB is the part of testing.TB a World uses. *testing.T and *testing.B
// satisfy it, and so does the suite's own test double.
type TB interface {
	pgtest.TB
	Errorf(format string, args ...any)
	TempDir() string
}

// WorldConfig describes the pair of sites a World builds.
type WorldConfig struct {
	// Server provides PostgreSQL. Nil means a server of the world's own
	// (GEO_TEST_DATABASE_URL or a throwaway cluster), stopped when the test
	// ends.
	Server *pgtest.Server
	// Setup creates the application's schema in the primary database.
	Setup func(ctx context.Context, db *sqlx.DB) error
	// Strategies returns the primary's adapters (no scope) over its
	// database. Required.
	Strategies func(db *sqlx.DB) []strategy.BlobStrategy
	// Verbose sends the sites' logs to the test log (unless Logger is set).
	Verbose bool
	// Logger, when set, receives both sites' logs (named "primary" and
	// "secondary"): pass a logger over go.uber.org/zap/zaptest/observer to
	// capture them and assert on what an operator would read.
	Logger *zap.Logger
	// WrapPrimary, when set, wraps the primary's transfer endpoint before
	// the World serves it: a test counts, holds or fails transfers there
	// (answer 503, stall, cut a body) to see what a secondary makes of it.
	WrapPrimary func(http.Handler) http.Handler
	// PrimaryNow is the clock of the world's primary (its checksum rows
	// and their re-verification); nil means time.Now. With ManualPrimary a
	// test drives the primary's Run and moves this clock itself.
	PrimaryNow func() time.Time
	// ManualPrimary leaves the primary's background work (verification,
	// outbox pruning) to the test, which runs its own Primary.Run (with a
	// fake clock, say). By default the World runs it.
	ManualPrimary bool
}

// World is a primary site and the means to start secondaries against it,
// all on loopback: a primary database (migrated, with the application's
// schema), a tracking database, a primary storage root and transfer
// endpoint, and a secondary storage root.
type World struct {
	tb     TB
	Server *pgtest.Server

	PrimaryDB  *sqlx.DB
	TrackingDB *sqlx.DB
	// TrackingURL is the tracking database's URL (for separate processes).
	TrackingURL string
	// PrimaryDBURL is the primary database's URL.
	PrimaryDBURL string

	PrimaryStorage   *blob.Bucket
	SecondaryStorage *blob.Bucket
	PrimaryRoot      string
	SecondaryRoot    string

	Strategies  *replicator.Set // the primary's
	Primary     *replicator.Primary
	HTTP        *httptest.Server
	Credentials transfer.Credentials
	Transfers   *TransferLog
	Logger      *zap.Logger
}

// NewWorld builds a World; everything it starts is stopped when tb ends.
func NewWorld(tb TB, cfg WorldConfig) *World {
	tb.Helper()
	if cfg.Strategies == nil {
		tb.Fatal("geotest: WorldConfig.Strategies is required")
	}
	ctx := context.Background()
	srv := cfg.Server
	if srv == nil {
		srv = pgtest.New(pgtest.Options{})
		tb.Cleanup(func() { _ = srv.Stop() })
	}
	w := &World{tb: tb, Server: srv, Transfers: &TransferLog{}}
	w.Logger = zap.NewNop()
	if t, ok := tb.(testing.TB); ok && cfg.Verbose {
		w.Logger = zaptest.NewLogger(t)
	}
	if cfg.Logger != nil {
		w.Logger = cfg.Logger
	}
	w.PrimaryDBURL = srv.NewDatabaseURL(tb)
	w.PrimaryDB = open(tb, w.PrimaryDBURL)
	w.TrackingURL = srv.NewDatabaseURL(tb)
	w.TrackingDB = open(tb, w.TrackingURL)
	if err := registry.MigratePrimary(ctx, w.PrimaryDB); err != nil {
		tb.Fatalf("geotest: migrate primary: %v", err)
	}
	if err := registry.MigrateTracking(ctx, w.TrackingDB); err != nil {
		tb.Fatalf("geotest: migrate tracking: %v", err)
	}
	if cfg.Setup != nil {
		if err := cfg.Setup(ctx, w.PrimaryDB); err != nil {
			tb.Fatalf("geotest: application schema setup: %v", err)
		}
	}
	dir := tb.TempDir()
	w.PrimaryRoot = filepath.Join(dir, "primary")
	w.SecondaryRoot = filepath.Join(dir, "secondary")
	var err error
	if w.PrimaryStorage, err = dirblob.Open(w.PrimaryRoot); err != nil {
		tb.Fatalf("geotest: primary storage: %v", err)
	}
	tb.Cleanup(func() { w.PrimaryStorage.Close() })
	if w.SecondaryStorage, err = dirblob.Open(w.SecondaryRoot); err != nil {
		tb.Fatalf("geotest: secondary storage: %v", err)
	}
	tb.Cleanup(func() { w.SecondaryStorage.Close() })

	w.Strategies = replicator.NewSet()
	for _, s := range cfg.Strategies(w.PrimaryDB) {
		if err := w.Strategies.Register(s); err != nil {
			tb.Fatalf("geotest: register: %v", err)
		}
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	w.Credentials = transfer.Credentials{Site: "secondary-1", AccessKey: "geotest-key", Secret: secret}
	w.Primary, err = replicator.NewPrimary(replicator.PrimaryConfig{
		Strategies: w.Strategies, DB: w.PrimaryDB, Storage: w.PrimaryStorage,
		Secrets: transfer.NewStaticSecrets(w.Credentials), Logger: w.Logger.Named("primary"),
		Observer: w.Transfers, PollInterval: 50 * time.Millisecond, Now: cfg.PrimaryNow,
	})
	if err != nil {
		tb.Fatalf("geotest: primary: %v", err)
	}
	// The primary's background work: checksums of every record
	// (verification) and outbox retention.
	if !cfg.ManualPrimary {
		pctx, pcancel := context.WithCancel(context.Background())
		pdone := make(chan error, 1)
		go func() { pdone <- w.Primary.Run(pctx) }()
		tb.Cleanup(func() {
			pcancel()
			if err := <-pdone; err != nil {
				tb.Logf("geotest: primary stopped: %v", err)
			}
		})
	}
	handler := w.Primary.Handler()
	if cfg.WrapPrimary != nil {
		handler = cfg.WrapPrimary(handler)
	}
	w.HTTP = httptest.NewServer(handler)
	tb.Cleanup(w.HTTP.Close)
	return w
}

func open(tb TB, url string) *sqlx.DB {
	db, err := sqlx.Open("postgres", url)
	if err != nil {
		tb.Fatalf("geotest: open: %v", err)
	}
	db.SetMaxOpenConns(40)
	db.SetMaxIdleConns(40)
	tb.Cleanup(func() { db.Close() })
	return db
}

// TestLease is the lease of a World's secondaries. A test secondary polls
// fast, but its lease is the production default: a lease is renewed every
// third of it, so a shorter one expires whenever a loaded machine delays
// a renewal by two thirds of it, and the lookups and staging after a
// claim are bounded by a third of it (at most 5 s). A test of lease
// expiry sets its own.
const TestLease = 30 * time.Second

// TestTransferTimeout is a World's secondaries' stall timeout for a
// transfer: longer than any test holds a transfer in flight (on a loaded
// machine the waits during a hold take tens of seconds), so a held
// transfer is never cut behind the test's back. A test of the timeout sets
// its own.
const TestTransferTimeout = 2 * time.Minute

// SecondaryConfig returns a configuration for a secondary of this world
// using strategies (adapters reading the primary database, possibly
// scoped) and the world's secondary storage: polls every 100 ms (events
// every 50 ms), TestLease, TestTransferTimeout, a 5 s shutdown grace.
// Tests adjust it before calling NewSecondary.
func (w *World) SecondaryConfig(strategies ...strategy.BlobStrategy) replicator.SecondaryConfig {
	set := replicator.NewSet()
	for _, s := range strategies {
		if err := set.Register(s); err != nil {
			w.tb.Fatalf("geotest: register: %v", err)
		}
	}
	return replicator.SecondaryConfig{
		Strategies: set, Tracking: w.TrackingDB, Primary: w.PrimaryDB,
		PrimaryURL: w.HTTP.URL, Credentials: w.Credentials, Storage: w.SecondaryStorage,
		Logger:       w.Logger.Named("secondary"),
		PollInterval: 100 * time.Millisecond, EventPollInterval: 50 * time.Millisecond,
		Lease: TestLease, ShutdownGrace: 5 * time.Second, TransferTimeout: TestTransferTimeout,
	}
}

// Running is a secondary running in the background.
type Running struct {
	*replicator.Secondary
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// Start builds a secondary from cfg and runs it until Stop or the end of
// the test.
func (w *World) Start(cfg replicator.SecondaryConfig) *Running {
	w.tb.Helper()
	sec, err := replicator.NewSecondary(cfg)
	if err != nil {
		w.tb.Fatalf("geotest: new secondary: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Running{Secondary: sec, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- sec.Run(ctx) }()
	w.tb.Cleanup(func() { _ = r.Stop() })
	return r
}

// Stop ends the secondary gracefully and returns Run's error.
func (r *Running) Stop() error {
	r.once.Do(func() {
		r.cancel()
		r.err = <-r.done
	})
	return r.err
}

// WaitHangFactor bounds a wait that keeps making progress: WaitFor and
// Eventually give up after WaitHangFactor times their stall timeout even
// while the condition's explanation keeps changing, so a livelock (a row
// failing and retrying for ever) still fails instead of hanging CI.
const WaitHangFactor = 10

// WaitPollInterval is how often WaitFor and Eventually ask their
// condition.
const WaitPollInterval = 20 * time.Millisecond

// WaitFor polls cond until it returns true; the test fails with what and
// cond's last explanation when cond's explanation stays the same for
// stall, or, progress or not, after WaitHangFactor times stall.
//
// The wait is tied to progress, not to wall time: every change of cond's
// explanation (a count that grows, a state that moves) starts the stall
// timeout again, so a system that is slow because the machine is loaded
// (a shared 2-core CI runner) but still moving is not failed. Write cond's
// explanation so that it changes when the awaited work progresses (counts,
// states, a cursor), and choose stall as the longest a loaded machine may
// plausibly show no visible change: a minute is the house default.
func WaitFor(tb TB, stall time.Duration, what string, cond func() (bool, string)) {
	tb.Helper()
	if err := Eventually(stall, cond); err != nil {
		tb.Fatalf("%s: %v", what, err)
	}
}

// Eventually polls cond every WaitPollInterval until it returns true
// (nil), and returns an error carrying cond's last explanation when that
// explanation stays the same for stall or, progress or not, after
// WaitHangFactor times stall (see WaitFor).
func Eventually(stall time.Duration, cond func() (bool, string)) error {
	return eventually(stall, WaitHangFactor*stall, cond)
}

// eventually is Eventually with its hang guard given: it gives up when
// cond's explanation is unchanged for stall or after limit in all.
func eventually(stall, limit time.Duration, cond func() (bool, string)) error {
	start := time.Now()
	var last string
	changed := start
	for n := 0; ; n++ {
		ok, why := cond()
		if ok {
			return nil
		}
		now := time.Now()
		if n == 0 || why != last {
			last, changed = why, now
		}
		switch {
		case now.Sub(changed) >= stall:
			return fmt.Errorf("no progress for %v (waited %v): %s", stall, now.Sub(start).Round(time.Millisecond), why)
		case now.Sub(start) >= limit:
			return fmt.Errorf("not reached within %v, although it kept changing: %s", limit, why)
		}
		time.Sleep(WaitPollInterval)
	}
}

// TransferLog records every transfer the primary served, for tests that
// count downloads or look for overlapping ones. It is the World primary's
// replicator.Observer.
type TransferLog struct {
	replicator.NopObserver
	mu   sync.Mutex
	list []Transfer
}

// Transfer is one served transfer.
type Transfer = replicator.TransferEvent

// TransferServed implements replicator.Observer: it records t.
func (l *TransferLog) TransferServed(t Transfer) {
	l.mu.Lock()
	l.list = append(l.list, t)
	l.mu.Unlock()
}

// All returns the transfers so far.
func (l *TransferLog) All() []Transfer {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Transfer(nil), l.list...)
}

// Count returns how many transfers of replicable's record id were served
// (id < 0 counts every record of the type).
func (l *TransferLog) Count(replicable string, id int64) int {
	n := 0
	for _, t := range l.All() {
		if t.Replicable == replicable && (id < 0 || t.ModelID == id) {
			n++
		}
	}
	return n
}

// Overlaps returns the records that were transferred twice at the same time.
func (l *TransferLog) Overlaps() []string {
	by := map[string][]Transfer{}
	for _, t := range l.All() {
		k := fmt.Sprintf("%s/%d", t.Replicable, t.ModelID)
		by[k] = append(by[k], t)
	}
	var out []string
	for k, ts := range by {
		for i := range ts {
			for j := i + 1; j < len(ts); j++ {
				if ts[i].Start.Before(ts[j].End) && ts[j].Start.Before(ts[i].End) {
					out = append(out, k)
				}
			}
		}
	}
	return out
}
