package gitrepo

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestSyncLifecycle follows one repository through its life on a
// secondary: created, pushed, force-pushed (history rewritten), a branch
// deleted, a tag added, HEAD moved; each time fetched into a stage that
// borrows the live copy and committed. The copy's refs, checksum and HEAD
// equal the primary's and fsck passes after every step, and an
// incremental fetch transfers only the new objects.
func TestSyncLifecycle(t *testing.T) {
	t.Parallel()
	g := requireGit(t)
	ctx := testCtx(t)
	p := newPrimary(t, g)
	s := newStore(t, g)
	const rel = "projects/ab/cd/one.git"
	w := p.create(rel)
	w.commit(30, 16<<10)
	w.git("branch", "feature")
	w.git("branch", "old")
	w.git("tag", "v1")
	w.git("push", "--quiet", "origin", "main", "feature", "old", "v1")

	// Created: a new copy, staged in the temporary directory.
	st, err := s.Fetch(ctx, FetchParams{RelPath: rel, URL: p.url(rel), Authorization: p.token})
	if err != nil {
		t.Fatal(err)
	}
	if !st.IsNew() || !strings.HasPrefix(st.dir, filepath.Join(s.root, tempDirName)+"/") {
		t.Fatalf("new repository: IsNew %v, staged at %s", st.IsNew(), st.dir)
	}
	if _, err := os.Lstat(filepath.Join(s.root, rel)); !os.IsNotExist(err) {
		t.Fatalf("the path exists before commit: %v", err)
	}
	if err := st.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	assertSame(t, ctx, p, s, rel)
	full := p.served.Swap(0)
	if cfg := sh(t, filepath.Join(s.root, rel), "config", "--list", "--local"); strings.Contains(cfg, "remote.") {
		t.Fatalf("the copy's config names the primary's endpoint:\n%s", cfg)
	}

	// Nothing changed: nothing to commit, only a negotiation travels.
	st, err = s.Fetch(ctx, FetchParams{RelPath: rel, URL: p.url(rel), Authorization: p.token})
	if err != nil {
		t.Fatal(err)
	}
	if st.IsNew() || st.Changed() {
		t.Fatalf("unchanged primary: IsNew %v, Changed %v", st.IsNew(), st.Changed())
	}
	if err := st.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n := p.served.Swap(0); n > 1024 {
		t.Fatalf("a fetch with nothing new served %d bytes", n)
	}

	// Pushed, force-pushed, branch deleted, tag added, HEAD moved.
	before := sh(t, w.bare, "rev-parse", "main")
	w.commit(3, 1<<10)
	w.git("checkout", "--quiet", "feature")
	w.git("reset", "--quiet", "--hard", "HEAD~5")
	w.commit(1, 1<<10)
	w.git("checkout", "--quiet", "main")
	w.git("tag", "-a", "-m", "release 2", "v2")
	w.git("push", "--quiet", "--force", "origin", "main", "feature", "v2", ":old")
	sh(t, w.bare, "symbolic-ref", "HEAD", "refs/heads/feature")
	wantObjects := sh(t, w.bare, "rev-list", "--objects", "--count", "--all", "--not", before)

	st, err = s.Fetch(ctx, FetchParams{RelPath: rel, URL: p.url(rel), Authorization: p.token})
	if err != nil {
		t.Fatal(err)
	}
	if st.IsNew() || !st.Changed() {
		t.Fatalf("changed primary: IsNew %v, Changed %v", st.IsNew(), st.Changed())
	}
	// The stage holds only the new objects; the live copy none of them yet.
	staged := countObjects(t, st.dir)
	want, _ := strconv.Atoi(wantObjects)
	if staged < want || staged > 2*want+2 {
		t.Fatalf("stage holds %d objects, want about the %d new ones", staged, want)
	}
	if got := sh(t, filepath.Join(s.root, rel), "rev-parse", "refs/heads/main"); got != before {
		t.Fatalf("the live copy moved before commit: main at %s", got)
	}
	if err := st.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	assertSame(t, ctx, p, s, rel)
	inc := p.served.Swap(0)
	t.Logf("served: first clone %d bytes, incremental %d bytes; stage held %d objects, %d new", full, inc, staged, want)
	if inc*10 > full {
		t.Fatalf("incremental fetch served %d bytes, the first clone %d: want under a tenth", inc, full)
	}
	if _, err := os.Lstat(filepath.Join(s.root, rel, "refs/heads/old")); !os.IsNotExist(err) {
		t.Fatalf("deleted branch still in the copy: %v", err)
	}
	if es := tempEntries(t, s); len(es) != 0 {
		t.Fatalf("temporary directory holds %v after commits", es)
	}
}

// countObjects returns the objects in the repository's own object
// directory (packed and loose), not counting alternates.
func countObjects(t testing.TB, dir string) int {
	t.Helper()
	n := 0
	for line := range strings.SplitSeq(sh(t, dir, "count-objects", "-v"), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		if k == "count" || k == "in-pack" {
			i, _ := strconv.Atoi(v)
			n += i
		}
	}
	return n
}

// TestSHA256Repository syncs a repository in the SHA-256 object format,
// new and incremental: the stage that borrows the copy must be created
// in the copy's format.
func TestSHA256Repository(t *testing.T) {
	t.Parallel()
	g := requireGit(t)
	ctx := testCtx(t)
	p := newPrimary(t, g)
	s := newStore(t, g)
	const rel = "sha256.git"
	bare := filepath.Join(p.root, rel)
	sh(t, "", "init", "--bare", "--quiet", "--object-format=sha256", bare)
	w := &work{t: t, dir: t.TempDir(), bare: bare}
	sh(t, w.dir, "init", "--quiet", "--object-format=sha256", ".")
	sh(t, w.dir, "remote", "add", "origin", bare)
	w.commit(3, 100)
	w.git("push", "--quiet", "origin", "main")
	p.sync(ctx, s, rel)
	assertSame(t, ctx, p, s, rel)
	w.commit(2, 100)
	w.git("push", "--quiet", "origin", "main")
	st := p.sync(ctx, s, rel)
	if st.IsNew() {
		t.Fatal("the second sync was not incremental")
	}
	assertSame(t, ctx, p, s, rel)
	if f := sh(t, filepath.Join(s.root, rel), "rev-parse", "--show-object-format"); f != "sha256" {
		t.Fatalf("copy's object format %s, want sha256", f)
	}
}

// TestIncrementalFetchWritesOnlyChangedRefs checks that the stage starts
// with the copy's refs (a packed-refs file), so that an incremental fetch
// writes the refs that changed, not every ref as a new loose file: with
// 10,000 refs that was 2.7 s against 0.75 s on this machine (raw git
// fetch: 0.5 s).
func TestIncrementalFetchWritesOnlyChangedRefs(t *testing.T) {
	t.Parallel()
	g := requireGit(t)
	ctx := testCtx(t)
	p := newPrimary(t, g)
	s := newStore(t, g)
	const rel = "refs.git"
	if err := MakeRepo(ctx, g, filepath.Join(p.root, rel), RepoShape{Commits: 5, FileSize: 100, Branches: 300}); err != nil {
		t.Fatal(err)
	}
	p.sync(ctx, s, rel)
	if err := AddCommit(ctx, g, filepath.Join(p.root, rel), "refs/heads/main", 100); err != nil {
		t.Fatal(err)
	}
	sh(t, filepath.Join(p.root, rel), "update-ref", "-d", "refs/heads/b00007")
	st, err := s.Fetch(ctx, FetchParams{RelPath: rel, URL: p.url(rel), Authorization: p.token})
	if err != nil {
		t.Fatal(err)
	}
	loose := 0
	filepath.WalkDir(filepath.Join(st.dir, "refs"), func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			loose++
		}
		return nil
	})
	if loose > 1 {
		t.Fatalf("the stage holds %d loose refs after a fetch that moved one ref: it did not start from the copy's refs", loose)
	}
	if err := st.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	assertSame(t, ctx, p, s, rel)
}
