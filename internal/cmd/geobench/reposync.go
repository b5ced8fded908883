package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"
	"golang.org/x/sync/errgroup"

	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/internal/gitrepo"
	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/internal/testtype"
	"github.com/geoframework/geo/internal/xfer"
	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/replicator/transfer"
)

// The repo-sync scenario's repository type and its shape.
const (
	repoTypeName = "bench_repo"
	repoTable    = "bench_repos"
	// repoCommits and repoFileSize shape the ordinary repositories: 50
	// commits on main, each writing a file of 2 KiB.
	repoCommits  = 50
	repoFileSize = 2 << 10
	// repoLarge large repositories of repoLargeCommits commits of
	// repoLargeFileSize each come on top of -n.
	repoLarge         = 3
	repoLargeCommits  = 1000
	repoLargeFileSize = 16 << 10
)

// runRepoSync: N repositories (plus a few large ones) synced end to end
// by a secondary, from pending rows to synced, against raw `git clone
// --mirror` of the same repositories over the same endpoint (the primary's
// handler, same tokens) at the same concurrency, in the same run; then
// one commit pushed to one repository, timed from its updated event's
// commit to synced.
func runRepoSync(ctx context.Context, b *bench, res *result) error {
	n := b.o.n
	conc := b.o.concurrency
	if conc == 0 {
		conc = defaultSyncCapacity
	}
	g, err := gitrepo.New(ctx, nil)
	if err != nil {
		return fmt.Errorf("repo-sync needs git: %w", err)
	}
	load0 := loadAvg()
	primaryRoot := filepath.Join(b.dir, "primary-repositories")
	if err := os.MkdirAll(primaryRoot, 0o755); err != nil {
		return err
	}
	if _, err := b.primaryDB.ExecContext(ctx, testtype.RepoSchema(repoTable)); err != nil {
		return err
	}
	total := n + repoLarge
	b.logf("repo-sync: creating %d repositories of %d commits and %d of %d", n, repoCommits, repoLarge, repoLargeCommits)
	ids := make([]int64, total)
	rels := make([]string, total)
	for i := range total {
		ids[i] = int64(i + 1)
		rels[i] = fmt.Sprintf("%s/%02x/%d.git", repoTable, i%256, i+1)
	}
	if _, err := b.primaryDB.ExecContext(ctx, `INSERT INTO `+repoTable+` (id, path)
SELECT * FROM unnest($1::bigint[], $2::text[])`, pq.Array(ids), pq.Array(rels)); err != nil {
		return err
	}
	var eg errgroup.Group
	eg.SetLimit(2 * runtime.NumCPU())
	for i := range total {
		eg.Go(func() error {
			shape := gitrepo.RepoShape{Commits: repoCommits, FileSize: repoFileSize, Seed: uint64(i)}
			if i >= n {
				shape = gitrepo.RepoShape{Commits: repoLargeCommits, FileSize: repoLargeFileSize, Seed: uint64(i)}
			}
			dir := filepath.Join(primaryRoot, rels[i])
			if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
				return err
			}
			return gitrepo.MakeRepo(ctx, g, dir, shape)
		})
	}
	if err := eg.Wait(); err != nil {
		return err
	}
	// The primary's checksums, as its checksum engine would have them.
	srvView, err := gitrepo.NewServer(g, primaryRoot, nil)
	if err != nil {
		return err
	}
	sums := make([]string, total)
	for i := range total {
		if sums[i], err = srvView.Checksum(ctx, rels[i]); err != nil {
			return err
		}
	}
	if _, err := b.primaryDB.ExecContext(ctx, `
INSERT INTO geo_checksums (replicable, model_id, state, checksum, size, verified_at)
SELECT $1, k.id, 2, k.sum, -1, now() FROM unnest($2::bigint[], $3::text[]) AS k(id, sum)`,
		repoTypeName, pq.Array(ids), pq.Array(sums)); err != nil {
		return fmt.Errorf("primary checksums: %w", err)
	}

	typ := &testtype.RepoType{TypeName: repoTypeName, Table: repoTable, DB: b.primaryDB}
	set := replicator.NewSet()
	set.MustRegister(typ)
	primary, err := replicator.NewPrimary(replicator.PrimaryConfig{
		Strategies: set, DB: b.primaryDB, RepositoryRoot: primaryRoot, Secrets: transfer.NewStaticSecrets(b.creds),
	})
	if err != nil {
		return err
	}
	base, srv, err := serve(primary.Handler())
	if err != nil {
		return err
	}
	b.closers = append(b.closers, srv.Close)

	store, err := regstore.NewStore(b.trackingDB, regstore.Options{})
	if err != nil {
		return err
	}
	if _, err := store.InsertMissing(ctx, repoTypeName, ids); err != nil {
		return err
	}

	quiesce()
	b.logf("repo-sync: raw git clone --mirror")
	rawDir := filepath.Join(b.dir, "raw-mirrors")
	var rawBytes atomic.Int64
	rawStart := time.Now()
	var reg errgroup.Group
	reg.SetLimit(conc)
	for i := range total {
		reg.Go(func() error {
			auth, err := xfer.Authorization(b.creds, repoTypeName, ids[i], time.Now())
			if err != nil {
				return err
			}
			dst := filepath.Join(rawDir, fmt.Sprintf("%d.git", ids[i]))
			cmd := exec.CommandContext(ctx, "git", "clone", "--mirror", "--quiet", base+xfer.RepositoryPath(repoTypeName, ids[i]), dst)
			cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_COUNT=1",
				"GIT_CONFIG_KEY_0=http.extraHeader", "GIT_CONFIG_VALUE_0=Authorization: "+auth)
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("raw clone %d: %v: %s", ids[i], err, strings.TrimSpace(string(out)))
			}
			rawBytes.Add(dirSize(dst))
			return nil
		})
	}
	if err := reg.Wait(); err != nil {
		return err
	}
	rawElapsed := time.Since(rawStart)
	rawRate := float64(total) / rawElapsed.Seconds()

	quiesce()
	b.logf("repo-sync: geo")
	obs := &repoCounter{counter: newCounter(total)}
	cfg := b.secondaryConfig(obs)
	cfg.Strategies = replicator.NewSet()
	cfg.Strategies.MustRegister(&testtype.RepoType{TypeName: repoTypeName, Table: repoTable, DB: b.primaryDB})
	cfg.Storage = nil
	cfg.RepositoryRoot = filepath.Join(b.dir, "secondary-repositories")
	cfg.PrimaryURL = base
	cfg.SyncCapacityPerType = conc
	var elapsed time.Duration
	var sec *running
	err = profile(b.o, func() error {
		start := time.Now()
		sec, err = b.start(cfg)
		if err != nil {
			return err
		}
		end, err := obs.wait(ctx, 60*time.Minute)
		if err != nil {
			return err
		}
		elapsed = end.Sub(start)
		return nil
	})
	if err != nil {
		return err
	}
	var synced int64
	if err := b.trackingDB.GetContext(ctx, &synced,
		`SELECT count(*) FROM geo_registry WHERE replicable = $1 AND state = 2`, repoTypeName); err != nil {
		return err
	}
	if synced != int64(total) {
		return fmt.Errorf("%d repositories synced, want %d", synced, total)
	}
	rate := float64(total) / elapsed.Seconds()
	load1 := loadAvg()

	// Incremental: one commit pushed to one repository; the primary runs
	// (its checksum engine computes the new refs checksum on the event).
	pctx, pcancel := context.WithCancel(ctx)
	pdone := make(chan error, 1)
	go func() { pdone <- primary.Run(pctx) }()
	defer func() { pcancel(); <-pdone }()
	target := ids[n/2]
	at := obs.watch(target)
	if err := gitrepo.AddCommit(ctx, g, filepath.Join(primaryRoot, rels[n/2]), "refs/heads/main", repoFileSize); err != nil {
		return err
	}
	tx, err := b.primaryDB.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	if _, err := primary.Publisher().Publish(ctx, tx, repoTypeName, events.OpUpdated, target, rels[n/2]); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	pushed := time.Now()
	var incr time.Duration
	select {
	case t := <-at:
		incr = t.Sub(pushed)
	case <-time.After(5 * time.Minute):
		return fmt.Errorf("the pushed repository did not sync within 5 minutes")
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := sec.stop(); err != nil {
		return err
	}

	res.value, res.unit, res.limit = rate, "repos/s", rawRate
	res.add("repositories", "%d of %d commits x %d B, %d of %d commits x %d B; concurrency %d",
		n, repoCommits, repoFileSize, repoLarge, repoLargeCommits, repoLargeFileSize, conc)
	res.add("raw git clone --mirror", "%.2fs  %.1f repos/s  %d bytes on disk  (limit; ran first, on the colder page cache)", rawElapsed.Seconds(), rawRate, rawBytes.Load())
	res.add("geo pending to synced", "%.2fs  %.1f repos/s  %d bytes fetched  (ratio %.2f; target >= 0.7)",
		elapsed.Seconds(), rate, obs.bytes.Load(), rate/rawRate)
	res.add("failed attempts", "%d", obs.failed.Load())
	res.add("incremental push", "one commit to one of %d repositories: %.0f ms from the event's commit to synced", total, float64(incr)/float64(time.Millisecond))
	res.add("load average", "%s before, %s after the measured phases (%d CPUs)", load0, load1, runtime.NumCPU())
	return nil
}

// repoCounter is a counter that can also report when one record synced.
type repoCounter struct {
	*counter
	mu       sync.Mutex
	watching map[int64]chan time.Time
}

func (c *repoCounter) SyncDone(ev replicator.SyncEvent) {
	c.counter.SyncDone(ev)
	if ev.Outcome != replicator.ResultSynced {
		return
	}
	c.mu.Lock()
	ch := c.watchers()[ev.ModelID]
	delete(c.watching, ev.ModelID)
	c.mu.Unlock()
	if ch != nil {
		ch <- time.Now()
	}
}

func (c *repoCounter) watchers() map[int64]chan time.Time {
	if c.watching == nil {
		c.watching = map[int64]chan time.Time{}
	}
	return c.watching
}

// watch returns a channel that receives the time record id next syncs.
func (c *repoCounter) watch(id int64) <-chan time.Time {
	ch := make(chan time.Time, 1)
	c.mu.Lock()
	c.watchers()[id] = ch
	c.mu.Unlock()
	return ch
}

// loadAvg is /proc/loadavg's three load averages ("?" without /proc).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// dirSize is the bytes of the regular files under dir.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}
