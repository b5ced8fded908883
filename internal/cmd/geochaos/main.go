// Command geochaos runs geo's reliability campaigns: each scenario starts
// throwaway PostgreSQL clusters, a primary site and a secondary on
// loopback, breaks something on purpose while the primary keeps changing
// its data, and ends with an exact comparison of the two sites (every
// record present with the primary's SHA-256, nothing extra, no temporary
// file, no row left started) and one line:
//
//	chaos SCENARIO records=N lost=0 corrupted=0 stuck=0 extra=0 converge_s=T
//
// Usage:
//
//	go run ./internal/cmd/geochaos SCENARIO [flags]   # crash flaky-primary db-restart races disk-errors scale-out shared-keys
//	go run ./internal/cmd/geochaos all [flags]        # every scenario in turn
//	go run ./internal/cmd/geochaos all -quick         # small sizes, for CI
//
// Every scenario is bounded in time and stops by itself; it exits non-zero
// if the secondary is not an exact copy or an invariant broke on the way.
// crash, scale-out and shared-keys run secondaries as separate OS processes (this
// binary's hidden `secondary` mode) and SIGKILL them. See
// docs/reliability.md for what each scenario does and the figures.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"go.uber.org/zap"
)

// options are the flags shared by every scenario. Zero sizes mean the
// scenario's default (full or -quick).
type options struct {
	n       int
	trials  int
	kills   int
	quick   bool
	seed    uint64
	timeout time.Duration
	verbose bool
	out     io.Writer
}

func (o options) logger() *zap.Logger {
	if !o.verbose {
		return zap.NewNop()
	}
	l, err := zap.NewDevelopment()
	if err != nil {
		return zap.NewNop()
	}
	return l
}

// size picks the explicit flag value, else the quick or full default.
func (o options) size(flagValue, quick, full int) int {
	switch {
	case flagValue > 0:
		return flagValue
	case o.quick:
		return quick
	default:
		return full
	}
}

// logf prints a progress line.
func (o options) logf(scenario, format string, args ...any) {
	fmt.Fprintf(o.out, "geochaos %s: %s\n", scenario, fmt.Sprintf(format, args...))
}

type scenario struct {
	name string
	run  func(ctx context.Context, o options) error
	doc  string
}

func scenarios() []scenario {
	return []scenario{
		{"crash", runCrash, "SIGKILL the secondary process at random moments while the primary changes data"},
		{"flaky-primary", runFlaky, "a fault-injecting proxy between secondary and primary"},
		{"db-restart", runDBRestart, "restart the tracking database's server, then the primary's, mid-run"},
		{"races", runRaces, "update-during-sync, delete-during-sync, deleted-then-recreated id (R1, R2)"},
		{"disk-errors", runDiskErrors, "secondary storage failing writes (ENOSPC, EIO) and fsyncs at random"},
		{"scale-out", runScaleOut, "three secondary processes on one tracking DB, one killed repeatedly"},
		{"shared-keys", runSharedKeys, "content-addressed keys from a pool of 8 payloads (shared, moved, reused), secondary SIGKILLed"},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: geochaos SCENARIO|all [flags]")
	for _, s := range scenarios() {
		fmt.Fprintf(w, "  %-14s %s\n", s.name, s.doc)
	}
	fmt.Fprintln(w, "flags:")
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "secondary" {
		if err := runChild(args[1:], stderr); err != nil {
			fmt.Fprintln(stderr, "geochaos secondary:", err)
			return 1
		}
		return 0
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		usage(stderr)
		return 2
	}
	name := args[0]
	var o options
	fs := flag.NewFlagSet("geochaos "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { usage(stderr); fs.PrintDefaults() }
	fs.IntVar(&o.n, "n", 0, "records (default: the scenario's full size, or its -quick size)")
	fs.IntVar(&o.trials, "trials", 0, "races: trials of each kind (default 1000, -quick 50)")
	fs.IntVar(&o.kills, "kills", 0, "crash, scale-out, shared-keys: SIGKILLs (default 20, 10 and 10; -quick 4, 3 and 3)")
	fs.BoolVar(&o.quick, "quick", false, "small sizes (CI)")
	fs.Uint64Var(&o.seed, "seed", 0, "random seed (default: from the clock, printed)")
	fs.DurationVar(&o.timeout, "timeout", 4*time.Minute, "give up converging after this long (per scenario)")
	fs.BoolVar(&o.verbose, "v", false, "log the sites' debug output to stderr")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano())
	}
	o.out = stdout
	var todo []scenario
	for _, s := range scenarios() {
		if name == "all" || name == s.name {
			todo = append(todo, s)
		}
	}
	if len(todo) == 0 {
		fmt.Fprintf(stderr, "geochaos: unknown scenario %q\n", name)
		usage(stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	failed := 0
	for _, s := range todo {
		start := time.Now()
		o.logf(s.name, "seed %d", o.seed)
		err := s.run(ctx, o)
		if err != nil {
			failed++
			fmt.Fprintf(stderr, "geochaos %s: FAIL after %.1fs: %v\n", s.name, time.Since(start).Seconds(), err)
		} else {
			o.logf(s.name, "ok in %.1fs", time.Since(start).Seconds())
		}
		if errors.Is(ctx.Err(), context.Canceled) {
			break
		}
	}
	if failed > 0 {
		return 1
	}
	return 0
}
