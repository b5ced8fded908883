package geotest

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
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
	"github.com/geoframework/geo/geotest/s3test"
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
	// database. Required unless Repositories is set.
	Strategies func(db *sqlx.DB) []strategy.BlobStrategy
	// Repositories returns the primary's repository adapters (no scope)
	// over its database: the world then has a repository root on each
	// site (World.PrimaryRepositories, World.SecondaryRepositories), and
	// its primary serves them.
	Repositories func(db *sqlx.DB) []strategy.RepositoryStrategy
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
	// Storage chooses where each site keeps its blobs: a directory (the
	// zero value, for both) or a bucket of its own on an S3 server.
	Storage Storage
	// S3 is the S3 server of the sites on StorageS3 (a throwaway
	// versitygw, or GEO_TEST_S3_URL's bucket; see geotest/s3test). Nil
	// means one of the world's own, started if a site needs it and
	// stopped when the test ends; tests building many worlds share one.
	S3 *s3test.Server
}

// StorageKind is where one site of a World keeps its blobs.
type StorageKind string

const (
	// StorageDir keeps a site's blobs in a directory of the test's
	// (blob/dirblob). It is the default: "" means it too.
	StorageDir StorageKind = "dir"
	// StorageS3 keeps them in a fresh bucket on an S3 server (blob/cloudblob
	// over geotest/s3test): a bucket of their own on a throwaway versitygw,
	// or a prefix of their own in GEO_TEST_S3_URL's bucket. Without an S3
	// server the test fails under CI and is skipped elsewhere, saying how
	// to install versitygw.
	StorageS3 StorageKind = "s3"
)

// Storage chooses the storage of both sites of a World. The zero value
// puts both on directories.
type Storage struct {
	Primary, Secondary StorageKind
}

// String names s as "PRIMARY-SECONDARY": "dir-dir", "dir-s3", "s3-dir",
// "s3-s3" (subtest names).
func (s Storage) String() string { return s.kind(s.Primary) + "-" + s.kind(s.Secondary) }

func (Storage) kind(k StorageKind) string {
	if k == "" {
		return string(StorageDir)
	}
	return string(k)
}

// UsesS3 reports whether a site of s is on StorageS3.
func (s Storage) UsesS3() bool { return s.Primary == StorageS3 || s.Secondary == StorageS3 }

// ObjectStorage returns the pairings with object storage on at least one
// site: both sites on S3, then the two mixed ones (the primary on a
// directory and the secondary on S3, and the reverse). Storage{} is the
// fourth, both on directories.
func ObjectStorage() []Storage {
	return []Storage{
		{Primary: StorageS3, Secondary: StorageS3},
		{Primary: StorageDir, Secondary: StorageS3},
		{Primary: StorageS3, Secondary: StorageDir},
	}
}

// World is a primary site and the means to start secondaries against it,
// all on loopback: a primary database (migrated, with the application's
// schema), a tracking database, the primary's storage and transfer
// endpoint, and the secondary's storage (each a directory or an S3
// bucket, as WorldConfig.Storage says).
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
	// PrimaryRoot and SecondaryRoot are the sites' storage directories
	// ("" for a site on S3).
	PrimaryRoot   string
	SecondaryRoot string
	// PrimaryBucket and SecondaryBucket are the sites' S3 buckets (nil for
	// a site on a directory): open one through a FaultProxy with OpenAt,
	// look for multipart uploads left behind, write behind geo's back.
	PrimaryBucket   *s3test.Bucket
	SecondaryBucket *s3test.Bucket
	// PrimaryRepositories and SecondaryRepositories are the sites'
	// repository roots ("" without WorldConfig.Repositories).
	PrimaryRepositories   string
	SecondaryRepositories string

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
	if cfg.Strategies == nil && cfg.Repositories == nil {
		tb.Fatal("geotest: WorldConfig.Strategies (or Repositories) is required")
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
	if cfg.Storage.UsesS3() && cfg.S3 == nil {
		cfg.S3 = s3test.New()
		tb.Cleanup(func() { _ = cfg.S3.Stop() })
	}
	dir := tb.TempDir()
	w.PrimaryStorage, w.PrimaryRoot, w.PrimaryBucket = siteStorage(tb, cfg.Storage.Primary, cfg.S3, filepath.Join(dir, "primary"), "primary")
	w.SecondaryStorage, w.SecondaryRoot, w.SecondaryBucket = siteStorage(tb, cfg.Storage.Secondary, cfg.S3, filepath.Join(dir, "secondary"), "secondary")
	var err error

	w.Strategies = replicator.NewSet()
	var all []strategy.Strategy
	if cfg.Strategies != nil {
		for _, s := range cfg.Strategies(w.PrimaryDB) {
			all = append(all, s)
		}
	}
	if cfg.Repositories != nil {
		w.PrimaryRepositories = filepath.Join(dir, "primary-repositories")
		w.SecondaryRepositories = filepath.Join(dir, "secondary-repositories")
		if err := os.MkdirAll(w.PrimaryRepositories, 0o755); err != nil {
			tb.Fatalf("geotest: primary repository root: %v", err)
		}
		for _, s := range cfg.Repositories(w.PrimaryDB) {
			all = append(all, s)
		}
	}
	for _, s := range all {
		if err := w.Strategies.Register(s); err != nil {
			tb.Fatalf("geotest: register: %v", err)
		}
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	w.Credentials = transfer.Credentials{Site: "secondary-1", AccessKey: "geotest-key", Secret: secret}
	w.Primary, err = replicator.NewPrimary(replicator.PrimaryConfig{
		Strategies: w.Strategies, DB: w.PrimaryDB, Storage: w.PrimaryStorage, RepositoryRoot: w.PrimaryRepositories,
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

// siteStorage opens a site's storage of kind: a directory at root, or a
// fresh bucket on srv. It is closed (and the bucket removed) when tb ends.
func siteStorage(tb TB, kind StorageKind, srv *s3test.Server, root, site string) (_ *blob.Bucket, dir string, _ *s3test.Bucket) {
	tb.Helper()
	switch kind {
	case "", StorageDir:
		st, err := dirblob.Open(root)
		if err != nil {
			tb.Fatalf("geotest: %s storage: %v", site, err)
		}
		tb.Cleanup(func() { st.Close() })
		return st, root, nil
	case StorageS3:
		b := srv.NewBucket(tb)
		return b.Open(tb), "", b
	}
	tb.Fatalf("geotest: %s storage: unknown StorageKind %q", site, kind)
	return nil, "", nil
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
// scoped; blob and repository types alike) and the world's secondary
// storage and repository root: polls every 100 ms (events every 50 ms),
// TestLease, TestTransferTimeout, a 5 s shutdown grace. Tests adjust it
// before calling NewSecondary.
func (w *World) SecondaryConfig(strategies ...strategy.Strategy) replicator.SecondaryConfig {
	set := replicator.NewSet()
	for _, s := range strategies {
		if err := set.Register(s); err != nil {
			w.tb.Fatalf("geotest: register: %v", err)
		}
	}
	return replicator.SecondaryConfig{
		Strategies: set, Tracking: w.TrackingDB, Primary: w.PrimaryDB,
		PrimaryURL: w.HTTP.URL, Credentials: w.Credentials, Storage: w.SecondaryStorage,
		RepositoryRoot: w.SecondaryRepositories,
		Logger:         w.Logger.Named("secondary"),
		PollInterval:   100 * time.Millisecond, EventPollInterval: 50 * time.Millisecond,
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
	return eventually(stall, WaitHangFactor*stall, false, cond)
}

// eventually is Eventually with its hang guard given: it gives up when
// cond's explanation is unchanged for stall or after limit in all. With
// newOnly (the conformance suites' clause waits) only an explanation
// never given before is progress: a clause whose state keeps returning to
// where it was (a row flapping between started and failed on a checksum
// mismatch that never heals) fails after stall instead of running to the
// clause's watchdog.
// eventuallySeenMax bounds the explanations eventually remembers.
const eventuallySeenMax = 10_000

func eventually(stall, limit time.Duration, newOnly bool, cond func() (bool, string)) error {
	start := time.Now()
	seen := map[string]bool{} // explanations given so far
	last, changed := "", start
	for n := 0; ; n++ {
		ok, why := cond()
		if ok {
			return nil
		}
		now := time.Now()
		if !newOnly && (n == 0 || why != last) {
			last, changed = why, now
		}
		if newOnly && !seen[why] {
			if len(seen) >= eventuallySeenMax {
				clear(seen) // bounded memory; a new explanation is still progress
			}
			seen[why], changed = true, now
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
