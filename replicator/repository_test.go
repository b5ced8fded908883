package replicator_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/internal/gitrepo"
	"github.com/geoframework/geo/internal/testtype"
	"github.com/geoframework/geo/internal/xfer"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/strategy"
)

// repoFixture is a world with two kinds side by side: the items blob type
// and the projects repository type.
type repoFixture struct {
	*geotest.World
	items    *testtype.Type
	app      *testtype.App
	projects *testtype.RepoType
	repos    *testtype.RepoApp
	git      *gitrepo.Git
	gate     *repoGate
	url      string // the gated primary endpoint
}

// requireGit returns a Git, or ends the test: a failure under CI, a skip
// elsewhere (geo's repository kind runs the git binary).
func requireGit(t *testing.T) *gitrepo.Git {
	t.Helper()
	g, err := gitrepo.New(context.Background(), nil)
	if err != nil {
		msg := fmt.Sprintf("repository tests need the git binary: %v (apt-get install git)", err)
		t.Fatal(msg)
	}
	return g
}

func newRepoFixture(t *testing.T) *repoFixture {
	t.Helper()
	g := requireGit(t)
	f := &repoFixture{git: g}
	w := geotest.NewWorld(t, geotest.WorldConfig{Verbose: os.Getenv("GEO_VERBOSE") != "", Server: pg,
		Setup: func(ctx context.Context, db *sqlx.DB) error {
			if _, err := db.ExecContext(ctx, testtype.Schema("items")); err != nil {
				return err
			}
			_, err := db.ExecContext(ctx, testtype.RepoSchema("projects"))
			return err
		},
		Strategies: func(db *sqlx.DB) []strategy.BlobStrategy {
			f.items = &testtype.Type{TypeName: "item", Table: "items", DB: db}
			return []strategy.BlobStrategy{f.items}
		},
		Repositories: func(db *sqlx.DB) []strategy.RepositoryStrategy {
			f.projects = &testtype.RepoType{TypeName: "project", Table: "projects", DB: db}
			return []strategy.RepositoryStrategy{f.projects}
		},
	})
	f.World = w
	f.app = &testtype.App{Type: f.items, Storage: w.PrimaryStorage, Publisher: w.Primary.Publisher()}
	f.repos = &testtype.RepoApp{Type: f.projects, Root: w.PrimaryRepositories, Publisher: w.Primary.Publisher(), Git: g}
	f.gate = &repoGate{next: w.Primary.Handler(), holds: map[string]*repoHold{}}
	srv := httptest.NewServer(f.gate)
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

// secondary returns the secondary's adapters (reading the primary's
// database) and a configuration for them through the gate.
func (f *repoFixture) secondary(regions ...int) (*testtype.Type, *testtype.RepoType, replicator.SecondaryConfig) {
	items := &testtype.Type{TypeName: "item", Table: "items", DB: f.PrimaryDB}
	projects := &testtype.RepoType{TypeName: "project", Table: "projects", DB: f.PrimaryDB}
	if len(regions) > 0 {
		projects.Regions = regions
	}
	cfg := f.SecondaryConfig(items, projects)
	cfg.Retry = strategy.Backoff{Base: 200 * time.Millisecond, Max: 2 * time.Second}
	cfg.PrimaryURL = f.url
	return items, projects, cfg
}

func (f *repoFixture) waitConverged(t *testing.T, strategies ...strategy.Strategy) {
	t.Helper()
	geotest.WaitFor(t, stall, "both kinds converge to the primary", func() (bool, string) {
		d, err := f.CompareAll(context.Background(), strategies...)
		if err != nil {
			return false, err.Error()
		}
		return d.OK(), d.String()
	})
}

// secondaryDir is record id's copy on the secondary.
func (f *repoFixture) secondaryDir(t *testing.T, id int64) string {
	t.Helper()
	rel, err := f.projects.RepositoryPath(context.Background(), id)
	require.NoError(t, err)
	return filepath.Join(f.SecondaryRepositories, rel)
}

func (f *repoFixture) refsOf(t *testing.T, dir string) string {
	t.Helper()
	out, err := gitrepo.RunGit(context.Background(), f.git, dir, "for-each-ref", "--format=%(refname) %(objectname)")
	require.NoError(t, err)
	return out
}

// repoGate wraps the primary's endpoint: it can hold the next pack (the
// upload-pack answer that carries objects) of a repository after its
// first byte, so a test can change the record while the fetch is in
// flight.
type repoGate struct {
	next http.Handler
	mu   sync.Mutex
	// holds by "type/id"
	holds map[string]*repoHold
}

type repoHold struct {
	arrived, release chan struct{}
	once             sync.Once
}

// Hold holds the next pack of typ/id; arrived is closed once it is held.
func (g *repoGate) Hold(typ string, id int64) (arrived <-chan struct{}, release func()) {
	h := &repoHold{arrived: make(chan struct{}), release: make(chan struct{})}
	g.mu.Lock()
	g.holds[fmt.Sprintf("%s/%d", typ, id)] = h
	g.mu.Unlock()
	return h.arrived, func() { h.once.Do(func() { close(h.release) }) }
}

func (g *repoGate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/geo/v1/repositories/")
	if !ok || r.Method != http.MethodPost || !strings.HasSuffix(rest, "/git-upload-pack") {
		g.next.ServeHTTP(w, r)
		return
	}
	parts := strings.SplitN(rest, "/", 3)
	k := parts[0] + "/" + parts[1]
	// Peek at the request: protocol v2's ls-refs carries no pack.
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	plain := body
	if r.Header.Get("Content-Encoding") == "gzip" {
		if zr, err := gzip.NewReader(bytes.NewReader(body)); err == nil {
			plain, _ = io.ReadAll(zr)
		}
	}
	g.mu.Lock()
	h := g.holds[k]
	if h != nil && !bytes.Contains(plain, []byte("command=ls-refs")) {
		delete(g.holds, k)
	} else {
		h = nil
	}
	g.mu.Unlock()
	if h != nil {
		w = &holdWriter{ResponseWriter: w, arrived: h.arrived, release: h.release}
	}
	g.next.ServeHTTP(w, r)
}

// TestRepositoriesBesideBlobs: both kinds in one Set and one secondary
// process, on the same engines: backfill of pre-existing repositories,
// created, pushed (a new branch too), force-pushed (history rewritten),
// branch deleted, repository deleted; blob items converge beside them.
// Every copy's refs equal the primary's and its objects are whole.
func TestRepositoriesBesideBlobs(t *testing.T) {
	t.Parallel()
	f := newRepoFixture(t)
	ctx := context.Background()
	pre, err := f.repos.Create(ctx, 0, 5) // before the secondary exists: backfill
	require.NoError(t, err)
	items, projects, cfg := f.secondary()
	f.Start(cfg)
	created, err := f.repos.Create(ctx, 0, 3)
	require.NoError(t, err)
	f.createBlobs(t, 5)
	f.waitConverged(t, items, projects)

	require.NoError(t, f.repos.Push(ctx, created, "main", 2), "pushed")
	require.NoError(t, f.repos.Push(ctx, created, "feature", 1), "new branch")
	f.waitConverged(t, items, projects)
	require.NoError(t, f.repos.ForcePush(ctx, pre), "force-pushed")
	f.waitConverged(t, items, projects)
	require.NoError(t, f.repos.DeleteBranch(ctx, created, "feature"), "branch deleted")
	f.waitConverged(t, items, projects)
	require.NotContains(t, f.refsOf(t, f.secondaryDir(t, created)), "refs/heads/feature", "a deleted branch is pruned")

	dir := f.secondaryDir(t, pre)
	require.NoError(t, f.repos.Delete(ctx, pre, true), "repository deleted")
	f.waitConverged(t, items, projects)
	_, err = os.Stat(dir)
	require.True(t, os.IsNotExist(err), "deleted repository's copy: stat err = %v, want not exist", err)
}

func (f *repoFixture) createBlobs(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		_, err := f.app.Create(context.Background(), 0, payload(i, 300))
		require.NoError(t, err)
	}
}

// TestRepositoryDeleteDuringFetchLeavesNothing: R2 for repositories. The
// first fetch of a repository is held mid-transfer, the record is
// deleted (its event removes the row), the fetch is released and
// completes; its stage is discarded and no repository directory is left.
func TestRepositoryDeleteDuringFetchLeavesNothing(t *testing.T) { // R2 end to end
	t.Parallel()
	f := newRepoFixture(t)
	ctx := context.Background()
	f.repos.CommitSize = 32 << 10
	id, err := f.repos.Create(ctx, 0, 20)
	require.NoError(t, err)
	keep, err := f.repos.Create(ctx, 0, 1)
	require.NoError(t, err)
	dir := f.secondaryDir(t, id)
	arrived, release := f.gate.Hold("project", id)
	defer release()
	items, projects, cfg := f.secondary()
	r := f.Start(cfg)
	waitClosed(t, arrived, "fetch in flight")
	rel, err := f.repos.DeleteRecord(ctx, id, true)
	require.NoError(t, err)
	geotest.WaitFor(t, stall, "deleted event removes the row", func() (bool, string) {
		_, err := r.Store().Get(ctx, "project", id)
		return err != nil, fmt.Sprint(err)
	})
	release()
	f.waitConverged(t, items, projects)
	_, err = os.Stat(dir)
	require.True(t, os.IsNotExist(err), "R2: repository of a record deleted during its fetch: stat err = %v, want not exist", err)
	require.NoError(t, os.RemoveAll(filepath.Join(f.PrimaryRepositories, rel)))
	_, err = r.Store().Get(ctx, "project", keep)
	require.NoError(t, err)
}

// TestRepositoryPushDuringFetchSyncsAgain: R1 for repositories. A push
// whose event arrives while a fetch is in flight makes the row sync again
// after it: the copy ends with the pushed commits.
func TestRepositoryPushDuringFetchSyncsAgain(t *testing.T) { // R1 end to end
	t.Parallel()
	f := newRepoFixture(t)
	ctx := context.Background()
	f.repos.CommitSize = 32 << 10
	id, err := f.repos.Create(ctx, 0, 20)
	require.NoError(t, err)
	arrived, release := f.gate.Hold("project", id)
	defer release()
	items, projects, cfg := f.secondary()
	r := f.Start(cfg)
	waitClosed(t, arrived, "fetch in flight")
	held, err := r.Store().Get(ctx, "project", id)
	require.NoError(t, err)
	require.NoError(t, f.repos.Push(ctx, id, "main", 1))
	geotest.WaitFor(t, stall, "push event gives the row a new generation", func() (bool, string) {
		row, err := r.Store().Get(ctx, "project", id)
		return err == nil && row.Seq != held.Seq, fmt.Sprint(row.State, row.Seq, err)
	})
	release()
	f.waitConverged(t, items, projects)
	dir, err := f.repos.Dir(ctx, id)
	require.NoError(t, err)
	require.Equal(t, f.refsOf(t, dir), f.refsOf(t, f.secondaryDir(t, id)), "R1: the copy holds the push made during the fetch")
}

// TestRepositoryEndpointTokens: the repository endpoint takes the
// per-record tokens: a token for one repository opens no other, a
// request without one is refused, a push is refused, and a clone with
// the right token works (git carries it from its environment).
func TestRepositoryEndpointTokens(t *testing.T) {
	t.Parallel()
	f := newRepoFixture(t)
	ctx := context.Background()
	a, err := f.repos.Create(ctx, 0, 2)
	require.NoError(t, err)
	b, err := f.repos.Create(ctx, 0, 2)
	require.NoError(t, err)
	base := f.HTTP.URL
	get := func(id, tokenFor int64, suffix string) int {
		req, err := http.NewRequest(http.MethodGet, base+xfer.RepositoryPath("project", id)+suffix, nil)
		require.NoError(t, err)
		if tokenFor > 0 {
			auth, err := xfer.Authorization(f.Credentials, "project", tokenFor, time.Now())
			require.NoError(t, err)
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	const refs = "/info/refs?service=git-upload-pack"
	require.Equal(t, http.StatusOK, get(a, a, refs), "a's token on a")
	require.Equal(t, http.StatusUnauthorized, get(b, a, refs), "a's token on b")
	require.Equal(t, http.StatusUnauthorized, get(a, 0, refs), "no token")
	require.Equal(t, http.StatusForbidden, get(a, a, "/info/refs?service=git-receive-pack"), "push advertisement")
	item, err := f.app.Create(ctx, 0, payload(1, 10))
	require.NoError(t, err)
	req, _ := http.NewRequest(http.MethodGet, base+xfer.TransferPath("item", item), nil)
	auth, _ := xfer.Authorization(f.Credentials, "project", item, time.Now())
	req.Header.Set("Authorization", auth)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "a repository's token on a blob of the same id")

	// A push with a valid token: refused (403 before git runs).
	work := t.TempDir()
	dir, err := f.repos.Dir(ctx, a)
	require.NoError(t, err)
	_, err = gitrepo.RunGit(ctx, f.git, work, "clone", "--quiet", dir, "w")
	require.NoError(t, err)
	tokenA, _ := xfer.Authorization(f.Credentials, "project", a, time.Now())
	push := exec.Command("git", "-C", filepath.Join(work, "w"), "push", base+xfer.RepositoryPath("project", a), "HEAD:refs/heads/evil")
	push.Env = append(os.Environ(), "GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=http.extraHeader", "GIT_CONFIG_VALUE_0=Authorization: "+tokenA,
		"GIT_TERMINAL_PROMPT=0")
	out, err := push.CombinedOutput()
	require.Error(t, err, "push must be refused: %s", out)
	require.Contains(t, string(out), "403")
	refs2, err := gitrepo.RunGit(ctx, f.git, dir, "for-each-ref")
	require.NoError(t, err)
	require.NotContains(t, refs2, "evil")
}

// TestRepositorySkipDownload: a copy already in place whose refs match
// the primary's checksum and whose objects are all there is settled
// without a fetch (a restored or re-added site); a copy with matching
// refs and a missing object is fetched, never counted as synced.
func TestRepositorySkipDownload(t *testing.T) {
	t.Parallel()
	f := newRepoFixture(t)
	ctx := context.Background()
	whole, err := f.repos.Create(ctx, 0, 3)
	require.NoError(t, err)
	broken, err := f.repos.Create(ctx, 0, 3)
	require.NoError(t, err)
	geotest.WaitFor(t, stall, "the primary checksums both", func() (bool, string) {
		n := 0
		for _, id := range []int64{whole, broken} {
			if sum, _ := f.Primary.Checksums().Checksum(ctx, "project", id); sum != "" {
				n++
			}
		}
		return n == 2, fmt.Sprintf("%d of 2 checksummed", n)
	})
	// The secondary's copies, restored from a backup: one whole, one
	// missing a loose object its refs need.
	for _, id := range []int64{whole, broken} {
		src, err := f.repos.Dir(ctx, id)
		require.NoError(t, err)
		dst := f.secondaryDir(t, id)
		require.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o755))
		out, err := exec.Command("cp", "-a", src, dst).CombinedOutput()
		require.NoError(t, err, "%s", out)
	}
	bdir := f.secondaryDir(t, broken)
	_, err = gitrepo.RunGit(ctx, f.git, bdir, "repack", "-a", "-d", "-q")
	require.NoError(t, err)
	packs, _ := filepath.Glob(filepath.Join(bdir, "objects/pack/*"))
	for _, p := range packs {
		require.NoError(t, os.Remove(p))
	}
	items, projects, cfg := f.secondary()
	f.Start(cfg)
	f.waitConverged(t, items, projects)
	require.Equal(t, 0, f.Transfers.Count("project", whole), "a whole copy with matching refs is not fetched")
	require.Positive(t, f.Transfers.Count("project", broken), "a copy missing objects is fetched")
}

// TestRepositoryVerificationCatchesCorruption: re-verification compares
// the copy's refs with the primary's checksum and runs a full git fsck: a
// ref moved on the secondary is a mismatch, a damaged object under
// matching refs a damaged copy; both resync (the damaged copy is fetched
// whole), and the copy ends sound again.
func TestRepositoryVerificationCatchesCorruption(t *testing.T) {
	t.Parallel()
	f := newRepoFixture(t)
	ctx := context.Background()
	id, err := f.repos.Create(ctx, 0, 4)
	require.NoError(t, err)
	items, projects, cfg := f.secondary()
	r := f.Start(cfg)
	f.waitConverged(t, items, projects)
	verified := func() (bool, string) {
		row, err := r.Store().Get(ctx, "project", id)
		return err == nil && row.State == registry.StateSynced && row.VerificationState == registry.VerificationSucceeded,
			fmt.Sprint(row.State, row.VerificationState, row.VerificationFailure, err)
	}
	geotest.WaitFor(t, stall, "verified after sync", verified)
	dir := f.secondaryDir(t, id)

	// A ref moved on the secondary.
	_, err = gitrepo.RunGit(ctx, f.git, dir, "update-ref", "refs/heads/main", "refs/heads/main~1")
	require.NoError(t, err)
	_, err = r.Reverify(ctx, "project", []int64{id})
	require.NoError(t, err)
	geotest.WaitFor(t, stall, "the moved ref is caught and repaired", func() (bool, string) {
		row, err := r.Store().Get(ctx, "project", id)
		ok := err == nil && row.ChecksumMismatch
		return ok || row.VerificationRetryCount > 0, fmt.Sprint(row.State, row.VerificationState, row.VerificationFailure, err)
	})
	f.waitConverged(t, items, projects)
	geotest.WaitFor(t, stall, "verified after the resync", verified)

	// A damaged object: refs still match.
	packs, _ := filepath.Glob(filepath.Join(dir, "objects/pack/*.pack"))
	require.NotEmpty(t, packs)
	data, err := os.ReadFile(packs[0])
	require.NoError(t, err)
	data[len(data)/2] ^= 0xff
	require.NoError(t, os.Chmod(packs[0], 0o644))
	require.NoError(t, os.WriteFile(packs[0], data, 0o644))
	_, err = r.Reverify(ctx, "project", []int64{id})
	require.NoError(t, err)
	var reason string
	geotest.WaitFor(t, stall, "the damaged object is caught", func() (bool, string) {
		row, err := r.Store().Get(ctx, "project", id)
		if err == nil && strings.Contains(row.VerificationFailure, "damaged") {
			reason = row.VerificationFailure
			return true, ""
		}
		return false, fmt.Sprint(row.State, row.VerificationState, row.VerificationFailure, err)
	})
	require.Contains(t, reason, "damaged on the secondary")
	geotest.WaitFor(t, stall, "repaired and verified", func() (bool, string) {
		ok, why := verified()
		if !ok {
			return false, why
		}
		_, err := gitrepo.RunGit(ctx, f.git, dir, "fsck", "--no-progress")
		return err == nil, fmt.Sprint(err)
	})
}

// TestRepositoryExistenceScan: a copy removed outside geo is found by the
// existence scan (which checks each synced repository's directory) and
// fetched again; a blob removed from the blob storage is found the same
// scan, and a repository row is never looked for in the blob storage.
func TestRepositoryExistenceScan(t *testing.T) {
	t.Parallel()
	f := newRepoFixture(t)
	ctx := context.Background()
	id, err := f.repos.Create(ctx, 0, 2)
	require.NoError(t, err)
	f.createBlobs(t, 3)
	items, projects, cfg := f.secondary()
	r := f.Start(cfg)
	f.waitConverged(t, items, projects)
	checked, missing, err := r.CheckStorage(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(4), checked, "three blobs and one repository, each in its own storage")
	require.Zero(t, missing, "nothing missing: a repository row is not looked for among the blobs")
	require.NoError(t, os.RemoveAll(f.secondaryDir(t, id)))
	_, missing, err = r.CheckStorage(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), missing)
	f.waitConverged(t, items, projects)
}
