package gitrepo

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestCommitAfterRemoveLeavesNothing is R2 at this level: a fetch runs,
// the repository is removed (a deleted event under the row lock), then
// the fetch's stage is committed: it fails with ErrStale and leaves no
// repository and no stage.
func TestCommitAfterRemoveLeavesNothing(t *testing.T) {
	t.Parallel()
	g := requireGit(t)
	ctx := testCtx(t)
	p := newPrimary(t, g)
	s := newStore(t, g)
	const rel = "r2/gone.git"
	w := p.create(rel)
	w.commit(3, 100)
	w.git("push", "--quiet", "origin", "main")

	// A new repository's stage, and a live copy's.
	for _, existing := range []bool{false, true} {
		if existing {
			p.sync(ctx, s, rel)
			w.commit(1, 100)
			w.git("push", "--quiet", "origin", "main")
		}
		st, err := s.Fetch(ctx, FetchParams{RelPath: rel, URL: p.url(rel), Authorization: p.token})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Remove(ctx, rel); err != nil {
			t.Fatal(err)
		}
		err = st.Commit(ctx)
		if existing && !errors.Is(err, ErrStale) {
			t.Fatalf("commit after remove: %v, want ErrStale", err)
		}
		if !existing {
			// Nothing was there to remove: the new repository's commit
			// succeeds, and the engine's settle (no row) removes it.
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Remove(ctx, rel); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := os.Lstat(filepath.Join(s.root, rel)); !os.IsNotExist(err) {
			t.Fatalf("existing=%v: a repository is left at the path: %v", existing, err)
		}
		if es := tempEntries(t, s); len(es) != 0 {
			t.Fatalf("existing=%v: left %v in the temporary directory", existing, es)
		}
	}
}

// TestCommitStale checks that a commit against a copy that changed since
// the fetch changes no ref: a ref moved in the copy, a copy replaced, a
// new repository's stage when another commit created the copy first.
func TestCommitStale(t *testing.T) {
	t.Parallel()
	g := requireGit(t)
	ctx := testCtx(t)
	p := newPrimary(t, g)
	s := newStore(t, g)
	const rel = "stale.git"
	w := p.create(rel)
	w.commit(3, 100)
	w.git("push", "--quiet", "origin", "main")

	// Two new-repository stages: the second commit finds the first's copy.
	a, err := s.Fetch(ctx, FetchParams{RelPath: rel, URL: p.url(rel), Authorization: p.token})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Fetch(ctx, FetchParams{RelPath: rel, URL: p.url(rel), Authorization: p.token})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx); !errors.Is(err, ErrStale) {
		t.Fatalf("second new-repository commit: %v, want ErrStale", err)
	}
	assertSame(t, ctx, p, s, rel)
	if err := a.Commit(ctx); !errors.Is(err, ErrCommitted) {
		t.Fatalf("commit twice: %v, want ErrCommitted", err)
	}
	if err := a.Abort(); err != nil {
		t.Fatalf("abort after commit: %v", err)
	}

	// A ref moved in the copy between fetch and commit.
	w.commit(1, 100)
	w.git("branch", "extra")
	w.git("push", "--quiet", "origin", "main", "extra")
	st, err := s.Fetch(ctx, FetchParams{RelPath: rel, URL: p.url(rel), Authorization: p.token})
	if err != nil {
		t.Fatal(err)
	}
	live := filepath.Join(s.root, rel)
	sh(t, live, "update-ref", "refs/heads/main", "refs/heads/main~1")
	before := refsOf(t, live)
	if err := st.Commit(ctx); !errors.Is(err, ErrStale) {
		t.Fatalf("commit after a ref moved: %v, want ErrStale", err)
	}
	if after := refsOf(t, live); !slices.Equal(before, after) {
		t.Fatalf("a refused transaction changed refs: %v -> %v", before, after)
	}
	p.sync(ctx, s, rel) // the next sync repairs it
	assertSame(t, ctx, p, s, rel)

	// The copy replaced (removed and created again) between fetch and commit.
	w.commit(1, 100)
	w.git("push", "--quiet", "origin", "main")
	st, err = s.Fetch(ctx, FetchParams{RelPath: rel, URL: p.url(rel), Authorization: p.token})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, rel); err != nil {
		t.Fatal(err)
	}
	p.sync(ctx, s, rel)
	if err := st.Commit(ctx); !errors.Is(err, ErrStale) {
		t.Fatalf("commit into a replaced copy: %v, want ErrStale", err)
	}
	assertSame(t, ctx, p, s, rel)
	if es := tempEntries(t, s); len(es) != 0 {
		t.Fatalf("left %v in the temporary directory", es)
	}
}

// TestCommitRemovesStaleRefLocks is the crash in the middle of a ref
// transaction: a ref's lock file is left behind. The next commit (under
// the row lock, so the lock is stale) removes it and succeeds.
func TestCommitRemovesStaleRefLocks(t *testing.T) {
	t.Parallel()
	g := requireGit(t)
	ctx := testCtx(t)
	p := newPrimary(t, g)
	s := newStore(t, g)
	const rel = "locks.git"
	w := p.create(rel)
	w.commit(2, 100)
	w.git("push", "--quiet", "origin", "main")
	p.sync(ctx, s, rel)
	live := filepath.Join(s.root, rel)
	if err := os.WriteFile(filepath.Join(live, "refs/heads/main.lock"), []byte("dead\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w.commit(1, 100)
	w.git("push", "--quiet", "origin", "main")
	p.sync(ctx, s, rel)
	assertSame(t, ctx, p, s, rel)
}

// TestCrashBetweenObjectsAndRefs is a commit that died after moving the
// objects and before the ref transaction: the copy keeps its old refs and
// passes fsck (extra objects only), and the next sync converges.
func TestCrashBetweenObjectsAndRefs(t *testing.T) {
	t.Parallel()
	g := requireGit(t)
	ctx := testCtx(t)
	p := newPrimary(t, g)
	s := newStore(t, g)
	const rel = "crash.git"
	w := p.create(rel)
	w.commit(3, 100)
	w.git("push", "--quiet", "origin", "main")
	p.sync(ctx, s, rel)
	old, err := s.Checksum(ctx, rel)
	if err != nil {
		t.Fatal(err)
	}
	w.commit(2, 100)
	w.git("push", "--quiet", "--force", "origin", "main")
	st, err := s.Fetch(ctx, FetchParams{RelPath: rel, URL: p.url(rel), Authorization: p.token})
	if err != nil {
		t.Fatal(err)
	}
	live := filepath.Join(s.root, rel)
	if err := moveObjects(filepath.Join(st.dir, "objects"), filepath.Join(live, "objects")); err != nil {
		t.Fatal(err)
	}
	st.Abort() // the crash: the stage is gone (CleanTemp), the refs never moved
	if err := s.Verify(ctx, rel, old, VerifyFull); err != nil {
		t.Fatalf("copy after a crash between objects and refs: %v, want the old copy, whole", err)
	}
	p.sync(ctx, s, rel)
	assertSame(t, ctx, p, s, rel)
}

// TestRemove checks that Remove clears the path in one rename and leaves
// no trash, that a missing repository is not an error, and that a hostile
// path (or a link out of the root) removes nothing.
func TestRemove(t *testing.T) {
	t.Parallel()
	g := requireGit(t)
	ctx := testCtx(t)
	p := newPrimary(t, g)
	s := newStore(t, g)
	const rel = "rm/me.git"
	w := p.create(rel)
	w.commit(1, 10)
	w.git("push", "--quiet", "origin", "main")
	p.sync(ctx, s, rel)
	if err := s.Remove(ctx, rel); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(s.root, rel)); !os.IsNotExist(err) {
		t.Fatalf("removed repository still there: %v", err)
	}
	if es := tempEntries(t, s); len(es) != 0 {
		t.Fatalf("trash left: %v", es)
	}
	if err := s.Remove(ctx, rel); err != nil {
		t.Fatalf("removing a missing repository: %v", err)
	}

	outside := t.TempDir()
	victim := filepath.Join(outside, "victim.git")
	sh(t, "", "init", "--bare", "--quiet", victim)
	if err := os.Symlink(outside, filepath.Join(s.root, "esc")); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"esc/victim.git", "../" + filepath.Base(outside) + "/victim.git", "/" + victim, ".geo-tmp", ""} {
		if err := s.Remove(ctx, bad); !errors.Is(err, ErrInvalidPath) {
			t.Errorf("Remove(%q): %v, want ErrInvalidPath", bad, err)
		}
	}
	if err := bareRepository(victim); err != nil {
		t.Fatalf("the repository outside the root was touched: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.root, tempDirName)); err != nil {
		t.Fatalf("the temporary directory was touched: %v", err)
	}
}

// TestOpenStoreCleansDeadOwners checks that OpenStore removes the stages
// and trash of a dead owner (its lock free), and leaves a live Store's.
func TestOpenStoreCleansDeadOwners(t *testing.T) {
	t.Parallel()
	g := requireGit(t)
	root := t.TempDir()
	dead := filepath.Join(root, tempDirName, "deadbeefdeadbeef")
	if err := os.MkdirAll(filepath.Join(dead, "stage-1", "objects"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dead, lockFileName), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	live, err := OpenStore(context.Background(), g, root, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if _, err := os.Lstat(dead); !os.IsNotExist(err) {
		t.Fatalf("a dead owner's directory survived OpenStore: %v", err)
	}
	other, err := OpenStore(context.Background(), g, root, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, live.tmpRel)); err != nil {
		t.Fatalf("a second OpenStore removed a live Store's directory: %v", err)
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(root, other.tmpRel)); !os.IsNotExist(err) {
		t.Fatalf("Close left its directory: %v", err)
	}
}

// TestEmptyRepository syncs a repository with no commits, then with some.
func TestEmptyRepository(t *testing.T) {
	t.Parallel()
	g := requireGit(t)
	ctx := testCtx(t)
	p := newPrimary(t, g)
	s := newStore(t, g)
	const rel = "empty.git"
	w := p.create(rel)
	p.sync(ctx, s, rel)
	if err := s.Verify(ctx, rel, ChecksumRefs(nil), VerifyFull); err != nil {
		t.Fatalf("empty copy: %v", err)
	}
	assertSame(t, ctx, p, s, rel)
	w.commit(2, 10)
	w.git("push", "--quiet", "origin", "main")
	p.sync(ctx, s, rel)
	assertSame(t, ctx, p, s, rel)
}

// TestFetchRefusesSomethingElseAtThePath checks that a path holding
// something other than a bare repository (never geo's doing) fails the
// fetch with ErrNotRepository and is left alone, instead of being taken
// for a new repository that could never be committed.
func TestFetchRefusesSomethingElseAtThePath(t *testing.T) {
	t.Parallel()
	g := requireGit(t)
	ctx := testCtx(t)
	p := newPrimary(t, g)
	s := newStore(t, g)
	const rel = "junk.git"
	w := p.create(rel)
	w.commit(1, 10)
	w.git("push", "--quiet", "origin", "main")
	junk := filepath.Join(s.root, rel, "notes.txt")
	if err := os.MkdirAll(filepath.Dir(junk), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(junk, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := s.Fetch(ctx, FetchParams{RelPath: rel, URL: p.url(rel), Authorization: p.token})
	if !errors.Is(err, ErrNotRepository) {
		t.Fatalf("fetch over a non-repository: %v, want ErrNotRepository", err)
	}
	if b, err := os.ReadFile(junk); err != nil || string(b) != "keep me" {
		t.Fatalf("the non-repository was touched: %q, %v", b, err)
	}
}

// TestDeleteDuringHeldFetch is issue 26's R2 shape at this level: a fetch
// is held mid-transfer, the repository is removed (under the row lock),
// the fetch is released. For a live copy, the fetch or its commit fails
// (the borrowed objects are gone: ErrStale at the latest) and nothing is
// left; for a new repository the engine, finding no row, aborts the
// stage, and nothing is left either.
func TestDeleteDuringHeldFetch(t *testing.T) {
	t.Parallel()
	g := requireGit(t)
	ctx := testCtx(t)
	p := newPrimary(t, g)
	s := newStore(t, g)
	const rel = "held/gone.git"
	w := p.create(rel)
	w.commit(3, 1000)
	w.git("push", "--quiet", "origin", "main")

	for _, existing := range []bool{true, false} {
		if existing {
			p.sync(ctx, s, rel)
			w.commit(2, 1000)
			w.git("push", "--quiet", "origin", "main")
		}
		reached, release := p.holdFetches()
		type result struct {
			st  *Stage
			err error
		}
		done := make(chan result, 1)
		go func() {
			st, err := s.Fetch(ctx, FetchParams{RelPath: rel, URL: p.url(rel), Authorization: p.token})
			done <- result{st, err}
		}()
		<-reached
		if err := s.Remove(ctx, rel); err != nil {
			t.Fatal(err)
		}
		release()
		r := <-done
		switch {
		case r.err != nil && existing:
			t.Logf("live copy: the fetch failed (its stage is gone already): %v", r.err)
		case r.err != nil:
			t.Fatalf("new repository: fetch: %v", r.err)
		case existing:
			t.Logf("live copy: the fetch succeeded; commit")
			if err := r.st.Commit(ctx); !errors.Is(err, ErrStale) {
				t.Fatalf("commit after a delete during the fetch: %v, want ErrStale", err)
			}
		default:
			if err := r.st.Abort(); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := os.Lstat(filepath.Join(s.root, rel)); !os.IsNotExist(err) {
			t.Fatalf("existing=%v: a repository directory is left: %v", existing, err)
		}
		if es := tempEntries(t, s); len(es) != 0 {
			t.Fatalf("existing=%v: left %v in the temporary directory", existing, es)
		}
	}
}
