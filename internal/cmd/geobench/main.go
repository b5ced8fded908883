// Command geobench measures geo against this machine's physical limits.
//
// Each run sets up its own databases (a throwaway PostgreSQL cluster, or
// the server named by -url), runs one scenario, measures the raw limit the
// scenario is compared with in the same run (the machine is shared and
// noisy, so a limit measured yesterday proves nothing), prints a human
// table and, as its last line, exactly:
//
//	geobench SCENARIO value=<number> unit=<unit> limit=<number> ratio=<value/limit> rss_mib=<peak RSS>
//
// For scenarios without a raw limit (event-lag, status) limit is the
// target and ratio is value/target (lower is better there).
//
// Scenarios:
//
//	backfill   -n 1000000         consistency pass creating N registry rows vs raw unnest inserts
//	sync-small -n 20000 -size 4KiB  N pending rows synced end to end vs raw GET+SHA-256+fsync+rename
//	sync-large -size 1GiB         one blob end to end vs raw GET+SHA-256+fsync copy
//	  (sync-small and sync-large with -storage s3: the secondary on a throwaway
//	  versitygw, against raw GET+SHA-256+PUT to the same server)
//	event-lag  -rate 500 -duration 20s  p99 commit-to-synced latency (ms) at a steady create rate
//	status     -n 1000000         one grouped Counts pass over N registry rows
//	verify     -n 2000 -size 1MiB re-verification MB/s vs raw SHA-256 over the same files
//	  (-storage s3: objects on versitygw, against raw GET+SHA-256 of the same objects)
//	claim-order -n 1000000        ms from lease expiry / retry due to claim behind N pending rows
//	orphans    -n 100000          consistency pass removing N orphans with files vs raw DELETE + unlink
//	existence  -n 1000000         one existence scan (R7's detection) vs raw key read + directory walk
//	resync-all -n 1000000         batched resync of N synced rows (geoctl resync --all) vs raw batched UPDATE
//	repo-sync  -n 500             N git repositories (50 commits, plus 3 large) synced end to end vs raw git clone --mirror; then one push's event to synced
//
// Usage:
//
//	go run ./internal/cmd/geobench SCENARIO [flags]
//
// geobench is a measuring tool for geo's developers, not part of the
// library's API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"
)

// options are the command-line flags shared by every scenario.
type options struct {
	url         string
	durable     bool
	binary      bool
	n           int
	size        int64
	concurrency int
	rate        int
	duration    time.Duration
	warmup      time.Duration
	batch       int
	dir         string
	storage     string
	cpuprofile  string
	verbose     bool
}

// scenario is one benchmark: it fills in res.
type scenario struct {
	name string
	// defaults applied when the flag was not given.
	n    int
	size int64
	run  func(ctx context.Context, b *bench, res *result) error
	doc  string
}

func scenarios() []scenario {
	return []scenario{
		{name: "backfill", n: 1_000_000, run: runBackfill,
			doc: "consistency pass creating N registry rows (rows/s) vs raw keyset fetch + unnest insert"},
		{name: "sync-small", n: 20_000, size: 4 << 10, run: runSyncSmall,
			doc: "N pending rows synced end to end (blobs/s) vs raw GET + SHA-256 + fsync + rename"},
		{name: "sync-large", n: 1, size: 1 << 30, run: runSyncLarge,
			doc: "one blob synced end to end (MB/s) vs raw GET + SHA-256 + fsync copy"},
		{name: "event-lag", run: runEventLag,
			doc: "p99 commit-to-synced latency (ms) of records created at -rate for -duration; target 500"},
		{name: "status", n: 1_000_000, run: runStatus,
			doc: "one grouped registry Counts pass over N rows (ms); target 100"},
		{name: "verify", n: 2000, size: 1 << 20, run: runVerify,
			doc: "re-verification of N blobs (MB/s) vs raw SHA-256 over the same files"},
		{name: "claim-order", n: 1_000_000, run: runClaimOrder,
			doc: "ms from a dead worker's lease expiry (and a retry falling due) to its claim behind N pending rows; target Lease + PollInterval"},
		{name: "orphans", n: 100_000, run: runOrphans,
			doc: "consistency pass removing N orphan rows with 4 KiB files (rows/s) vs raw DELETE = ANY + unlink"},
		{name: "existence", n: 1_000_000, run: runExistence,
			doc: "one existence scan over N synced rows and their files (rows/s) vs raw key read + directory walk"},
		{name: "repo-sync", n: 500, run: runRepoSync,
			doc: "N git repositories (50 commits each, plus 3 of 1,000) synced end to end (repos/s) vs raw git clone --mirror over the same endpoint; then one push's event to synced"},
		{name: "resync-all", n: 1_000_000, run: runResyncAll,
			doc: "resync of N synced rows in batches, as geoctl resync --all (rows/s) vs raw batched UPDATE of the same columns; target 1,000,000 in 20 s"},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "usage: geobench SCENARIO [flags]\n\nscenarios:")
	for _, s := range scenarios() {
		fmt.Fprintf(w, "  %-11s %s\n", s.name, s.doc)
	}
	fmt.Fprintln(w, "\nflags:")
	fs.SetOutput(w)
	fs.PrintDefaults()
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o options
	var sizeFlag string
	fs := flag.NewFlagSet("geobench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.url, "url", "", "PostgreSQL server URL (role with CREATEDB); empty starts a throwaway cluster")
	fs.BoolVar(&o.durable, "durable", true, "throwaway cluster keeps fsync and synchronous_commit on (production settings)")
	fs.BoolVar(&o.binary, "binary", true, "connect with lib/pq binary_parameters=yes (recommended for geo, DESIGN §11)")
	fs.IntVar(&o.n, "n", 0, "records (0: the scenario's default)")
	fs.StringVar(&sizeFlag, "size", "", "blob size, e.g. 4096, 4KiB, 1MiB, 1GiB (empty: the scenario's default)")
	fs.IntVar(&o.concurrency, "concurrency", 0, "syncs (or verifications) at once, geo and raw alike (0: geo's default, 32 per type; 2 for verify)")
	fs.IntVar(&o.rate, "rate", 500, "event-lag: records created per second")
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "event-lag: how long records are created")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "event-lag: records created at -rate before the measured ones (connections, plans and caches warm up), synced but not counted; the warm-up then goes on at the rate until the secondary has caught up (a tenth of a second's records, or 10, or fewer unsynced; at most 10s more)")
	fs.IntVar(&o.batch, "batch", 0, "backfill, resync-all: keyset batch, geo and raw alike (0: geo's default, 10000)")
	fs.StringVar(&o.dir, "dir", "", "directory for storage roots (empty: a temporary directory, removed at the end)")
	fs.StringVar(&o.storage, "storage", storageDir, "sync-small, sync-large, verify: the secondary's storage, dir (a directory) or s3 (a bucket on a throwaway versitygw, opened by URL; the raw loops then PUT to and GET from the same server)")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the measured geo phase to this file")
	fs.BoolVar(&o.verbose, "v", false, "log the secondary's warnings to stderr")
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		usage(stderr, fs)
		return 2
	}
	name := args[0]
	var sc *scenario
	for _, s := range scenarios() {
		if s.name == name {
			sc = &s
			break
		}
	}
	if sc == nil {
		fmt.Fprintf(stderr, "geobench: unknown scenario %q\n\n", name)
		usage(stderr, fs)
		return 2
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout, fs)
			return 0
		}
		fmt.Fprintf(stderr, "geobench: %v\n", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "geobench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if o.n == 0 {
		o.n = sc.n
	}
	o.size = sc.size
	if sizeFlag != "" {
		v, err := parseSize(sizeFlag)
		if err != nil {
			fmt.Fprintf(stderr, "geobench: -size: %v\n", err)
			return 2
		}
		o.size = v
	}
	if o.n < 0 || o.size < 0 || o.concurrency < 0 || o.rate <= 0 || o.duration <= 0 || o.batch < 0 || o.warmup < 0 {
		fmt.Fprintln(stderr, "geobench: -n, -size, -concurrency, -batch and -warmup must not be negative; -rate and -duration must be positive")
		return 2
	}

	switch {
	case o.storage == storageDir:
	case o.storage == storageS3 && (name == "sync-small" || name == "sync-large" || name == "verify"):
	default:
		fmt.Fprintf(stderr, "%v: %q is not a storage for %s (dir; s3 for sync-small, sync-large and verify)\n", errStorage, o.storage, name)
		return 2
	}

	b, err := newBench(ctx, o, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "geobench %s: setup: %v\n", name, err)
		return 1
	}
	res := &result{scenario: name}
	err = sc.run(ctx, b, res)
	if cerr := b.close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintf(stderr, "geobench %s: %v\n", name, err)
		return 1
	}
	res.print(stdout, o)
	return 0
}

// parseSize parses "4096", "4KiB", "1MiB", "1GiB" (also KB, MB, GB as
// powers of 1000).
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	mult := int64(1)
	num := s
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	v, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return v * mult, nil
}

// result is what a scenario measured.
type result struct {
	scenario string
	value    float64
	unit     string
	limit    float64
	// lowerIsBetter marks a latency against a target.
	lowerIsBetter bool
	rows          [][2]string
}

func (r *result) add(name, format string, args ...any) {
	r.rows = append(r.rows, [2]string{name, fmt.Sprintf(format, args...)})
}

func (r *result) print(w io.Writer, o options) {
	rss := peakRSSMiB()
	fmt.Fprintf(w, "geobench %s (n=%d size=%d concurrency=%d durable=%v binary_parameters=%v storage=%s)\n",
		r.scenario, o.n, o.size, o.concurrency, o.durable, o.binary, o.storage)
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		r.add("load average", "%s (1, 5, 15 min, at the end)", strings.Join(strings.Fields(string(la))[:3], " "))
	}
	width := 0
	for _, row := range r.rows {
		width = max(width, len(row[0]))
	}
	for _, row := range r.rows {
		fmt.Fprintf(w, "  %-*s  %s\n", width, row[0], row[1])
	}
	ratio := 0.0
	if r.limit > 0 {
		ratio = r.value / r.limit
	}
	fmt.Fprintf(w, "geobench %s value=%s unit=%s limit=%s ratio=%.3f rss_mib=%.1f\n",
		r.scenario, num(r.value), r.unit, num(r.limit), ratio, rss)
}

// num formats a figure without exponent, with up to 1 decimal.
func num(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

// peakRSSMiB returns this process's peak resident set size (VmHWM) in MiB,
// or -1 when /proc is not available.
func peakRSSMiB() float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseFloat(f[0], 64)
				if err == nil {
					return kb / 1024
				}
			}
		}
	}
	return -1
}

// profile runs f under the CPU profiler when -cpuprofile is set.
func profile(o options, f func() error) error {
	if o.cpuprofile == "" {
		return f()
	}
	pf, err := os.Create(o.cpuprofile)
	if err != nil {
		return fmt.Errorf("cpuprofile: %w", err)
	}
	defer pf.Close()
	if err := pprof.StartCPUProfile(pf); err != nil {
		return fmt.Errorf("cpuprofile: %w", err)
	}
	defer pprof.StopCPUProfile()
	return f()
}
