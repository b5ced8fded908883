// Package pgtest gives tests a real PostgreSQL server: the one named by the
// GEO_TEST_DATABASE_URL environment variable, or a throwaway cluster started
// with initdb and pg_ctl on a private socket directory and a free loopback
// port, removed again when the tests end.
//
// Each test gets a fresh database of its own (Server.NewDatabase), so tests
// run in parallel without sharing rows. When no server can be had, a test
// fails, under CI and elsewhere, with what to install or set; it is never
// skipped and never passes silently.
//
// pgtest is for tests and benchmarks, not for production use. It depends on
// nothing else in geo, so any package (and any adopter's CI) can use it.
//
// Typical wiring in a package's tests:
//
//	var pg = pgtest.New(pgtest.Options{})
//
//	func TestMain(m *testing.M) { os.Exit(pg.Run(m)) }
//
//	func TestSomething(t *testing.T) {
//		db := pg.NewDatabase(t) // *sqlx.DB on a fresh database
//		...
//	}
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // the PostgreSQL driver geo uses
)

// EnvURL names the environment variable holding the URL of an existing
// PostgreSQL server to use instead of a throwaway cluster. The role needs the
// CREATEDB privilege: every test creates a database of its own.
const EnvURL = "GEO_TEST_DATABASE_URL"

// ErrUnreachable is returned (wrapped) by StartCluster and StartStandby
// when the account the server runs as (the "postgres" user, when the
// process runs as root) cannot reach a directory the server needs: the
// cluster's directory under TMPDIR, or the PostgreSQL binaries. The
// message names the directory, says why (its owner and mode), and what to
// do (set TMPDIR to a directory that account can enter; a Server adds:
// or set GEO_TEST_DATABASE_URL).
var ErrUnreachable = errors.New("pgtest: the PostgreSQL server's account cannot reach a directory it needs")

// Options tunes a throwaway cluster. The zero value is fit for tests.
type Options struct {
	// Durable keeps PostgreSQL's crash-safety settings (fsync,
	// synchronous_commit, full_page_writes). By default they are off, which
	// makes tests several times faster; benchmarks that compare against raw
	// SQL on the same server may set it.
	Durable bool
	// MaxConnections is the server's max_connections; 0 means 300.
	MaxConnections int
	// Settings are extra postgresql.conf lines ("name = value").
	Settings []string
}

// TB is the part of testing.TB that pgtest uses. *testing.T and
// *testing.B satisfy it; so can a test double (geotest's own self-tests run
// the conformance suite through one).
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Skip(args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
}

// Server is a PostgreSQL server for tests: either the one named by
// GEO_TEST_DATABASE_URL or a throwaway cluster started on first use.
// Its methods are safe for concurrent use.
type Server struct {
	opts Options

	once     sync.Once
	startErr error
	adminURL string // URL of the maintenance database
	cluster  *Cluster
	admin    *sqlx.DB

	mu  sync.Mutex
	seq int
}

// New returns a Server that starts (or connects) lazily on first use.
func New(opts Options) *Server { return &Server{opts: opts} }

// Run runs the tests of m and stops the throwaway cluster, if one was
// started, before returning m's exit code. Call it from TestMain.
func (s *Server) Run(m *testing.M) int {
	code := m.Run()
	if err := s.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
	}
	return code
}

// Start connects to GEO_TEST_DATABASE_URL or starts a throwaway cluster. It
// is called by NewDatabase; calling it directly reports the error instead of
// failing a test. Only the first call does any work.
func (s *Server) Start(ctx context.Context) error {
	s.once.Do(func() { s.startErr = s.start(ctx) })
	return s.startErr
}

func (s *Server) start(ctx context.Context) error {
	if u := os.Getenv(EnvURL); u != "" {
		s.adminURL = u
	} else {
		c, err := StartCluster(ctx, s.opts)
		if errors.Is(err, ErrUnreachable) {
			return fmt.Errorf("%w; or set %s to the URL of an existing server", err, EnvURL)
		}
		if err != nil {
			return err
		}
		s.cluster = c
		s.adminURL = c.URL("postgres")
	}
	db, err := sqlx.Open("postgres", s.adminURL)
	if err != nil {
		return fmt.Errorf("pgtest: open %s: %w", redact(s.adminURL), err)
	}
	db.SetMaxOpenConns(4)
	if err := pingUntil(ctx, db, 30*time.Second); err != nil {
		db.Close()
		return fmt.Errorf("pgtest: connect %s: %w", redact(s.adminURL), err)
	}
	s.admin = db
	return nil
}

// Stop closes connections and, for a throwaway cluster, stops the server and
// removes its files. It is safe to call more than once.
func (s *Server) Stop() error {
	var errs []error
	if s.admin != nil {
		errs = append(errs, s.admin.Close())
		s.admin = nil
	}
	if s.cluster != nil {
		errs = append(errs, s.cluster.Stop())
		s.cluster = nil
	}
	return errors.Join(errs...)
}

// Cluster returns the throwaway cluster, or nil when the server came from
// GEO_TEST_DATABASE_URL (or has not started).
func (s *Server) Cluster() *Cluster { return s.cluster }

// require starts the server or fails the test with what to install or set,
// under CI and elsewhere alike: a missing server is never a skip.
func (s *Server) require(tb TB) {
	tb.Helper()
	if err := s.Start(context.Background()); err != nil {
		msg := fmt.Sprintf("pgtest: no PostgreSQL server: %v\n"+
			"fix: install the PostgreSQL server binaries (Debian: apt-get install postgresql) "+
			"so initdb and pg_ctl are on PATH or under /usr/lib/postgresql/*/bin, "+
			"or set %s to the URL of a server where the role may CREATE DATABASE", err, EnvURL)
		if errors.Is(err, ErrUnreachable) {
			msg = fmt.Sprintf("pgtest: no PostgreSQL server: %v", err) // the error says what to fix
		}
		tb.Fatal(msg)
	}
}

// NewDatabaseURL creates a fresh, empty database and returns its URL. The
// database is dropped when the test ends.
func (s *Server) NewDatabaseURL(tb TB) string {
	tb.Helper()
	s.require(tb)
	s.mu.Lock()
	s.seq++
	name := fmt.Sprintf("geotest_%d_%d_%s", os.Getpid(), s.seq, randHex(3))
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := s.admin.ExecContext(ctx, `CREATE DATABASE `+name+` TEMPLATE template0`); err != nil {
		tb.Fatalf("pgtest: create database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// WITH (FORCE) ends sessions a test leaked; the database is scratch.
		if _, err := s.admin.ExecContext(ctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil {
			tb.Logf("pgtest: drop database %s: %v", name, err)
		}
	})
	return withDatabase(s.adminURL, name)
}

// NewDatabase creates a fresh database and returns an open handle to it,
// closed (and the database dropped) when the test ends.
func (s *Server) NewDatabase(tb TB) *sqlx.DB {
	tb.Helper()
	u := s.NewDatabaseURL(tb)
	db, err := sqlx.Open("postgres", u)
	if err != nil {
		tb.Fatalf("pgtest: open: %v", err)
	}
	db.SetMaxOpenConns(40)
	db.SetMaxIdleConns(40)
	tb.Cleanup(func() { db.Close() }) // registered after the drop: runs first
	return db
}

// Cluster is a throwaway PostgreSQL cluster in a temporary directory.
type Cluster struct {
	Dir     string // data, socket and log live below Dir
	Port    int
	Host    string // 127.0.0.1
	binDir  string
	runAs   *user.User // nil: run as the current user
	dataDir string
	logFile string
}

// StartCluster runs initdb and pg_ctl start for a new cluster on a free
// loopback port. When the process runs as root, the server runs as the
// "postgres" system user, since PostgreSQL refuses to run as root.
func StartCluster(ctx context.Context, opts Options) (*Cluster, error) {
	bin, err := findBinDir()
	if err != nil {
		return nil, err
	}
	c := &Cluster{Host: "127.0.0.1", binDir: bin}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("pgtest: running as root needs a \"postgres\" system user to run the server as: %w", err)
		}
		c.runAs = u
	}
	dir, err := os.MkdirTemp("", "geo-pgtest-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	c.Dir = dir
	c.dataDir = filepath.Join(dir, "data")
	c.logFile = filepath.Join(dir, "server.log")
	sock := filepath.Join(dir, "sock")
	if err := os.Mkdir(sock, 0o700); err != nil {
		return nil, c.fail(fmt.Errorf("pgtest: %w", err))
	}
	if c.runAs != nil {
		uid, _ := strconv.Atoi(c.runAs.Uid)
		gid, _ := strconv.Atoi(c.runAs.Gid)
		for _, p := range []string{dir, sock} {
			if err := os.Chown(p, uid, gid); err != nil {
				return nil, c.fail(fmt.Errorf("pgtest: chown %s: %w", p, err))
			}
		}
	}
	if err := c.checkReach(ctx); err != nil {
		return nil, c.fail(err)
	}
	if out, err := c.command(ctx, "initdb", "-D", c.dataDir, "-U", "postgres",
		"--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync").CombinedOutput(); err != nil {
		return nil, c.fail(fmt.Errorf("pgtest: initdb: %w: %s", err, out))
	}
	port, err := freePort()
	if err != nil {
		return nil, c.fail(err)
	}
	c.Port = port
	maxConn := opts.MaxConnections
	if maxConn == 0 {
		maxConn = 300
	}
	conf := []string{
		"listen_addresses = '127.0.0.1'",
		fmt.Sprintf("port = %d", port),
		fmt.Sprintf("unix_socket_directories = '%s'", sock),
		fmt.Sprintf("max_connections = %d", maxConn),
		"shared_buffers = 256MB",
		"max_wal_size = 4GB",
		"log_min_messages = warning",
		"wal_level = replica",
		"max_wal_senders = 4",
		"hot_standby = on",
	}
	if !opts.Durable {
		conf = append(conf, "fsync = off", "synchronous_commit = off", "full_page_writes = off")
	}
	conf = append(conf, opts.Settings...)
	f, err := os.OpenFile(filepath.Join(c.dataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, c.fail(fmt.Errorf("pgtest: %w", err))
	}
	_, werr := f.WriteString("\n" + strings.Join(conf, "\n") + "\n")
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return nil, c.fail(fmt.Errorf("pgtest: write postgresql.conf: %w", werr))
	}
	hba := "local all all trust\nhost all all 127.0.0.1/32 trust\nlocal replication all trust\nhost replication all 127.0.0.1/32 trust\n"
	if err := os.WriteFile(filepath.Join(c.dataDir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return nil, c.fail(fmt.Errorf("pgtest: %w", err))
	}
	if err := c.chownTree(c.dataDir); err != nil {
		return nil, c.fail(err)
	}
	if err := c.pgctl(ctx, "start"); err != nil {
		return nil, c.fail(err)
	}
	return c, nil
}

// URL returns a connection URL for database name on the cluster.
func (c *Cluster) URL(name string) string {
	return fmt.Sprintf("postgres://postgres@%s:%d/%s?sslmode=disable", c.Host, c.Port, name)
}

// DataDir is the cluster's data directory.
func (c *Cluster) DataDir() string { return c.dataDir }

// Restart restarts the server in place (pg_ctl restart -m fast): open
// connections break, as they would in a real database restart.
func (c *Cluster) Restart(ctx context.Context) error { return c.pgctl(ctx, "restart", "-m", "fast") }

// Crash restarts the server as after a crash (pg_ctl restart -m
// immediate): processes exit without a checkpoint, WAL still in the
// server's buffers is lost (the commits of transactions that ran with
// synchronous_commit off, within wal_writer_delay), and the server
// recovers from the WAL on disk as it starts.
func (c *Cluster) Crash(ctx context.Context) error {
	return c.pgctl(ctx, "restart", "-m", "immediate")
}

// Stop stops the server and removes the cluster's files.
func (c *Cluster) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := c.pgctl(ctx, "stop", "-m", "immediate")
	if rerr := os.RemoveAll(c.Dir); rerr != nil && err == nil {
		err = fmt.Errorf("pgtest: remove %s: %w", c.Dir, rerr)
	}
	return err
}

// Command returns a command running PostgreSQL binary name (pg_basebackup,
// psql...) from the cluster's installation, as the server's user.
func (c *Cluster) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return c.command(ctx, name, args...)
}

// ChownForServer hands path (a directory tree made by the test, such as a
// standby's data directory) to the user the server runs as.
func (c *Cluster) ChownForServer(path string) error { return c.chownTree(path) }

// StartStandby makes a streaming hot standby of c with pg_basebackup -R on
// a free port and starts it. Stop it with its Stop method.
func (c *Cluster) StartStandby(ctx context.Context) (*Cluster, error) {
	s := &Cluster{Host: c.Host, binDir: c.binDir, runAs: c.runAs}
	dir, err := os.MkdirTemp("", "geo-pgtest-standby-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	s.Dir = dir
	s.dataDir = filepath.Join(dir, "data")
	s.logFile = filepath.Join(dir, "server.log")
	sock := filepath.Join(dir, "sock")
	if err := os.Mkdir(sock, 0o700); err != nil {
		return nil, s.fail(err)
	}
	if err := s.chownTree(dir); err != nil {
		return nil, s.fail(err)
	}
	if err := s.checkReach(ctx); err != nil {
		return nil, s.fail(err)
	}
	if out, err := s.command(ctx, "pg_basebackup", "-h", c.Host, "-p", strconv.Itoa(c.Port), "-U", "postgres",
		"-D", s.dataDir, "-R", "-X", "stream", "--no-sync",
		// Without a fast checkpoint, pg_basebackup waits for a spread one:
		// minutes on a cluster with dirty buffers.
		"--checkpoint=fast").CombinedOutput(); err != nil {
		return nil, s.fail(fmt.Errorf("pgtest: pg_basebackup: %w: %s", err, out))
	}
	port, err := freePort()
	if err != nil {
		return nil, s.fail(err)
	}
	s.Port = port
	conf := fmt.Sprintf("\nport = %d\nunix_socket_directories = '%s'\nhot_standby = on\n", port, sock)
	f, err := os.OpenFile(filepath.Join(s.dataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, s.fail(err)
	}
	_, werr := f.WriteString(conf)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return nil, s.fail(fmt.Errorf("pgtest: write standby postgresql.conf: %w", werr))
	}
	if err := s.chownTree(s.dataDir); err != nil {
		return nil, s.fail(err)
	}
	if err := s.pgctl(ctx, "start"); err != nil {
		return nil, s.fail(err)
	}
	return s, nil
}

func (c *Cluster) fail(err error) error {
	if c.Dir != "" {
		os.RemoveAll(c.Dir)
	}
	return err
}

func (c *Cluster) pgctl(ctx context.Context, verb string, extra ...string) error {
	args := append([]string{"-D", c.dataDir, "-l", c.logFile, "-w", "-t", "60"}, extra...)
	args = append(args, verb)
	cmd := c.command(ctx, "pg_ctl", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		logTail, _ := os.ReadFile(c.logFile)
		if len(logTail) > 2000 {
			logTail = logTail[len(logTail)-2000:]
		}
		return fmt.Errorf("pgtest: pg_ctl %s: %w: %s\nserver log: %s", verb, err, out, logTail)
	}
	return nil
}

func (c *Cluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, name), args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if c.runAs != nil {
		uid, _ := strconv.Atoi(c.runAs.Uid)
		gid, _ := strconv.Atoi(c.runAs.Gid)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		cmd.Dir = c.Dir // the server user may not be able to enter our cwd
		cmd.Env = append(cmd.Env, "HOME="+c.Dir)
	}
	// pg_ctl leaves the server running in its own process group, so a test
	// binary killed by a signal does not take half a server with it.
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	return cmd
}

// checkReach makes sure the account the server runs as can reach what
// the server needs before initdb or pg_basebackup try: it runs
// "pg_ctl --version" as that account in the cluster's directory, which
// fails when the binaries or the directory are out of its reach (the
// kernel decides, ACLs included). On failure the error names the first
// directory the account cannot enter by its owner and mode bits, and
// wraps ErrUnreachable.
func (c *Cluster) checkReach(ctx context.Context) error {
	if c.runAs == nil {
		return nil
	}
	out, err := c.command(ctx, "pg_ctl", "--version").CombinedOutput()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("pgtest: run pg_ctl --version as %q: %w", c.runAs.Username, ctx.Err())
	}
	uid, _ := strconv.Atoi(c.runAs.Uid)
	gids := map[int]bool{}
	if g, err := strconv.Atoi(c.runAs.Gid); err == nil {
		gids[g] = true
	}
	if ids, err := c.runAs.GroupIds(); err == nil {
		for _, id := range ids {
			if g, err := strconv.Atoi(id); err == nil {
				gids[g] = true
			}
		}
	}
	for _, t := range []struct{ path, what, fix string }{
		{c.binDir, "the PostgreSQL binaries",
			"put initdb and pg_ctl where that user can reach them (Debian: apt-get install postgresql installs them under /usr/lib/postgresql)"},
		{c.Dir, "the cluster's directory",
			"set TMPDIR to a directory that user can enter (for example TMPDIR=/tmp)"},
	} {
		if blocked, why := firstUnreachable(t.path, uid, gids); blocked != "" {
			return fmt.Errorf("%w: the server runs as the %q user (uid %d; PostgreSQL refuses to run as root), which cannot enter %s (%s) on the way to %s %s: %s",
				ErrUnreachable, c.runAs.Username, uid, blocked, why, t.what, t.path, t.fix)
		}
	}
	return fmt.Errorf("%w: the server runs as the %q user, which cannot run %s in %s: %v: %s (set TMPDIR to a directory that user can enter)",
		ErrUnreachable, c.runAs.Username, filepath.Join(c.binDir, "pg_ctl"), c.Dir, err, strings.TrimSpace(string(out)))
}

// firstUnreachable returns the first of path's ancestors, or path itself,
// that the account uid with groups gids may not search (enter) by its
// owner, group and other execute bits, and why; "" when there is none.
func firstUnreachable(path string, uid int, gids map[int]bool) (string, string) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", ""
	}
	p := string(filepath.Separator)
	for _, part := range append([]string{""}, strings.Split(strings.TrimPrefix(abs, p), p)...) {
		p = filepath.Join(p, part)
		st, err := os.Stat(p)
		if err != nil {
			return p, err.Error()
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok {
			return "", ""
		}
		mode := st.Mode().Perm()
		var can bool
		switch {
		case int(sys.Uid) == uid:
			can = mode&0o100 != 0
		case gids[int(sys.Gid)]:
			can = mode&0o010 != 0
		default:
			can = mode&0o001 != 0
		}
		if !can {
			owner := strconv.Itoa(int(sys.Uid))
			if u, err := user.LookupId(owner); err == nil {
				owner = u.Username
			}
			return p, fmt.Sprintf("mode %v, owner %s", st.Mode(), owner)
		}
	}
	return "", ""
}

func (c *Cluster) chownTree(root string) error {
	if c.runAs == nil {
		return nil
	}
	uid, _ := strconv.Atoi(c.runAs.Uid)
	gid, _ := strconv.Atoi(c.runAs.Gid)
	return filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(p, uid, gid); err != nil {
			return fmt.Errorf("pgtest: chown %s: %w", p, err)
		}
		return nil
	})
}

// findBinDir finds the directory holding initdb and pg_ctl: PATH first,
// then the newest /usr/lib/postgresql/*/bin.
func findBinDir() (string, error) {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("pgtest: initdb and pg_ctl not found on PATH or under /usr/lib/postgresql/*/bin")
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func pingUntil(ctx context.Context, db *sqlx.DB, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		err := db.PingContext(ctx)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func withDatabase(base, name string) string {
	u, err := url.Parse(base)
	if err != nil || u.Scheme == "" {
		// key=value form
		return base + " dbname=" + name
	}
	u.Path = "/" + name
	return u.String()
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return "(database URL)"
	}
	return u.Redacted()
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
