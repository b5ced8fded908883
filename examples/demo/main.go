// Command demo runs geo end to end on this machine: a throwaway PostgreSQL
// (or the databases named by flags), a primary holding a few thousand
// package files of mixed sizes, and a secondary that backfills them while
// the primary keeps creating, updating and deleting files. It shows live
// progress, then checks every file byte for byte and exits 0 only if the
// secondary is an exact copy of the primary.
//
//	go run ./examples/demo            # or: make demo
//	go run ./examples/demo -n 500 -timeout 30s
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/geoframework/geo/blob/dirblob"
	"github.com/geoframework/geo/examples/packagefile"
	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/geotest/pgtest"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/replicator/transfer"
	"github.com/geoframework/geo/replicator/ui"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

type options struct {
	n          int
	churn      int
	timeout    time.Duration
	primaryURL string
	trackURL   string
	verbose    bool
	keep       bool
}

func run() error {
	var o options
	flag.IntVar(&o.n, "n", 1000, "package files on the primary before the secondary starts")
	flag.IntVar(&o.churn, "churn", 100, "files created, updated and deleted (each) while the secondary runs")
	flag.DurationVar(&o.timeout, "timeout", time.Minute, "give up if the secondary has not converged by then")
	flag.BoolVar(&o.keep, "keep", false, "after the check, keep both sites and the status page running until Ctrl-C, and leave the PostgreSQL cluster running after that, printing what to try")
	flag.StringVar(&o.primaryURL, "primary-db", os.Getenv("GEO_DEMO_PRIMARY_URL"), "primary database URL (default: a throwaway cluster)")
	flag.StringVar(&o.trackURL, "tracking-db", os.Getenv("GEO_DEMO_TRACKING_URL"), "secondary tracking database URL (default: a throwaway cluster)")
	flag.BoolVar(&o.verbose, "v", false, "log the engines' debug output to stderr")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	began := time.Now()

	primaryURL, trackURL := o.primaryURL, o.trackURL
	var cluster *pgtest.Cluster
	if primaryURL == "" || trackURL == "" {
		fmt.Println("starting a throwaway PostgreSQL cluster (initdb + pg_ctl)...")
		c, err := pgtest.StartCluster(ctx, pgtest.Options{})
		if err != nil {
			return err
		}
		cluster = c
		defer func() {
			if !o.keep {
				c.Stop()
			}
		}()
		admin, err := sqlx.Open("postgres", c.URL("postgres"))
		if err != nil {
			return err
		}
		for _, db := range []string{"geo_primary", "geo_secondary"} {
			if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+db); err != nil {
				admin.Close()
				return fmt.Errorf("create database %s: %w", db, err)
			}
		}
		admin.Close()
		primaryURL, trackURL = c.URL("geo_primary"), c.URL("geo_secondary")
	}
	primaryDB, err := openDB(primaryURL)
	if err != nil {
		return err
	}
	defer primaryDB.Close()
	trackDB, err := openDB(trackURL)
	if err != nil {
		return err
	}
	defer trackDB.Close()
	if err := registry.MigratePrimary(ctx, primaryDB); err != nil {
		return err
	}
	if err := registry.MigrateTracking(ctx, trackDB); err != nil {
		return err
	}
	if err := packagefile.CreateSchema(ctx, primaryDB); err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "geo-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	primaryStore, err := dirblob.Open(filepath.Join(dir, "primary"))
	if err != nil {
		return err
	}
	defer primaryStore.Close()
	secondaryRoot := filepath.Join(dir, "secondary")
	secondaryStore, err := dirblob.Open(secondaryRoot)
	if err != nil {
		return err
	}
	defer secondaryStore.Close()

	logger := zap.NewNop()
	if o.verbose {
		logger, _ = zap.NewDevelopment()
	}

	// --- the primary site ---
	pset := replicator.NewSet()
	pset.MustRegister(&packagefile.Strategy{DB: primaryDB})
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	creds := transfer.Credentials{Site: "demo-secondary", AccessKey: "demo", Secret: secret}
	primary, err := replicator.NewPrimary(replicator.PrimaryConfig{
		Strategies: pset, DB: primaryDB, Storage: primaryStore,
		Secrets: transfer.NewStaticSecrets(creds), Logger: logger.Named("primary"),
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: primary.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	// The primary's background work: checksums of every file
	// (verification), outbox retention.
	primaryCtx, stopPrimary := context.WithCancel(ctx)
	defer stopPrimary()
	go primary.Run(primaryCtx)
	app := &packagefile.App{DB: primaryDB, Storage: primaryStore, Publisher: primary.Publisher(), Adapter: &packagefile.Strategy{DB: primaryDB}}

	fmt.Printf("primary: creating %d package files of mixed sizes...\n", o.n)
	total, err := seed(ctx, app, o.n)
	if err != nil {
		return err
	}
	fmt.Printf("primary: %d files, %.1f MiB in %.1fs, served at http://%s\n", o.n, float64(total)/(1<<20), time.Since(began).Seconds(), ln.Addr())
	syncStart := time.Now()

	// --- the secondary site ---
	sset := replicator.NewSet()
	secStrategy := &packagefile.Strategy{DB: primaryDB} // in production: a streaming replica
	sset.MustRegister(secStrategy)
	secCfg := replicator.SecondaryConfig{
		Strategies: sset, Tracking: trackDB, Primary: primaryDB,
		PrimaryURL: "http://" + ln.Addr().String(), Credentials: creds, Storage: secondaryStore,
		Logger: logger.Named("secondary"), SyncCapacityPerType: 16,
		PollInterval: 200 * time.Millisecond, EventPollInterval: 100 * time.Millisecond,
		ChecksumWait: 2 * time.Second, // re-check soon for checksums the primary is still computing
	}
	sec, err := replicator.NewSecondary(secCfg)
	if err != nil {
		return err
	}
	// The web status page (replicator/ui), read-only, on loopback.
	page, err := ui.New(ui.Config{Tracking: trackDB, Primary: primaryDB, ReadOnly: true, Title: "geo demo"})
	if err != nil {
		return err
	}
	pageLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	pageSrv := &http.Server{Handler: page, ReadHeaderTimeout: 10 * time.Second}
	go pageSrv.Serve(pageLn)
	defer pageSrv.Close()
	runCtx, cancelRun := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- sec.Run(runCtx) }()
	fmt.Println("secondary: started (backfill of existing files, events for new ones)")
	fmt.Printf("secondary: status page at http://%s/\n", pageLn.Addr())

	// --- the application keeps working while the secondary catches up ---
	churnDone := make(chan error, 1)
	go func() { churnDone <- churn(ctx, app, o) }()

	sites := geotest.Sites{Tracking: trackDB, PrimaryStorage: primaryStore, SecondaryStorage: secondaryStore, SecondaryRoot: secondaryRoot}
	deadline := time.Now().Add(o.timeout)
	tty := isTerminal()
	var churnErr error
	churning := true
	var diff geotest.Diff
	for {
		select {
		case <-ctx.Done():
			cancelRun()
			return ctx.Err()
		case churnErr = <-churnDone:
			churning = false
			if churnErr != nil {
				cancelRun()
				return fmt.Errorf("application churn: %w", churnErr)
			}
			fmt.Printf("\nprimary: churn finished (%d created, %d updated, %d deleted) after %.1fs\n", o.churn, o.churn, o.churn, time.Since(syncStart).Seconds())
		case <-time.After(500 * time.Millisecond):
		}
		line, err := progressLine(ctx, sec, primaryDB)
		if err != nil {
			cancelRun()
			return err
		}
		if tty {
			fmt.Printf("\r%s", line)
		} else {
			fmt.Println(line)
		}
		if !churning {
			diff, err = geotest.CompareSites(ctx, sites, secStrategy)
			if err != nil {
				cancelRun()
				return err
			}
			if diff.OK() {
				break
			}
		}
		if time.Now().After(deadline) {
			break
		}
	}
	converged := diff.OK() && !churning
	if churning {
		// Out of time with the application still writing: let it finish so
		// the final check compares a quiet primary.
		if err := <-churnDone; err != nil {
			cancelRun()
			return fmt.Errorf("application churn: %w", err)
		}
	}
	if converged {
		if err := readThrough(ctx, app, sec, primaryDB); err != nil {
			cancelRun()
			return fmt.Errorf("read on the secondary: %w", err)
		}
	}
	cancelRun()
	if err := <-runErr; err != nil {
		return fmt.Errorf("secondary: %w", err)
	}
	fmt.Println()
	if !converged {
		fmt.Printf("the secondary had not converged after %v\n", o.timeout)
	}
	printStatus(ctx, trackDB)
	// The final check: every file byte for byte, nothing extra, no temp files.
	diff, err = geotest.CompareSites(ctx, sites, secStrategy)
	if err != nil {
		return err
	}
	fmt.Printf("\ncheck: %s\n", diff)
	if !diff.OK() {
		return errors.New("the secondary is NOT an exact copy of the primary")
	}
	fmt.Printf("OK: the secondary is an exact copy of the primary (%d files, checked byte for byte by SHA-256); replication took %.1fs, the whole demo %.1fs\n",
		diff.Records, time.Since(syncStart).Seconds(), time.Since(began).Seconds())
	if o.keep {
		return keepRunning(ctx, cluster, trackURL, primaryURL, pageLn.Addr().String(), secCfg)
	}
	fmt.Println("Next: go run ./examples/demo -keep   (keeps both sites and the status page up, to try geoctl and the page)")
	return nil
}

// seed creates n package files through the application's code path, four
// at a time, and returns their total size.
func seed(ctx context.Context, app *packagefile.App, n int) (int64, error) {
	var total atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for i := 0; i < n; i++ {
		g.Go(func() error {
			data := payload(i)
			total.Add(int64(len(data)))
			_, err := app.AddFile(gctx, int64(1+i%7), fmt.Sprintf("pkg-%d", i%400), fmt.Sprintf("1.%d.0", i%5), fmt.Sprintf("file-%d.tgz", i), data)
			return err
		})
	}
	err := g.Wait()
	return total.Load(), err
}

// keepRunning runs a secondary process again (a new one, as after a
// restart) and keeps the status page up until Ctrl-C, after printing what
// to try; the PostgreSQL cluster is left running after that.
func keepRunning(ctx context.Context, cluster *pgtest.Cluster, trackURL, primaryURL, page string, cfg replicator.SecondaryConfig) error {
	sec, err := replicator.NewSecondary(cfg)
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- sec.Run(runCtx) }()
	fmt.Printf("\nkept running (Ctrl-C to stop). Try:\n")
	fmt.Printf("  go run ./cmd/geoctl --database-url '%s' status\n", trackURL)
	fmt.Printf("  go run ./cmd/geoctl --database-url '%s' failures\n", trackURL)
	fmt.Printf("  go run ./cmd/geoctl --database-url '%s' ui --primary-database-url '%s'\n", trackURL, primaryURL)
	fmt.Printf("  the status page: http://%s/\n", page)
	<-ctx.Done()
	cancel()
	err = <-done
	if cluster != nil {
		stop := cluster.Command(context.Background(), "pg_ctl", "-D", cluster.DataDir(), "-m", "fast", "stop")
		fmt.Printf("\nthe PostgreSQL cluster is still running (data in %s); stop it with:\n  %s\n", cluster.DataDir(), strings.Join(stop.Args, " "))
	}
	return err
}

func openDB(url string) (*sqlx.DB, error) {
	db, err := sqlx.Open("postgres", url)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(50)
	db.SetMaxIdleConns(50)
	return db, db.Ping()
}

// payload makes file i: mostly small files (70%: 512 B to 16 KiB), some
// medium (27%: 16 to 128 KiB), a few large (3%: 512 KiB to 1.5 MiB),
// about 55 KiB on average. The bytes come from a ChaCha8 stream seeded by
// i, so a file's bytes depend on i alone.
func payload(i int) []byte {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], uint64(i))
	r := mrand.NewChaCha8(seed)
	rn := mrand.New(r)
	var n int
	switch p := rn.IntN(100); {
	case p < 70:
		n = 512 + rn.IntN(16<<10)
	case p < 97:
		n = 16<<10 + rn.IntN(112<<10)
	default:
		n = 512<<10 + rn.IntN(1<<20)
	}
	b := make([]byte, n)
	_, _ = r.Read(b)
	return b
}

// churn creates, updates and deletes files on the primary, through the
// application's code paths (which publish events), while the secondary runs.
func churn(ctx context.Context, app *packagefile.App, o options) error {
	for i := 0; i < o.churn; i++ {
		_, err := app.AddFile(ctx, 3, "fresh", "2.0.0", fmt.Sprintf("fresh-%d.tgz", i), payload(o.n+i))
		if err != nil {
			return err
		}
		// Updates and deletes hit the pre-existing files: 1..o.n.
		if err := app.ReplaceFile(ctx, int64(1+2*i), payload(10*o.n+i)); err != nil {
			return err
		}
		if err := app.DeleteFile(ctx, int64(2+2*i)); err != nil {
			return err
		}
		time.Sleep(2 * time.Millisecond) // a steady stream, not one burst
	}
	return nil
}

func progressLine(ctx context.Context, sec *replicator.Secondary, primaryDB *sqlx.DB) (string, error) {
	counts, err := sec.Store().Counts(ctx)
	if err != nil {
		return "", err
	}
	var onPrimary int64
	if err := primaryDB.GetContext(ctx, &onPrimary, `SELECT count(*) FROM package_files`); err != nil {
		return "", err
	}
	c := counts["package_file"]
	st := sec.EventStats()
	// The counts and the primary's total are read a moment apart and the
	// application keeps changing files: rows of files deleted a moment ago
	// may still be synced, and a verification may be counted before its
	// sync. The line shows what a newcomer can trust: synced files of the
	// primary's (never more), verified copies among the synced, the rows
	// still to do, and 100% only when nothing is left to do.
	synced := min(c.Synced, onPrimary)
	verified := min(c.VerificationSucceeded, synced)
	todo := c.Pending + c.Started
	pct := 0
	if onPrimary > 0 {
		pct = int(100 * synced / onPrimary) // floor: 99.9% is not done
	}
	if pct == 100 && (todo > 0 || c.Failed > 0) {
		pct = 99
	}
	return fmt.Sprintf("package_file %s %3d%%  synced %5d of %-5d  verified %5d  to do %5d  failed %3d  event lag %.2fs",
		bar(synced, onPrimary, 24), pct, synced, onPrimary, verified, todo, c.Failed, st.LagSeconds), nil
}

func bar(done, total int64, width int) string {
	if total <= 0 {
		return "[" + strings.Repeat(" ", width) + "]"
	}
	f := math.Min(1, float64(done)/float64(total))
	n := int(f * float64(width))
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "]"
}

func printStatus(ctx context.Context, tracking *sqlx.DB) {
	store, _ := registry.NewStore(tracking, registry.Options{})
	counts, err := store.Counts(ctx)
	if err != nil {
		fmt.Println("status:", err)
		return
	}
	fmt.Printf("%-14s %8s %8s %8s %8s %8s %10s %10s\n", "TYPE", "TOTAL", "SYNCED", "PENDING", "STARTED", "FAILED", "VERIFIED", "MISMATCH")
	for name, c := range counts {
		fmt.Printf("%-14s %8d %8d %8d %8d %8d %10d %10d\n", name, c.Total, c.Synced, c.Pending, c.Started, c.Failed, c.VerificationSucceeded, c.ChecksumMismatch)
	}
}

func isTerminal() bool {
	fi, err := os.Stdout.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

var _ = io.EOF
