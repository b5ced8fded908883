package geotest

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/geotest/pgtest"
	"github.com/geoframework/geo/internal/gitrepo"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/replicator/transfer"
	"github.com/geoframework/geo/strategy"
)

// RepositoryApp is what a RepositoryHarness's application functions get:
// the primary's database, its repository root (a record's bare repository
// lives at Root/RepositoryPath) and the publisher to call inside the same
// transaction as the application's own change.
type RepositoryApp struct {
	DB        *sqlx.DB
	Root      string
	Publisher *events.Publisher
}

// RepositoryHarness describes an adopter's repository type to the
// conformance suite: the adapter, and the application's code paths that
// create a record with its repository, publish a push, and delete a
// record. The suite itself changes the repositories the way a user's push
// does (new commits, a new branch, a force-push, a deleted branch),
// directly in the primary's bare repository, then calls Pushed. Functions
// marked required must be set; optional ones turn on more clauses.
type RepositoryHarness struct {
	// Setup creates the application's tables in a fresh primary database.
	// Required.
	Setup func(ctx context.Context, db *sqlx.DB) error
	// Strategy returns the adapter reading db. Required.
	Strategy func(db *sqlx.DB) strategy.RepositoryStrategy
	// Create inserts a new record, creates its bare repository (empty, as
	// git init --bare leaves it, or with content) at its RepositoryPath
	// under app.Root, and publishes its created event in the same
	// transaction as the insert; it returns the record's id. Required.
	Create func(ctx context.Context, app RepositoryApp) (int64, error)
	// Pushed is the application's post-receive path: it publishes the
	// updated event of record id after a push. Required.
	Pushed func(ctx context.Context, app RepositoryApp, id int64) error
	// Delete removes record id, publishes a deleted event carrying its
	// repository path, and removes the repository. Required.
	Delete func(ctx context.Context, app RepositoryApp, id int64) error
	// ScopedStrategy returns the adapter narrowed to a scope, and
	// CreateOutOfScope creates a record outside that scope (as Create
	// does). Both nil: the scope clause skips.
	ScopedStrategy   func(db *sqlx.DB) strategy.RepositoryStrategy
	CreateOutOfScope func(ctx context.Context, app RepositoryApp) (int64, error)
	// Server provides PostgreSQL; nil means one for this run.
	Server *pgtest.Server
	// Timeout bounds each clause (the watchdog); 0 means
	// ClauseTimeoutDefault.
	Timeout time.Duration
	// Stall fails a wait whose condition shows no progress for this long;
	// 0 means StallDefault.
	Stall time.Duration
}

// RunRepositoryStrategy runs the conformance suite for the repository type
// described by h against real PostgreSQL, the real git binary, a real
// HTTP endpoint on loopback and real directories. Each subtest is named
// after the clause it checks; a failure reads "clause: got X, want Y".
// Without PostgreSQL or git the test fails saying what to install; it is
// never skipped.
func RunRepositoryStrategy(t *testing.T, h RepositoryHarness) {
	t.Helper()
	RunRepositories(testingT{t}, h)
}

// RunRepositories is RunRepositoryStrategy over the T seam.
func RunRepositories(t T, h RepositoryHarness) {
	t.Helper()
	if h.Setup == nil || h.Strategy == nil || h.Create == nil || h.Pushed == nil || h.Delete == nil {
		t.Fatalf("geotest: RepositoryHarness needs Setup, Strategy, Create, Pushed and Delete")
		return
	}
	g, err := gitrepo.New(context.Background(), nil)
	if err != nil {
		msg := fmt.Sprintf("geotest: repository types need the git binary: %v (apt-get install git)", err)
		t.Fatalf("%s", msg)
		return
	}
	if h.Server == nil {
		h.Server = pgtest.New(pgtest.Options{})
		t.Cleanup(func() { _ = h.Server.Stop() })
	}
	if h.Timeout == 0 {
		h.Timeout = ClauseTimeoutDefault
	}
	if h.Stall == 0 {
		h.Stall = StallDefault
	}
	s := &repoSuite{h: h, git: g}
	for _, c := range []struct {
		name string
		f    func(c *repoClause)
	}{
		{"adapter/ids_ascending_and_paged", s.idsAscendingAndPaged},
		{"adapter/paths_valid_stable_and_not_found", s.pathsValid},
		{"sync/created", s.created},
		{"sync/pushed", s.pushed},
		{"sync/force_pushed", s.forcePushed},
		{"sync/branch_deleted", s.branchDeleted},
		{"sync/deleted", s.deleted},
		{"backfill/preexisting_records", s.backfill},
		{"consistency/orphans_removed", s.orphans},
		{"scope/respected", s.scope},
		{"integrity/ref_moved_at_rest", s.refMoved},
		{"integrity/damaged_object_at_rest", s.damagedObject},
		{"races/R1_push_during_sync", s.pushDuringSync},
		{"races/R2_delete_during_sync", s.deleteDuringSync},
	} {
		c := c
		t.Run(c.name, func(t T) { s.run(t, c.name, c.f) })
	}
}

type repoSuite struct {
	h   RepositoryHarness
	git *gitrepo.Git
}

// repoClause is one repository clause's context.
type repoClause struct {
	clauseCtx
	h   RepositoryHarness
	git *gitrepo.Git
}

// run executes one clause under the same watchdog as the blob suite's.
func (s *repoSuite) run(t T, name string, f func(c *repoClause)) {
	runClause(t, name, s.h.Timeout, s.h.Stall, func(cc clauseCtx) { f(&repoClause{clauseCtx: cc, h: s.h, git: s.git}) })
}

// world builds a fresh primary with the harness's repository type.
func (c *repoClause) world() (*World, RepositoryApp) {
	c.Helper()
	w := NewWorld(c, WorldConfig{
		Server: c.h.Server,
		Setup:  c.h.Setup,
		Repositories: func(db *sqlx.DB) []strategy.RepositoryStrategy {
			return []strategy.RepositoryStrategy{c.h.Strategy(db)}
		},
	})
	return w, RepositoryApp{DB: w.PrimaryDB, Root: w.PrimaryRepositories, Publisher: w.Primary.Publisher()}
}

// secondaryConfig: the consistency pass runs only when triggered, so
// event-driven clauses prove the events path; retries are quick.
func (c *repoClause) secondaryConfig(w *World, s strategy.RepositoryStrategy) replicator.SecondaryConfig {
	cfg := w.SecondaryConfig(s)
	cfg.ConsistencyInterval = time.Hour
	cfg.Retry = strategy.Backoff{Base: 100 * time.Millisecond, Max: time.Second}
	return cfg
}

func (c *repoClause) converged(w *World, sec strategy.RepositoryStrategy) {
	c.Helper()
	c.waitFor("secondary is an exact copy", func() (bool, string) {
		d, err := w.CompareRepositories(c.ctx, sec)
		if err != nil {
			return false, err.Error()
		}
		return d.OK(), "got " + d.String() + ", want no difference"
	})
}

// dir is record id's repository on a site's root.
func (c *repoClause) dir(root string, s strategy.RepositoryStrategy, id int64) string {
	c.Helper()
	rel, err := s.RepositoryPath(c.ctx, id)
	c.check(err, fmt.Sprintf("RepositoryPath(%d)", id))
	return filepath.Join(root, filepath.FromSlash(rel))
}

func (c *repoClause) git1(dir string, args ...string) string {
	c.Helper()
	out, err := gitrepo.RunGit(c.ctx, c.git, dir, args...)
	c.check(err, "git "+strings.Join(args, " "))
	return out
}

// emptyTree is git's empty tree, known to every repository.
const emptyTree = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"

// commits adds n commits to branch of the bare repository at dir as a
// push would (the branch is created, from main when it exists, else as a
// root commit), without publishing anything.
func (c *repoClause) commits(dir, branch string, n int) {
	c.Helper()
	ref := "refs/heads/" + branch
	if _, err := gitrepo.RunGit(c.ctx, c.git, dir, "rev-parse", "--verify", "--quiet", ref); err != nil {
		if _, err := gitrepo.RunGit(c.ctx, c.git, dir, "rev-parse", "--verify", "--quiet", "refs/heads/main"); err == nil {
			c.git1(dir, "update-ref", ref, "refs/heads/main")
		} else {
			root := c.git1(dir, "-c", "user.name=geotest", "-c", "user.email=geotest@example.com",
				"commit-tree", emptyTree, "-m", "root")
			c.git1(dir, "update-ref", ref, root)
		}
	}
	for range n {
		c.check(gitrepo.AddCommit(c.ctx, c.git, dir, ref, 2048), "add a commit")
	}
}

// push adds n commits to branch of record id's repository and publishes
// the push through RepositoryHarness.Pushed.
func (c *repoClause) push(w *World, app RepositoryApp, s strategy.RepositoryStrategy, id int64, branch string, n int) {
	c.Helper()
	c.commits(c.dir(w.PrimaryRepositories, s, id), branch, n)
	c.check(c.h.Pushed(c.ctx, app, id), "Pushed")
}

// create makes a record through Harness.Create and pushes commits to its
// main branch.
func (c *repoClause) create(w *World, app RepositoryApp, s strategy.RepositoryStrategy, commits int) int64 {
	c.Helper()
	id, err := c.h.Create(c.ctx, app)
	c.check(err, "Create")
	c.push(w, app, s, id, "main", commits)
	return id
}

func (c *repoClause) refs(dir string) string {
	c.Helper()
	return c.git1(dir, "for-each-ref", "--format=%(refname) %(objectname)")
}

// sameRefs waits until record id's copy has the primary's refs.
func (c *repoClause) sameRefs(w *World, r *Running, s strategy.RepositoryStrategy, id int64, what string) {
	c.Helper()
	pdir, sdir := c.dir(w.PrimaryRepositories, s, id), c.dir(w.SecondaryRepositories, s, id)
	c.waitFor(what, func() (bool, string) {
		want := c.refs(pdir)
		state := "no row"
		if row, err := r.Store().Get(c.ctx, s.Name(), id); err == nil {
			state = row.State.String()
			if row.LastSyncFailure != "" {
				state += " (" + row.LastSyncFailure + ")"
			}
		}
		if _, err := os.Stat(sdir); err != nil {
			return false, fmt.Sprintf("got no copy, row %s; want refs %q", state, want)
		}
		got, err := gitrepo.RunGit(c.ctx, c.git, sdir, "for-each-ref", "--format=%(refname) %(objectname)")
		if err != nil {
			return false, fmt.Sprintf("got a copy git cannot read (%v), row %s; want refs %q", err, state, want)
		}
		return got == want, fmt.Sprintf("got refs %q, want %q", got, want)
	})
}

func (c *repoClause) waitGone(w *World, r *Running, name string, id int64, dir string) {
	c.Helper()
	c.waitFor(fmt.Sprintf("record %d removed from the secondary", id), func() (bool, string) {
		if _, err := r.Store().Get(c.ctx, name, id); err == nil {
			return false, "got a registry row, want none"
		}
		if _, err := os.Stat(dir); err == nil {
			return false, "got a repository at " + dir + ", want none"
		}
		return true, ""
	})
}

// --- adapter clauses ---

func (s *repoSuite) idsAscendingAndPaged(c *repoClause) {
	w, app := c.world()
	st := c.h.Strategy(w.PrimaryDB)
	var want []int64
	for range 5 {
		id, err := c.h.Create(c.ctx, app)
		c.check(err, "Create")
		want = append(want, id)
	}
	var got []int64
	after := int64(0)
	for range 10 {
		ids, err := st.IDs(c.ctx, after, 2)
		c.check(err, "IDs")
		if len(ids) > 2 {
			c.failf("IDs(after %d, limit 2): got %d ids, want at most 2", after, len(ids))
		}
		for _, id := range ids {
			if id <= after {
				c.failf("IDs(after %d): got %v, want ids > %d ascending", after, ids, after)
			}
			after = id
		}
		got = append(got, ids...)
		if len(ids) < 2 {
			break
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		c.failf("IDs paged by 2: got %v, want %v", got, want)
	}
}

func (s *repoSuite) pathsValid(c *repoClause) {
	w, app := c.world()
	st := c.h.Strategy(w.PrimaryDB)
	seen := map[string]int64{}
	var ids []int64
	for range 3 {
		id, err := c.h.Create(c.ctx, app)
		c.check(err, "Create")
		ids = append(ids, id)
		p, err := st.RepositoryPath(c.ctx, id)
		c.check(err, "RepositoryPath")
		if err := strategy.ValidateKey(p); err != nil {
			c.failf("RepositoryPath(%d): got %q (%v), want a valid path", id, p, err)
		}
		if again, _ := st.RepositoryPath(c.ctx, id); again != p {
			c.failf("RepositoryPath(%d) twice: got %q then %q, want the same path", id, p, again)
		}
		if other, dup := seen[p]; dup {
			c.failf("RepositoryPath(%d) and (%d): got the same path %q, want distinct paths", other, id, p)
		}
		seen[p] = id
		if _, err := os.Stat(filepath.Join(app.Root, filepath.FromSlash(p), "objects")); err != nil {
			c.failf("Create(%d): got no bare repository at %s (%v), want one", id, p, err)
		}
	}
	c.check(c.h.Delete(c.ctx, app, ids[0]), "Delete")
	if _, err := st.RepositoryPath(c.ctx, ids[0]); !errors.Is(err, strategy.ErrNotFound) {
		c.failf("RepositoryPath of a deleted record: got %v, want strategy.ErrNotFound", err)
	}
	if _, err := st.RepositoryPath(c.ctx, ids[len(ids)-1]+1_000_000); !errors.Is(err, strategy.ErrNotFound) {
		c.failf("RepositoryPath of an id that never existed: got %v, want strategy.ErrNotFound", err)
	}
}

// --- sync clauses (events only) ---

// started is a world with a secondary running, and a record synced.
func (c *repoClause) started() (*World, RepositoryApp, strategy.RepositoryStrategy, *Running, int64) {
	c.Helper()
	w, app := c.world()
	sec := c.h.Strategy(w.PrimaryDB)
	r := w.Start(c.secondaryConfig(w, sec))
	id := c.create(w, app, sec, 3)
	c.sameRefs(w, r, sec, id, "created repository synced")
	c.converged(w, sec)
	return w, app, sec, r, id
}

// created: a repository with commits, and an empty one (as git init
// --bare leaves it: no refs), both synced from their created events.
func (s *repoSuite) created(c *repoClause) {
	w, _, sec, r, _ := c.started()
	app := RepositoryApp{DB: w.PrimaryDB, Root: w.PrimaryRepositories, Publisher: w.Primary.Publisher()}
	empty, err := c.h.Create(c.ctx, app)
	c.check(err, "Create")
	c.waitFor("empty repository synced", func() (bool, string) {
		row, err := r.Store().Get(c.ctx, sec.Name(), empty)
		if err != nil {
			return false, "got no row, want synced"
		}
		return row.State == registry.StateSynced, fmt.Sprintf("got %s (%s), want synced", row.State, row.LastSyncFailure)
	})
	c.converged(w, sec)
}

func (s *repoSuite) pushed(c *repoClause) {
	w, app, sec, r, id := c.started()
	c.push(w, app, sec, id, "main", 2)
	c.push(w, app, sec, id, "feature", 1)
	c.sameRefs(w, r, sec, id, "push and new branch synced")
	c.converged(w, sec)
}

func (s *repoSuite) forcePushed(c *repoClause) {
	w, app, sec, r, id := c.started()
	dir := c.dir(w.PrimaryRepositories, sec, id)
	c.git1(dir, "update-ref", "refs/heads/main", c.git1(dir, "rev-parse", "refs/heads/main~1"))
	c.commits(dir, "main", 1)
	c.check(c.h.Pushed(c.ctx, app, id), "Pushed")
	c.sameRefs(w, r, sec, id, "rewritten history synced")
	c.converged(w, sec)
}

func (s *repoSuite) branchDeleted(c *repoClause) {
	w, app, sec, r, id := c.started()
	c.push(w, app, sec, id, "feature", 1)
	c.sameRefs(w, r, sec, id, "new branch synced")
	c.git1(c.dir(w.PrimaryRepositories, sec, id), "update-ref", "-d", "refs/heads/feature")
	c.check(c.h.Pushed(c.ctx, app, id), "Pushed")
	c.sameRefs(w, r, sec, id, "deleted branch pruned")
	c.converged(w, sec)
}

func (s *repoSuite) deleted(c *repoClause) {
	w, app, sec, r, id := c.started()
	dir := c.dir(w.SecondaryRepositories, sec, id)
	c.check(c.h.Delete(c.ctx, app, id), "Delete")
	c.waitGone(w, r, sec.Name(), id, dir)
	c.converged(w, sec)
}

func (s *repoSuite) backfill(c *repoClause) {
	w, app := c.world()
	sec := c.h.Strategy(w.PrimaryDB)
	var ids []int64
	for i := range 5 {
		ids = append(ids, c.create(w, app, sec, 1+i))
	}
	r := w.Start(c.secondaryConfig(w, sec))
	r.TriggerConsistency()
	for _, id := range ids {
		c.sameRefs(w, r, sec, id, fmt.Sprintf("pre-existing repository %d backfilled", id))
	}
	c.converged(w, sec)
}

func (s *repoSuite) orphans(c *repoClause) {
	w, app := c.world()
	sec := c.h.Strategy(w.PrimaryDB)
	id := c.create(w, app, sec, 1)
	orphan := id + 1_000_000
	// A registry row for a record the primary does not have (its deleted
	// event was lost), inserted as the consistency pass would.
	_, err := w.TrackingDB.ExecContext(c.ctx,
		`INSERT INTO geo_registry (replicable, model_id, created_at, updated_at) VALUES ($1, $2, now(), now())`, sec.Name(), orphan)
	c.check(err, "insert orphan row")
	r := w.Start(c.secondaryConfig(w, sec))
	r.TriggerConsistency()
	c.sameRefs(w, r, sec, id, "repository synced")
	c.waitFor("orphan row removed", func() (bool, string) {
		_, err := r.Store().Get(c.ctx, sec.Name(), orphan)
		return errors.Is(err, registry.ErrNotFound), fmt.Sprintf("got %v, want no row for orphan %d", err, orphan)
	})
	c.converged(w, sec)
}

func (s *repoSuite) scope(c *repoClause) {
	if c.h.ScopedStrategy == nil || c.h.CreateOutOfScope == nil {
		c.Skip("RepositoryHarness.ScopedStrategy or CreateOutOfScope is nil: the type has no scope")
		return
	}
	w, app := c.world()
	all := c.h.Strategy(w.PrimaryDB)
	in := c.create(w, app, all, 1)
	out, err := c.h.CreateOutOfScope(c.ctx, app)
	c.check(err, "CreateOutOfScope")
	c.push(w, app, all, out, "main", 1)
	scoped := c.h.ScopedStrategy(w.PrimaryDB)
	if _, err := scoped.RepositoryPath(c.ctx, out); !errors.Is(err, strategy.ErrNotFound) {
		c.failf("scoped RepositoryPath(%d) of an out-of-scope record: got %v, want strategy.ErrNotFound", out, err)
	}
	r := w.Start(c.secondaryConfig(w, scoped))
	r.TriggerConsistency()
	c.sameRefs(w, r, scoped, in, "in-scope repository synced")
	out2, err := c.h.CreateOutOfScope(c.ctx, app)
	c.check(err, "CreateOutOfScope")
	c.push(w, app, all, out2, "main", 1)
	in2 := c.create(w, app, all, 1)
	c.sameRefs(w, r, scoped, in2, "in-scope repository created while running synced")
	c.converged(w, scoped)
	for _, id := range []int64{out, out2} {
		if n := w.Transfers.Count(scoped.Name(), id); n != 0 {
			c.failf("transfers of out-of-scope record %d: got %d, want 0", id, n)
		}
	}
}

// --- corruption at rest ---

// verified waits until record id's row is synced and verified.
func (c *repoClause) verified(r *Running, name string, id int64, what string) {
	c.Helper()
	c.waitFor(what, func() (bool, string) {
		row, err := r.Store().Get(c.ctx, name, id)
		if err != nil {
			return false, "got no row: " + err.Error()
		}
		ok := row.State == registry.StateSynced && row.VerificationState == registry.VerificationSucceeded
		return ok, fmt.Sprintf("got %s, verification %s (%s), want synced and verified", row.State, row.VerificationState, row.VerificationFailure)
	})
}

func (s *repoSuite) refMoved(c *repoClause) {
	w, _, sec, r, id := c.started()
	c.verified(r, sec.Name(), id, "verified after sync")
	dir := c.dir(w.SecondaryRepositories, sec, id)
	c.git1(dir, "update-ref", "refs/heads/main", "refs/heads/main~1")
	_, err := r.Reverify(c.ctx, sec.Name(), []int64{id})
	c.check(err, "Reverify")
	c.sameRefs(w, r, sec, id, "a ref moved on the secondary caught by verification and repaired")
	c.verified(r, sec.Name(), id, "verified after the repair")
	c.converged(w, sec)
}

func (s *repoSuite) damagedObject(c *repoClause) {
	w, _, sec, r, id := c.started()
	c.verified(r, sec.Name(), id, "verified after sync")
	dir := c.dir(w.SecondaryRepositories, sec, id)
	c.git1(dir, "repack", "-a", "-d", "-q")
	packs, _ := filepath.Glob(filepath.Join(dir, "objects", "pack", "*.pack"))
	if len(packs) == 0 {
		c.failf("the secondary's copy: got no pack after a repack, want one")
	}
	raw, err := os.ReadFile(packs[0])
	c.check(err, "read the copy's pack")
	raw[len(raw)/2] ^= 0xff
	c.check(os.Chmod(packs[0], 0o644), "make the pack writable")
	c.check(os.WriteFile(packs[0], raw, 0o644), "damage the copy's pack")
	before := w.Transfers.Count(sec.Name(), id)
	_, err = r.Reverify(c.ctx, sec.Name(), []int64{id})
	c.check(err, "Reverify")
	c.waitFor("a damaged object caught by verification and repaired", func() (bool, string) {
		n := w.Transfers.Count(sec.Name(), id)
		_, ferr := gitrepo.RunGit(c.ctx, c.git, dir, "fsck", "--no-progress")
		return n > before && ferr == nil, fmt.Sprintf("got %d new transfers and fsck %v, want a fetch and a sound copy", n-before, ferr)
	})
	c.verified(r, sec.Name(), id, "verified after the repair")
	c.converged(w, sec)
}

// --- races ---

// packGate wraps the primary's endpoint and holds the first pack answer
// (an upload-pack POST that is not protocol v2's ls-refs) of one
// repository after its first byte, until released.
type packGate struct {
	next    http.Handler
	prefix  string // RepositoryPathPrefix + "{type}/{id}/"
	once    sync.Once
	arrived chan struct{}
	release chan struct{}
	freed   sync.Once
}

// free releases the held pack (once; later calls do nothing).
func (g *packGate) free() { g.freed.Do(func() { close(g.release) }) }

func (g *packGate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, g.prefix) || !strings.HasSuffix(r.URL.Path, "/git-upload-pack") {
		g.next.ServeHTTP(w, r)
		return
	}
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	plain := body
	if r.Header.Get("Content-Encoding") == "gzip" {
		if zr, err := gzip.NewReader(bytes.NewReader(body)); err == nil {
			plain, _ = io.ReadAll(zr)
		}
	}
	hold := false
	if !bytes.Contains(plain, []byte("command=ls-refs")) {
		g.once.Do(func() { hold = true })
	}
	if hold {
		w = &gateWriter{ResponseWriter: w, g: g}
	}
	g.next.ServeHTTP(w, r)
}

// gateWriter writes the first byte, flushes, and waits for the release.
type gateWriter struct {
	http.ResponseWriter
	g    *packGate
	done bool
}

func (gw *gateWriter) Write(p []byte) (int, error) {
	if gw.done || len(p) < 2 {
		return gw.ResponseWriter.Write(p)
	}
	gw.done = true
	n, err := gw.ResponseWriter.Write(p[:1])
	gw.Flush()
	close(gw.g.arrived)
	<-gw.g.release
	if err != nil {
		return n, err
	}
	m, err := gw.ResponseWriter.Write(p[1:])
	return n + m, err
}

func (gw *gateWriter) Flush() {
	if f, ok := gw.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// held starts a gate on record id's repository and returns it with the
// URL to give the secondary.
func (c *repoClause) held(w *World, name string, id int64) (*packGate, string) {
	g := &packGate{next: w.Primary.Handler(), prefix: fmt.Sprintf("%s%s/%d/", transfer.RepositoryPathPrefix, name, id),
		arrived: make(chan struct{}), release: make(chan struct{})}
	srv := httptest.NewServer(g)
	c.Cleanup(srv.Close)
	c.Cleanup(g.free)
	return g, srv.URL
}

func (c *repoClause) waitArrived(g *packGate) {
	c.Helper()
	select {
	case <-g.arrived:
	case <-c.ctx.Done():
		c.failf("the fetch never reached the primary: got no pack in flight, want one")
	}
}

func (s *repoSuite) pushDuringSync(c *repoClause) {
	w, app := c.world()
	sec := c.h.Strategy(w.PrimaryDB)
	id := c.create(w, app, sec, 20)
	g, url := c.held(w, sec.Name(), id)
	cfg := c.secondaryConfig(w, sec)
	cfg.PrimaryURL = url
	r := w.Start(cfg)
	r.TriggerConsistency()
	c.waitArrived(g)
	held, err := r.Store().Get(c.ctx, sec.Name(), id)
	c.check(err, "registry row of the fetch in flight")
	c.push(w, app, sec, id, "main", 1)
	c.waitFor("the push's event reaches the registry during the fetch", func() (bool, string) {
		row, err := r.Store().Get(c.ctx, sec.Name(), id)
		return err == nil && row.Seq != held.Seq, fmt.Sprintf("got seq %d (%v), want a new generation", row.Seq, err)
	})
	g.free()
	c.sameRefs(w, r, sec, id, "R1: the copy holds the push made during the fetch")
	c.converged(w, sec)
}

func (s *repoSuite) deleteDuringSync(c *repoClause) {
	w, app := c.world()
	sec := c.h.Strategy(w.PrimaryDB)
	id := c.create(w, app, sec, 20)
	dir := c.dir(w.SecondaryRepositories, sec, id)
	g, url := c.held(w, sec.Name(), id)
	cfg := c.secondaryConfig(w, sec)
	cfg.PrimaryURL = url
	r := w.Start(cfg)
	r.TriggerConsistency()
	c.waitArrived(g)
	c.check(c.h.Delete(c.ctx, app, id), "Delete")
	c.waitFor("the deleted event removes the row during the fetch", func() (bool, string) {
		_, err := r.Store().Get(c.ctx, sec.Name(), id)
		return errors.Is(err, registry.ErrNotFound), fmt.Sprintf("got %v, want no row", err)
	})
	g.free()
	c.waitFor("the interrupted fetch ends", func() (bool, string) {
		n := w.Transfers.Count(sec.Name(), id)
		return n >= 1, "got no finished transfer"
	})
	c.waitGone(w, r, sec.Name(), id, dir)
	c.converged(w, sec)
}
