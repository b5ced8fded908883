package gitrepo

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestReplaceRepairsDamagedCopy: a copy with a damaged pack and matching
// refs is not repaired by a fetch that borrows its objects (the primary
// sends nothing the copy's refs reach); a Replace fetch clones it whole
// and its Commit puts the clone in place of the damaged copy.
func TestReplaceRepairsDamagedCopy(t *testing.T) {
	t.Parallel()
	g := requireGit(t)
	ctx := testCtx(t)
	p := newPrimary(t, g)
	s := newStore(t, g)
	const rel = "group/damaged.git"
	w := p.create(rel)
	w.commit(5, 3000)
	w.git("push", "--quiet", "origin", "main")
	p.sync(ctx, s, rel)
	want, err := p.server.Checksum(ctx, rel)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Exists(rel); err != nil {
		t.Fatalf("Exists of a synced copy: %v", err)
	}
	if err := s.Exists("group/none.git"); !errors.Is(err, ErrNotRepository) {
		t.Fatalf("Exists of no copy: %v, want ErrNotRepository", err)
	}
	if err := p.server.Exists(rel); err != nil {
		t.Fatalf("Server.Exists: %v", err)
	}
	packs, _ := filepath.Glob(filepath.Join(s.root, rel, "objects/pack/*.pack"))
	if len(packs) == 0 {
		t.Fatal("the synced copy has no pack")
	}
	data, err := os.ReadFile(packs[0])
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	writeOver(t, packs[0], data)
	if err := s.Verify(ctx, rel, want, VerifyFull); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("damaged pack: %v, want ErrNotConnected", err)
	}

	// An incremental fetch trusts the copy: nothing changes.
	st, err := s.Fetch(ctx, FetchParams{RelPath: rel, URL: p.url(rel), Authorization: p.token})
	if err != nil {
		t.Fatal(err)
	}
	if st.Changed() {
		t.Fatal("incremental fetch of an unchanged repository says Changed")
	}
	if err := st.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(ctx, rel, want, VerifyFull); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("after an incremental fetch: %v, want the damage still there (ErrNotConnected)", err)
	}

	// A Replace fetch repairs it.
	st, err = s.Fetch(ctx, FetchParams{RelPath: rel, URL: p.url(rel), Authorization: p.token, Replace: true})
	if err != nil {
		t.Fatal(err)
	}
	if !st.IsReplace() || !st.Changed() || st.Size() <= 0 {
		t.Fatalf("Replace stage: IsReplace %v, Changed %v, Size %d; want true, true, > 0", st.IsReplace(), st.Changed(), st.Size())
	}
	if st.Checksum() != want {
		t.Fatalf("Replace stage checksum %s, want %s", st.Checksum(), want)
	}
	if err := st.Commit(ctx); err != nil {
		t.Fatalf("commit Replace: %v", err)
	}
	if err := s.Verify(ctx, rel, want, VerifyFull); err != nil {
		t.Fatalf("after Replace: %v, want a sound copy", err)
	}
	assertSame(t, ctx, p, s, rel)
	if left := tempEntries(t, s); len(left) != 0 {
		t.Fatalf("temporary entries left: %v", left)
	}

	// A Replace stage whose live copy was removed meanwhile is stale.
	st, err = s.Fetch(ctx, FetchParams{RelPath: rel, URL: p.url(rel), Authorization: p.token, Replace: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, rel); err != nil {
		t.Fatal(err)
	}
	if err := st.Commit(ctx); !errors.Is(err, ErrStale) {
		t.Fatalf("Replace commit after the copy was removed: %v, want ErrStale", err)
	}
	if err := s.Exists(rel); !errors.Is(err, ErrNotRepository) {
		t.Fatalf("after a stale Replace: %v, want no repository", err)
	}
}
