package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	"go.uber.org/zap"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/blob/dirblob"
	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/geotest/pgtest"
	"github.com/geoframework/geo/internal/testtype"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/replicator/transfer"
)

// Names of the benchmark's blob type.
const (
	typeName  = "bench_item"
	typeTable = "bench_items"
)

// bench is one run's two sites on loopback, wired from the same pieces as
// geotest's World: a primary database (migrated, with the items table), a
// tracking database, primary and secondary storage roots, and the
// primary's transfer endpoint on 127.0.0.1.
type bench struct {
	o      options
	stderr io.Writer

	cluster  *pgtest.Cluster // nil with -url
	admin    *sqlx.DB
	dbNames  []string
	serverDB string // base URL of the server

	primaryURL, trackingURL string
	primaryDB, trackingDB   *sqlx.DB

	dir           string
	removeDir     bool
	primaryRoot   string
	secondaryRoot string
	primaryStore  *blob.Bucket
	secondStore   *blob.Bucket
	s3            *s3Site // -storage s3: the secondary's bucket

	typ     *testtype.Type
	creds   transfer.Credentials
	primary *replicator.Primary
	srv     *http.Server
	baseURL string

	closers []func() error
}

func newBench(ctx context.Context, o options, stderr io.Writer) (_ *bench, err error) {
	// b, not a named result: every "return nil, err" below sets the result
	// to nil, and the cleanup must still see what was started.
	b := &bench{o: o, stderr: stderr}
	defer func() {
		if err != nil {
			_ = b.close()
		}
	}()
	if o.url != "" {
		b.serverDB = o.url
	} else {
		b.logf("starting a throwaway PostgreSQL cluster (durable=%v)", o.durable)
		c, err := pgtest.StartCluster(ctx, pgtest.Options{Durable: o.durable})
		if errors.Is(err, pgtest.ErrUnreachable) {
			return nil, fmt.Errorf("%w; or pass -url to use an existing server", err)
		}
		if err != nil {
			return nil, err
		}
		b.cluster = c
		b.serverDB = c.URL("postgres")
	}
	if b.admin, err = open(b.serverDB, 2); err != nil {
		return nil, err
	}
	if b.primaryURL, err = b.createDB(ctx, "primary"); err != nil {
		return nil, err
	}
	if b.trackingURL, err = b.createDB(ctx, "tracking"); err != nil {
		return nil, err
	}
	if b.primaryDB, err = open(b.primaryURL, 40); err != nil {
		return nil, err
	}
	if b.trackingDB, err = open(b.trackingURL, 40); err != nil {
		return nil, err
	}
	if err := registry.MigratePrimary(ctx, b.primaryDB); err != nil {
		return nil, err
	}
	if err := registry.MigrateTracking(ctx, b.trackingDB); err != nil {
		return nil, err
	}
	if _, err := b.primaryDB.ExecContext(ctx, testtype.Schema(typeTable)); err != nil {
		return nil, err
	}

	b.dir = o.dir
	if b.dir == "" {
		if b.dir, err = os.MkdirTemp("", "geobench-"); err != nil {
			return nil, err
		}
		b.removeDir = true
	}
	b.primaryRoot = filepath.Join(b.dir, "primary")
	b.secondaryRoot = filepath.Join(b.dir, "secondary")
	if b.primaryStore, err = dirblob.Open(b.primaryRoot); err != nil {
		return nil, err
	}
	if o.storage == storageS3 {
		b.logf("starting a throwaway versitygw for the secondary's storage")
		if b.s3, err = startS3(ctx); err != nil {
			return nil, err
		}
		if b.secondStore, err = b.s3.open(ctx); err != nil {
			return nil, err
		}
	} else if b.secondStore, err = dirblob.Open(b.secondaryRoot); err != nil {
		return nil, err
	}

	b.typ = &testtype.Type{TypeName: typeName, Table: typeTable, DB: b.primaryDB}
	set := replicator.NewSet()
	if err := set.Register(b.typ); err != nil {
		return nil, err
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	b.creds = transfer.Credentials{Site: "bench-secondary", AccessKey: "geobench", Secret: secret}
	b.primary, err = replicator.NewPrimary(replicator.PrimaryConfig{
		Strategies: set, DB: b.primaryDB, Storage: b.primaryStore, Secrets: transfer.NewStaticSecrets(b.creds),
	})
	if err != nil {
		return nil, err
	}
	b.baseURL, b.srv, err = serve(b.primary.Handler())
	if err != nil {
		return nil, err
	}
	return b, nil
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.stderr, "geobench: "+format+"\n", args...)
}

// open opens a lib/pq handle with up to conns connections.
func open(u string, conns int) (*sqlx.DB, error) {
	db, err := sqlx.Open("postgres", u)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	return db, nil
}

// createDB creates a fresh database and returns its URL (with
// binary_parameters=yes unless -binary=false).
func (b *bench) createDB(ctx context.Context, role string) (string, error) {
	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix)
	name := fmt.Sprintf("geobench_%s_%d_%s", role, os.Getpid(), hex.EncodeToString(suffix))
	if _, err := b.admin.ExecContext(ctx, `CREATE DATABASE `+name+` TEMPLATE template0`); err != nil {
		return "", fmt.Errorf("create database: %w", err)
	}
	b.dbNames = append(b.dbNames, name)
	u, err := url.Parse(b.serverDB)
	if err != nil {
		return "", fmt.Errorf("parse -url: %w", err)
	}
	u.Path = "/" + name
	if b.o.binary {
		q := u.Query()
		q.Set("binary_parameters", "yes")
		u.RawQuery = q.Encode()
	}
	return u.String(), nil
}

// serve serves h on a fresh 127.0.0.1 port and returns its base URL.
func serve(h http.Handler) (string, *http.Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), srv, nil
}

func (b *bench) close() error {
	var errs []error
	for i := len(b.closers) - 1; i >= 0; i-- {
		errs = append(errs, b.closers[i]())
	}
	if b.srv != nil {
		errs = append(errs, b.srv.Close())
	}
	for _, st := range []*blob.Bucket{b.primaryStore, b.secondStore} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	for _, db := range []*sqlx.DB{b.primaryDB, b.trackingDB} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	if b.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		for _, name := range b.dbNames {
			if _, err := b.admin.ExecContext(ctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil {
				errs = append(errs, err)
			}
		}
		cancel()
		errs = append(errs, b.admin.Close())
	}
	if b.cluster != nil {
		errs = append(errs, b.cluster.Stop())
	}
	if b.s3 != nil {
		errs = append(errs, b.s3.gw.Stop())
	}
	if b.removeDir {
		errs = append(errs, os.RemoveAll(b.dir))
	}
	return errors.Join(errs...)
}

// secondaryConfig is a secondary of this bench with geo's defaults, except
// what a scenario changes. -concurrency sets SyncCapacityPerType.
func (b *bench) secondaryConfig(obs replicator.Observer) replicator.SecondaryConfig {
	set := replicator.NewSet()
	set.MustRegister(&testtype.Type{TypeName: typeName, Table: typeTable, DB: b.primaryDB})
	log := zap.NewNop()
	if b.o.verbose {
		log, _ = zap.NewDevelopment(zap.IncreaseLevel(zap.WarnLevel))
	}
	return replicator.SecondaryConfig{
		Strategies: set, Tracking: b.trackingDB, Primary: b.primaryDB,
		PrimaryURL: b.baseURL, Credentials: b.creds, Storage: b.secondStore,
		Logger: log, Observer: obs, SyncCapacityPerType: b.o.concurrency,
		BackfillBatchSize: b.o.batch,
	}
}

// running is a secondary running in the background.
type running struct {
	sec    *replicator.Secondary
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// start runs a secondary built from cfg until stop.
func (b *bench) start(cfg replicator.SecondaryConfig) (*running, error) {
	sec, err := replicator.NewSecondary(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{sec: sec, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- sec.Run(ctx) }()
	b.closers = append(b.closers, r.stop)
	return r, nil
}

func (r *running) stop() error {
	r.once.Do(func() {
		r.cancel()
		r.err = <-r.done
	})
	return r.err
}

// counter is an Observer counting sync outcomes; done is closed when the
// number of synced (or skipped) records reaches want.
type counter struct {
	replicator.NopObserver
	want    int64
	synced  atomic.Int64
	failed  atomic.Int64
	other   atomic.Int64
	bytes   atomic.Int64
	done    chan struct{}
	doneAt  atomic.Int64 // unix nanos
	closeMu sync.Once
}

func newCounter(want int) *counter {
	return &counter{want: int64(want), done: make(chan struct{})}
}

func (c *counter) SyncDone(ev replicator.SyncEvent) {
	switch ev.Outcome {
	case replicator.ResultSynced, replicator.ResultSkipped:
		c.bytes.Add(ev.Bytes)
		if c.synced.Add(1) == c.want {
			c.doneAt.Store(time.Now().UnixNano())
			c.closeMu.Do(func() { close(c.done) })
		}
	case replicator.ResultFailed, replicator.ResultMissingOnPrimary:
		c.failed.Add(1)
	default:
		c.other.Add(1)
	}
}

// wait blocks until want records synced (returning when that happened),
// ctx ends, or timeout passes.
func (c *counter) wait(ctx context.Context, timeout time.Duration) (time.Time, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-c.done:
		return time.Unix(0, c.doneAt.Load()), nil
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	case <-t.C:
		return time.Time{}, fmt.Errorf("only %d of %d records synced within %v (%d failed attempts)",
			c.synced.Load(), c.want, timeout, c.failed.Load())
	}
}

// insertItems creates items 1..n on the primary in one statement (no
// events: pre-existing data), with the keys testtype.App would use.
func (b *bench) insertItems(ctx context.Context, n int) error {
	_, err := b.primaryDB.ExecContext(ctx, `
INSERT INTO `+typeTable+` (id, blob_key)
SELECT g, '`+typeTable+`/' || (g % 100) || '/' || g || '-v1' FROM generate_series(1, $1::bigint) g`, n)
	if err != nil {
		return fmt.Errorf("insert items: %w", err)
	}
	_, err = b.primaryDB.ExecContext(ctx, `SELECT setval(pg_get_serial_sequence($1, 'id'), $2)`, typeTable, max(n, 1))
	if err != nil {
		return fmt.Errorf("insert items: %w", err)
	}
	_, err = b.primaryDB.ExecContext(ctx, `VACUUM ANALYZE `+typeTable)
	return err
}

// itemKey is the key insertItems gives item id.
func itemKey(id int64) string {
	return typeTable + "/" + strconv.FormatInt(id%100, 10) + "/" + strconv.FormatInt(id, 10) + "-v1"
}

// app returns the primary application's helpers for the items table.
func (b *bench) app() (*testtype.App, error) {
	pub, err := events.NewPublisher([]string{typeName})
	if err != nil {
		return nil, err
	}
	return &testtype.App{Type: b.typ, Storage: b.primaryStore, Publisher: pub}, nil
}
