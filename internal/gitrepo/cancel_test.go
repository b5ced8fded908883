package gitrepo

import (
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"testing"
)

// TestCancelMidFetch holds a fetch mid-transfer, cancels its context, and
// checks that Fetch returns the context's error, git's whole process group
// is gone (git-remote-http included), no stage is left, and the live copy
// was not written; for a new repository (clone) and for an incremental
// fetch into a stage borrowing the live copy.
func TestCancelMidFetch(t *testing.T) {
	t.Parallel()
	g := requireGit(t)
	ctx := testCtx(t)
	p := newPrimary(t, g)
	s := newStore(t, g)
	const rel = "cancel/me.git"
	w := p.create(rel)
	w.commit(5, 1000)
	w.git("push", "--quiet", "origin", "main")

	cancelled := func(name string) {
		t.Helper()
		reached, release := p.holdFetches()
		defer release()
		fctx, cancel := context.WithCancel(ctx)
		defer cancel()
		done := make(chan error, 1)
		go func() {
			st, err := s.Fetch(fctx, FetchParams{RelPath: rel, URL: p.url(rel), Authorization: p.token})
			if err == nil {
				st.Abort()
			}
			done <- err
		}()
		<-reached
		if len(processesWith(p.url(rel))) == 0 {
			t.Fatalf("%s: no git process holds the URL mid-fetch: the test sees nothing", name)
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("%s: Fetch after cancel: %v, want context.Canceled", name, err)
		}
		waitFor(t, name+": git's processes to end", func() bool { return len(processesWith(p.url(rel))) == 0 })
		if es := tempEntries(t, s); len(es) != 0 {
			t.Fatalf("%s: stage left after cancel: %v", name, es)
		}
	}

	cancelled("new repository")
	if _, err := os.Lstat(filepath.Join(s.root, rel)); !os.IsNotExist(err) {
		t.Fatalf("a cancelled clone left something at the path: %v", err)
	}

	p.sync(ctx, s, rel)
	w.commit(2, 1000)
	w.git("push", "--quiet", "origin", "main")
	before := snapshot(t, filepath.Join(s.root, rel))
	cancelled("incremental")
	if after := snapshot(t, filepath.Join(s.root, rel)); !maps.Equal(before, after) {
		t.Fatalf("a cancelled fetch wrote into the live copy")
	}
	p.sync(ctx, s, rel)
	assertSame(t, ctx, p, s, rel)
}
