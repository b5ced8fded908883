package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // the PostgreSQL driver geo uses
	"go.uber.org/zap"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/blob/dirblob"
	"github.com/geoframework/geo/blob/driver"
	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/geotest/pgtest"
	"github.com/geoframework/geo/internal/testtype"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/replicator/transfer"
	"github.com/geoframework/geo/strategy"
)

// Names of the campaign's blob type.
const (
	typeName  = "chaos_item"
	typeTable = "chaos_items"
)

// envConfig says how to build an env.
type envConfig struct {
	// separateClusters puts the tracking database on a PostgreSQL server
	// of its own (db-restart restarts each server in turn). That server
	// keeps PostgreSQL's crash-safety settings (pgtest Durable): db-restart
	// crashes it, and a server with synchronous_commit off everywhere
	// loses durable commits too, which no production server does.
	separateClusters bool
	// wrapPrimaryHandler, when set, wraps the primary's transfer endpoint
	// (races puts a gate in front of it).
	wrapPrimaryHandler func(http.Handler) http.Handler
}

// env is one scenario's two sites on loopback: PostgreSQL (one throwaway
// cluster, or two), the primary database with the items table, the
// secondary's tracking database, both storage roots, the primary's
// transfer endpoint on 127.0.0.1 with every served transfer recorded, and
// the application that changes items on the primary.
type env struct {
	o   options
	log *zap.Logger

	primaryCluster, trackingCluster *pgtest.Cluster

	PrimaryDBURL, TrackingURL string
	PrimaryDB, TrackingDB     *sqlx.DB

	Dir                        string
	PrimaryRoot, SecondaryRoot string
	PrimaryStorage             *blob.Bucket

	Type        *testtype.Type
	App         *testtype.App
	Primary     *replicator.Primary
	PrimaryURL  string
	Credentials transfer.Credentials
	Transfers   *transferLog

	contents *contentLog

	closers []func()
}

// newEnv starts a scenario's env; the caller closes it. On error what was
// started is stopped again and the error says why; with TMPDIR out of
// reach of the cluster's account (pgtest.ErrUnreachable) it says to set
// TMPDIR.
func newEnv(ctx context.Context, o options, cfg envConfig) (_ *env, err error) {
	// e, not a named result: every "return nil, err" below sets the
	// result to nil, and the cleanup must still see what was started.
	e := &env{o: o, log: o.logger(), contents: newContentLog()}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	if e.Dir, err = os.MkdirTemp("", "geochaos-"); err != nil {
		return nil, err
	}
	e.closers = append(e.closers, func() { os.RemoveAll(e.Dir) })

	e.primaryCluster, err = pgtest.StartCluster(ctx, pgtest.Options{MaxConnections: 400})
	if err != nil {
		return nil, fmt.Errorf("start primary PostgreSQL (geochaos starts its own clusters, under TMPDIR): %w", err)
	}
	e.closers = append(e.closers, func() { e.primaryCluster.Stop() })
	e.trackingCluster = e.primaryCluster
	if cfg.separateClusters {
		e.trackingCluster, err = pgtest.StartCluster(ctx, pgtest.Options{MaxConnections: 400, Durable: true})
		if err != nil {
			return nil, fmt.Errorf("start tracking PostgreSQL: %w", err)
		}
		e.closers = append(e.closers, func() { e.trackingCluster.Stop() })
	}
	if e.PrimaryDBURL, err = createDB(ctx, e.primaryCluster, "geo_primary"); err != nil {
		return nil, err
	}
	if e.TrackingURL, err = createDB(ctx, e.trackingCluster, "geo_tracking"); err != nil {
		return nil, err
	}
	if e.PrimaryDB, err = openDB(e.PrimaryDBURL, 40); err != nil {
		return nil, err
	}
	e.closers = append(e.closers, func() { e.PrimaryDB.Close() })
	if e.TrackingDB, err = openDB(e.TrackingURL, 40); err != nil {
		return nil, err
	}
	e.closers = append(e.closers, func() { e.TrackingDB.Close() })
	if err := registry.MigratePrimary(ctx, e.PrimaryDB); err != nil {
		return nil, fmt.Errorf("migrate primary: %w", err)
	}
	if err := registry.MigrateTracking(ctx, e.TrackingDB); err != nil {
		return nil, fmt.Errorf("migrate tracking: %w", err)
	}
	if _, err := e.PrimaryDB.ExecContext(ctx, testtype.Schema(typeTable)); err != nil {
		return nil, fmt.Errorf("items table: %w", err)
	}

	e.PrimaryRoot = filepath.Join(e.Dir, "primary")
	e.SecondaryRoot = filepath.Join(e.Dir, "secondary")
	primaryDir, err := dirblob.New(e.PrimaryRoot)
	if err != nil {
		return nil, err
	}
	// Every blob the application commits is recorded (its SHA-256), for
	// the read-backs of the disk-errors scenario.
	e.PrimaryStorage = blob.NewBucket(&recordingStorage{Dir: primaryDir, log: e.contents})
	if err != nil {
		return nil, err
	}
	e.closers = append(e.closers, func() { e.PrimaryStorage.Close() })
	if err := os.MkdirAll(e.SecondaryRoot, 0o755); err != nil {
		return nil, err
	}

	e.Type = &testtype.Type{TypeName: typeName, Table: typeTable, DB: e.PrimaryDB}
	set := replicator.NewSet()
	if err := set.Register(e.Type); err != nil {
		return nil, err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	e.Credentials = transfer.Credentials{Site: "chaos-secondary", AccessKey: "geochaos", Secret: secret}
	e.Transfers = &transferLog{}
	e.Primary, err = replicator.NewPrimary(replicator.PrimaryConfig{
		Strategies: set, DB: e.PrimaryDB, Storage: e.PrimaryStorage,
		Secrets: transfer.NewStaticSecrets(e.Credentials), Logger: e.log.Named("primary"),
		Observer: e.Transfers, PollInterval: 200 * time.Millisecond,
		ConsistencyInterval: 5 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	var h http.Handler = e.Primary.Handler()
	if cfg.wrapPrimaryHandler != nil {
		h = cfg.wrapPrimaryHandler(h)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	e.closers = append(e.closers, func() { srv.Close() })
	e.PrimaryURL = "http://" + ln.Addr().String()

	// Primary verification keeps geo_checksums, which the secondary
	// compares downloads and copies with (R6).
	pctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = e.Primary.Run(pctx) }()
	e.closers = append(e.closers, func() { cancel(); <-done })

	e.App = &testtype.App{Type: e.Type, Storage: e.PrimaryStorage, Publisher: e.Primary.Publisher()}
	return e, nil
}

// close stops everything newEnv started, in reverse order.
func (e *env) close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
	e.closers = nil
}

// createDB creates database name on c and returns its URL.
func createDB(ctx context.Context, c *pgtest.Cluster, name string) (string, error) {
	admin, err := openDB(c.URL("postgres"), 2)
	if err != nil {
		return "", err
	}
	defer admin.Close()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name+" TEMPLATE template0"); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return c.URL(name), nil
}

// openDB opens a lib/pq handle with up to conns connections and checks it.
func openDB(u string, conns int) (*sqlx.DB, error) {
	db, err := sqlx.Open("postgres", u)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect: %w", err)
	}
	return db, nil
}

// secondaryStrategy is the secondary's adapter: the same items table, read
// through the secondary's handle on the primary database.
func (e *env) secondaryStrategy() strategy.BlobStrategy {
	return &testtype.Type{TypeName: typeName, Table: typeTable, DB: e.PrimaryDB}
}

// secondaryConfig is an in-process secondary's configuration, tuned for
// bounded campaigns: short lease, fast polling and a fast retry policy
// (production defaults are 30s leases and 10s..1h backoff).
func (e *env) secondaryConfig(storage *blob.Bucket) replicator.SecondaryConfig {
	set := replicator.NewSet()
	set.MustRegister(e.secondaryStrategy())
	return replicator.SecondaryConfig{
		Strategies: set, Tracking: e.TrackingDB, Primary: e.PrimaryDB,
		PrimaryURL: e.PrimaryURL, Credentials: e.Credentials, Storage: storage,
		Logger:       e.log.Named("secondary"),
		PollInterval: 100 * time.Millisecond, EventPollInterval: 50 * time.Millisecond,
		Lease: 2 * time.Second, ShutdownGrace: 3 * time.Second, TransferTimeout: 5 * time.Second,
		SyncCapacityPerType: 16,
		Retry:               fastRetry(),
	}
}

// fastRetry is the campaigns' retry policy: the production shape
// (exponential, 25% jitter, capped) at a scale a bounded run can wait for.
func fastRetry() strategy.Backoff {
	return strategy.Backoff{Base: 100 * time.Millisecond, Max: 2 * time.Second, MaxMissing: 2 * time.Second}
}

// running is an in-process secondary running in the background.
type running struct {
	*replicator.Secondary
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

func startSecondary(cfg replicator.SecondaryConfig) (*running, error) {
	sec, err := replicator.NewSecondary(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Secondary: sec, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- sec.Run(ctx) }()
	return r, nil
}

// stop ends the secondary gracefully and returns Run's error. It may be
// called more than once.
func (r *running) stop() error {
	r.once.Do(func() {
		r.cancel()
		r.err = <-r.done
	})
	return r.err
}

// sites is what geotest.CompareSites compares for this env.
func (e *env) sites() (geotest.Sites, func(), error) {
	sec, err := dirblob.Open(e.SecondaryRoot)
	if err != nil {
		return geotest.Sites{}, nil, err
	}
	return geotest.Sites{Tracking: e.TrackingDB, PrimaryStorage: e.PrimaryStorage, SecondaryStorage: sec, SecondaryRoot: e.SecondaryRoot},
		func() { sec.Close() }, nil
}

// compare is the exact comparison of the secondary with the primary.
func (e *env) compare(ctx context.Context) (geotest.Diff, error) {
	s, closeFn, err := e.sites()
	if err != nil {
		return geotest.Diff{}, err
	}
	defer closeFn()
	return geotest.CompareSites(ctx, s, e.secondaryStrategy())
}

// quickDone is a cheap convergence pre-check (counts only): every record
// on the primary has a synced row and there is no other row.
func (e *env) quickDone(ctx context.Context) (bool, string) {
	var onPrimary, synced, total int64
	if err := e.PrimaryDB.GetContext(ctx, &onPrimary, `SELECT count(*) FROM `+typeTable); err != nil {
		return false, err.Error()
	}
	if err := e.TrackingDB.QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE state = 2), count(*) FROM geo_registry`).Scan(&synced, &total); err != nil {
		return false, err.Error()
	}
	if synced == onPrimary && total == onPrimary {
		return true, ""
	}
	return false, fmt.Sprintf("%d on primary, %d rows, %d synced", onPrimary, total, synced)
}

// waitConverged polls until the secondary is an exact copy of the primary
// or timeout passes, and returns the last comparison and how long it took.
func (e *env) waitConverged(ctx context.Context, timeout time.Duration) (geotest.Diff, time.Duration, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	var last geotest.Diff
	lastWhy := ""
	for {
		if ok, why := e.quickDone(ctx); ok {
			d, err := e.compare(ctx)
			if err != nil {
				return d, time.Since(start), err
			}
			if d.OK() {
				return d, time.Since(start), nil
			}
			last, lastWhy = d, d.String()
		} else {
			lastWhy = why
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			d, err := e.compare(ctx)
			if err != nil {
				return last, time.Since(start), err
			}
			return d, time.Since(start), fmt.Errorf("not converged within %v: %s; exact comparison: %s", timeout, lastWhy, d)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// summary prints the campaign's one-line result and returns an error when
// the secondary is not an exact copy.
func summary(w io.Writer, scenario string, d geotest.Diff, converge time.Duration) error {
	fmt.Fprintf(w, "chaos %s records=%d lost=%d corrupted=%d stuck=%d extra=%d converge_s=%.1f\n",
		scenario, d.Records, d.Lost, d.Corrupted, d.Stuck, d.Extra, converge.Seconds())
	if !d.OK() {
		return fmt.Errorf("%s: secondary differs from primary: %s", scenario, d)
	}

	return nil
}

// contentLog remembers the SHA-256 of everything the primary application
// wrote at each key (keys are versioned, so a key's bytes never change
// while it exists): the reference a scenario checks secondary files with.
type contentLog struct {
	mu  sync.Mutex
	sha map[string]string
}

func newContentLog() *contentLog { return &contentLog{sha: map[string]string{}} }

func (c *contentLog) set(key, sum string) {
	c.mu.Lock()
	c.sha[key] = sum
	c.mu.Unlock()
}

// get returns the SHA-256 last written at key.
func (c *contentLog) get(key string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.sha[key]
	return s, ok
}

// recordingStorage is the primary's storage backend, noting the SHA-256
// of every committed blob in a contentLog.
type recordingStorage struct {
	*dirblob.Dir
	log *contentLog
}

func (s *recordingStorage) NewWriter(ctx context.Context, key string, opts *driver.WriterOptions) (driver.Writer, error) {
	w, err := s.Dir.NewWriter(ctx, key, opts)
	if err != nil {
		return nil, err
	}
	return &recordingWriter{Writer: w, key: key, log: s.log, h: sha256.New()}, nil
}

type recordingWriter struct {
	driver.Writer
	key string
	log *contentLog
	h   hash.Hash
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	n, err := w.Writer.Write(p)
	w.h.Write(p[:n])
	return n, err
}

func (w *recordingWriter) Commit(ctx context.Context) error {
	if err := w.Writer.Commit(ctx); err != nil {
		return err
	}
	w.log.set(w.key, hex.EncodeToString(w.h.Sum(nil)))
	return nil
}

// payload makes a blob of mixed size from r: mostly small, some medium, a
// few of a megabyte or more.
func payload(r *mrand.Rand, large bool) []byte {
	var n int
	switch p := r.IntN(100); {
	case p < 70:
		n = 256 + r.IntN(16<<10)
	case p < 97:
		n = 16<<10 + r.IntN(240<<10)
	default:
		n = 256 << 10
		if large {
			n = 1<<20 + r.IntN(1<<20)
		}
	}
	b := make([]byte, n)
	var seed [32]byte
	for i := range seed {
		seed[i] = byte(r.Uint32())
	}
	mrand.NewChaCha8(seed).Read(b)
	return b
}

// shaHex is the lowercase hex SHA-256 of b.
func shaHex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// retryOp runs op until it succeeds, done says its error means it is
// done anyway, or ctx ends (the application keeps trying through database
// restarts).
func retryOp(ctx context.Context, op func() error, done func(error) bool) error {
	for {
		err := op()
		if err == nil || (done != nil && done(err)) {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stats is a small distribution summary.
func stats(v []int) string {
	if len(v) == 0 {
		return "n=0"
	}
	s := append([]int(nil), v...)
	sort.Ints(s)
	sum := 0
	for _, x := range s {
		sum += x
	}
	pct := func(p float64) int { return s[min(len(s)-1, int(p*float64(len(s))))] }
	return fmt.Sprintf("n=%d mean=%.2f p50=%d p90=%d p99=%d max=%d", len(s), float64(sum)/float64(len(s)), pct(0.5), pct(0.9), pct(0.99), s[len(s)-1])
}

// countReasons groups failure reasons by their kind, for the report.
func countReasons(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s=%d", k, m[k])
	}
	return b.String()
}

// transferLog records every transfer the primary served, to look for a
// record transferred twice at the same time.
type transferLog struct {
	replicator.NopObserver
	mu   sync.Mutex
	list []served
}

// served is one served transfer.
type served struct {
	ID         int64
	Start, End time.Time
	Bytes      int64
}

// TransferServed implements replicator.Observer: it records t.
func (l *transferLog) TransferServed(t replicator.TransferEvent) {
	l.mu.Lock()
	l.list = append(l.list, served{t.ModelID, t.Start, t.End, t.Bytes})
	l.mu.Unlock()
}

// all returns the transfers so far.
func (l *transferLog) all() []served {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]served(nil), l.list...)
}

// overlaps returns the ids of records that were served twice at once, and
// how many transfers were looked at.
func (l *transferLog) overlaps() (ids []int64, n int) {
	by := map[int64][]served{}
	all := l.all()
	for _, t := range all {
		by[t.ID] = append(by[t.ID], t)
	}
	for id, ts := range by {
		sort.Slice(ts, func(i, j int) bool { return ts[i].Start.Before(ts[j].Start) })
		maxEnd := ts[0].End
		for _, t := range ts[1:] {
			if t.Start.Before(maxEnd) {
				ids = append(ids, id)
				break
			}
			if t.End.After(maxEnd) {
				maxEnd = t.End
			}
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids, len(all)
}

// seededEnv starts an env for scenario name (the caller closes it) and
// seeds the primary with n items through a workload, logging it; large
// mixes in bigger blobs (see workload.seed). On error the env is closed.
func seededEnv(ctx context.Context, o options, name string, cfg envConfig, n int, large bool) (*env, *workload, error) {
	e, err := newEnv(ctx, o, cfg)
	if err != nil {
		return nil, nil, err
	}
	w := newWorkload(e, o.seed)
	what := "items"
	if large {
		what = "items of mixed sizes"
	}
	o.logf(name, "primary: seeding %d %s", n, what)
	if err := w.seed(ctx, n, large); err != nil {
		e.close()
		return nil, nil, err
	}
	return e, w, nil
}
