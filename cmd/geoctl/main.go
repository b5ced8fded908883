// Command geoctl is geo's operator tool. It works on a secondary's tracking
// database alone (it is not a running secondary): migrate the schema, show
// the status of every type, resync or reverify records, pause and resume a
// type's sync, and list failed rows with their reasons. `geoctl migrate
// --primary` migrates a primary's database instead.
//
// The database comes from --database-url or the GEO_DATABASE_URL
// environment variable. Exit codes: 0 success, 1 error (the message says
// what to fix), 2 usage error (bad flags or arguments).
//
// See docs/operations.md for the runbook that uses it.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/spf13/cobra"

	"github.com/geoframework/geo/registry"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// envDatabaseURL and envPrimaryURL name the environment variables read
// when the flags are not given.
const (
	envDatabaseURL = "GEO_DATABASE_URL"
	envPrimaryURL  = "GEO_PRIMARY_DATABASE_URL"
)

// interruptGrace is how long geoctl waits, after Ctrl-C or SIGTERM, for
// the command to stop. The statement in flight is cancelled on the
// server, which takes a second connection: when that cannot happen (the
// server is overloaded or unreachable), geoctl exits after interruptGrace
// all the same, saying so. A second Ctrl-C exits at once.
const interruptGrace = 10 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	done := make(chan int, 1)
	go func() { done <- run(ctx, os.Args[1:], os.Stdout, os.Stderr) }()
	var code int
	select {
	case code = <-done:
	case <-ctx.Done():
		stop() // a second signal now ends the process
		select {
		case code = <-done:
		case <-time.After(interruptGrace):
			fmt.Fprintf(os.Stderr, "geoctl: interrupted: the statement in flight did not stop within %v (its cancellation did not reach the server); it may go on there until it ends; batches committed before it stay done\n", interruptGrace)
			code = exitError
		}
	}
	stop()
	os.Exit(code)
}

// usageError marks an error in the command line: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// app holds the flags shared by every command and the open connection.
type app struct {
	out, errOut io.Writer
	dbURL       string
	timeout     time.Duration
	db          *sqlx.DB
	ran         bool // a command's RunE started: errors from here on are not usage errors
}

// run executes geoctl with args and returns the exit code.
//
// Everything it prints goes through redactText: no password of a
// connection string (or of a failure text that quotes one) is printed.
func run(ctx context.Context, args []string, rawStdout, rawStderr io.Writer) int {
	stdout, stderr := &redactWriter{w: rawStdout}, &redactWriter{w: rawStderr}
	defer stderr.Flush()
	defer stdout.Flush()
	a := &app{out: stdout, errOut: stderr}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	failed, err := root.ExecuteContextC(ctx)
	if a.db != nil {
		a.db.Close()
	}
	if err == nil {
		return exitOK
	}
	var ue *usageError
	if errors.As(err, &ue) || !a.ran {
		help := "geoctl --help"
		if failed != nil && failed != root {
			help = failed.CommandPath() + " --help"
		}
		fmt.Fprintf(stderr, "geoctl: %v\nRun '%s' for usage.\n", err, help)
		return exitUsage
	}
	fmt.Fprintf(stderr, "geoctl: %v\n", err)
	return exitError
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "geoctl",
		Short: "Operate geo: migrate, status, resync, reverify, pause, resume, failures, ui, promote",
		Long: `geoctl operates a geo secondary through its tracking database: it works
without the secondary process running (several processes may share the
database; they all see what geoctl changes at their next poll).

The database comes from --database-url or $` + envDatabaseURL + `.

Exit codes: 0 ok, 1 error, 2 usage error.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// No Run: with no command cobra prints the help, and an unknown
		// one is an error with cobra's suggestions ("Did you mean this?").
		Version:                    version(),
		SuggestionsMinimumDistance: 2,
	}
	root.SetVersionTemplate("geoctl {{.Version}}\n")
	// Defined now, not lazily at execution, so that cobra's command
	// lookup knows -h takes no value: "geoctl -h status" is status's help.
	root.InitDefaultHelpFlag()
	root.InitDefaultVersionFlag()
	root.PersistentFlags().StringVar(&a.dbURL, "database-url", "",
		"tracking database URL (the primary's for migrate --primary); default $"+envDatabaseURL)
	root.PersistentFlags().DurationVar(&a.timeout, "timeout", 30*time.Second, "give up on one database operation after this long (resync and reverify --all/--failed: on one batch)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{msg: err.Error()} })
	root.AddCommand(a.migrateCmd(), a.statusCmd(), a.resyncCmd(), a.reverifyCmd(),
		a.pauseCmd("pause"), a.pauseCmd("resume"), a.failuresCmd(), a.uiCmd(), a.promoteCmd())
	for _, c := range root.Commands() {
		if ex, ok := examples[c.Name()]; ok {
			c.Example = ex
		}
	}
	root.Example = `  export GEO_DATABASE_URL=postgres://geo@tracking.example.com/geo_tracking
  geoctl migrate
  geoctl status --watch
  geoctl resync --failed --type package_file
  geoctl completion bash > /etc/bash_completion.d/geoctl`
	return root
}

// examples are the commands' Example sections.
var examples = map[string]string{
	"migrate": `  geoctl --database-url "$TRACKING_DB" migrate
  geoctl --database-url "$PRIMARY_DB" migrate --primary`,
	"status": `  geoctl status
  geoctl status -o json --primary-database-url "$PRIMARY_STANDBY_DB"
  geoctl status --watch --interval 5s`,
	"resync": `  geoctl resync --type package_file --id 17,42
  geoctl resync --failed --type package_file --dry-run
  geoctl resync --all --batch 5000
  geoctl resync --all --resume package_file:120000   # after an interrupted run`,
	"reverify": `  geoctl reverify --type package_file --id 17
  geoctl reverify --failed
  geoctl reverify --all --type lfs_object`,
	"pause": `  geoctl pause --type package_file
  geoctl pause --type new_type --force   # a type with no rows yet`,
	"resume": `  geoctl resume --type package_file`,
	"failures": `  geoctl failures
  geoctl failures --type package_file --limit 20
  geoctl failures --after package_file:4711 -o json`,
	"promote": `  geoctl promote --dry-run --primary-database-url "$STANDBY_DB"
  geoctl promote --pg-promote --primary-database-url "$STANDBY_DB"
  geoctl promote --already-promoted --force   # after pg_ctl promote, accepting what the preflight listed`,
	"ui": `  geoctl ui
  geoctl ui --listen 127.0.0.1:9090 --primary-database-url "$PRIMARY_STANDBY_DB"
  geoctl ui --allow-actions --title "secondary eu-west"`,
}

// version returns geoctl's version from the binary's build info: the
// module version (a tagged release, or "(devel)"), with the VCS revision
// and a "+dirty" mark when the build knows them, and the Go version.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if rev != "" {
		v += " " + rev[:min(len(rev), 12)] + dirty
	}
	return v + " " + bi.GoVersion
}

// runE wraps a command's body: from here on, errors are runtime errors
// unless they are usageErrors.
func (a *app) runE(f func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		a.ran = true
		return f(cmd, args)
	}
}

// connect opens and pings the database named by --database-url or the
// environment.
func (a *app) connect(ctx context.Context, what string) (*sqlx.DB, error) {
	u := a.dbURL
	if u == "" {
		u = os.Getenv(envDatabaseURL)
	}
	if u == "" {
		return nil, usagef("no database: pass --database-url or set %s to the %s database's URL "+
			"(postgres://user:password@host:5432/dbname?sslmode=...)", envDatabaseURL, what)
	}
	shown, err := checkConn(u)
	if err != nil {
		return nil, usagef("the %s database's connection string (--database-url / %s) is %v", what, envDatabaseURL, err)
	}
	db, err := sqlx.Open("postgres", u)
	if err != nil {
		return nil, fmt.Errorf("open the %s database %s: %w (check --database-url / %s)", what, shown, err, envDatabaseURL)
	}
	db.SetMaxOpenConns(8)
	pctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to the %s database %s: %w (check --database-url / %s, and that the server is up)",
			what, shown, err, envDatabaseURL)
	}
	a.db = db
	return db, nil
}

// tracking connects to the tracking database and checks it is migrated.
func (a *app) tracking(ctx context.Context) (*registry.Store, error) {
	db, err := a.trackingDB(ctx)
	if err != nil {
		return nil, err
	}
	return registry.NewStore(db, registry.Options{})
}

// trackingDB connects to the tracking database and checks that it holds
// geo's tables.
func (a *app) trackingDB(ctx context.Context) (*sqlx.DB, error) {
	db, err := a.connect(ctx, "tracking")
	if err != nil {
		return nil, err
	}
	var ok bool
	if err := db.GetContext(ctx, &ok, `SELECT to_regclass('geo_registry') IS NOT NULL`); err != nil {
		return nil, fmt.Errorf("inspect the tracking database: %w", err)
	}
	if !ok {
		return nil, errors.New("the tracking database has no geo tables (geo_registry): run `geoctl migrate` against it first, " +
			"or check that --database-url names the secondary's tracking database")
	}
	return db, nil
}

// opCtx bounds one database operation by --timeout.
func (a *app) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, a.timeout)
}

// isUndefined reports a PostgreSQL "relation does not exist" error.
func isUndefined(err error) bool {
	var pe *pq.Error
	return errors.As(err, &pe) && pe.Code == "42P01"
}
