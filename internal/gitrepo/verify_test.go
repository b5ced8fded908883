package gitrepo

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestChecksum checks the refs checksum: SHA-256 of GitLab's
// "refname object-id" lines sorted by name, whatever the order given; a
// repository without refs has the checksum of no lines. (Both sides'
// checksums of a synced copy are compared by every sync test.)
func TestChecksum(t *testing.T) {
	t.Parallel()
	const empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	if got := ChecksumRefs(nil); got != empty {
		t.Fatalf("no refs: %s, want %s", got, empty)
	}
	a := []Ref{{"refs/heads/main", "aa"}, {"refs/tags/v1", "bb"}, {"refs/heads/feature", "cc"}}
	b := []Ref{{"refs/tags/v1", "bb"}, {"refs/heads/feature", "cc"}, {"refs/heads/main", "aa"}}
	if ChecksumRefs(a) != ChecksumRefs(b) {
		t.Fatal("the checksum depends on the order of the refs")
	}
	if got := ChecksumRefs(a); got != sha256Hex("refs/heads/feature cc\nrefs/heads/main aa\nrefs/tags/v1 bb\n") {
		t.Fatalf("ChecksumRefs = %s, want SHA-256 of the sorted lines", got)
	}
	if ChecksumRefs([]Ref{{"refs/heads/main", "aa"}}) == ChecksumRefs([]Ref{{"refs/heads/main", "ab"}}) {
		t.Fatal("a moved ref keeps the checksum")
	}
}

// TestVerifyCatchesCorruption checks what Verify catches on a copy: a ref
// moved (checksum mismatch); an object deleted while the refs still match
// (connectivity fails: such a copy must not count as present); a damaged
// blob (connectivity does not read blobs, the full check does); a damaged
// pack (full check).
func TestVerifyCatchesCorruption(t *testing.T) {
	t.Parallel()
	g := requireGit(t)
	ctx := testCtx(t)
	p := newPrimary(t, g)
	s := newStore(t, g)
	const rel = "v.git"
	w := p.create(rel)
	w.commit(4, 2000)
	w.git("tag", "-a", "-m", "t", "v1")
	w.git("push", "--quiet", "origin", "main", "v1")
	want, err := p.server.Checksum(ctx, rel)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(ctx, rel, want, VerifyConnectivity); !errors.Is(err, ErrNotRepository) {
		t.Fatalf("no copy: %v, want ErrNotRepository", err)
	}

	// A copy with loose objects: the primary's repository copied as is
	// (pushes of few objects land loose).
	loose := "loose.git"
	if out, err := exec.Command("cp", "-a", filepath.Join(p.root, rel), filepath.Join(s.root, loose)).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	for _, mode := range []VerifyMode{VerifyConnectivity, VerifyFull} {
		if err := s.Verify(ctx, loose, want, mode); err != nil {
			t.Fatalf("intact copy, mode %d: %v", mode, err)
		}
	}
	blob := sh(t, w.bare, "rev-parse", "main:f0001")
	obj := filepath.Join(s.root, loose, "objects", blob[:2], blob[2:])
	if _, err := os.Stat(obj); err != nil {
		t.Fatalf("the blob is not loose in the copy: %v", err)
	}

	// Damaged blob: same refs, connectivity passes, full fails.
	orig, err := os.ReadFile(obj)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), orig...)
	bad[len(bad)/2] ^= 0xff
	writeOver(t, obj, bad)
	if err := s.Verify(ctx, loose, want, VerifyConnectivity); err != nil {
		t.Fatalf("damaged blob, connectivity only: %v (it does not read blobs: if git now does, say so in VerifyConnectivity's doc)", err)
	}
	if err := s.Verify(ctx, loose, want, VerifyFull); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("damaged blob, full: %v, want ErrNotConnected", err)
	}

	// Deleted object: the refs still match, the copy is not whole.
	if err := os.Remove(obj); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Checksum(ctx, loose); err != nil || got != want {
		t.Fatalf("checksum after deleting an object: %s, %v; want it unchanged (%s)", got, err, want)
	}
	if err := s.Verify(ctx, loose, want, VerifyConnectivity); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("deleted object, refs matching: %v, want ErrNotConnected", err)
	}
	writeOver(t, obj, orig)

	// A ref moved on the copy.
	sh(t, filepath.Join(s.root, loose), "update-ref", "refs/heads/main", "refs/heads/main~1")
	if err := s.Verify(ctx, loose, want, VerifyConnectivity); !errors.Is(err, ErrChecksumMismatch) {
		t.Fatalf("moved ref: %v, want ErrChecksumMismatch", err)
	}

	// A fetched copy is packed: a damaged pack fails the full check,
	// a deleted one the connectivity check.
	p.sync(ctx, s, rel)
	packs, _ := filepath.Glob(filepath.Join(s.root, rel, "objects/pack/*.pack"))
	if len(packs) == 0 {
		t.Fatal("the fetched copy has no pack")
	}
	data, err := os.ReadFile(packs[0])
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	writeOver(t, packs[0], data)
	if err := s.Verify(ctx, rel, want, VerifyFull); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("damaged pack, full: %v, want ErrNotConnected", err)
	}
	for _, f := range []string{packs[0], strings.TrimSuffix(packs[0], ".pack") + ".idx"} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Verify(ctx, rel, want, VerifyConnectivity); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("deleted pack, refs matching: %v, want ErrNotConnected", err)
	}
}

func sha256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func writeOver(t *testing.T, path string, b []byte) {
	t.Helper()
	os.Chmod(path, 0o644)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
