package gitrepo

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrChecksumMismatch is returned (wrapped) by Verify when a repository's
// refs checksum differs from the one expected.
var ErrChecksumMismatch = errors.New("gitrepo: refs checksum mismatch")

// ErrNotConnected is returned (wrapped) by Verify when git fsck finds an
// object the refs need missing (VerifyConnectivity) or any object damaged
// (VerifyFull): refs that match are not enough to call a copy synced.
var ErrNotConnected = errors.New("gitrepo: repository objects missing or damaged")

// Ref is one reference: its full name and the object it points to.
type Ref struct {
	Name, OID string
}

// refFormat is for-each-ref's format for listRefs: name, then object id.
const refFormat = "%(refname) %(objectname)"

// listRefs returns every ref under refs/ of the repository at dir, sorted
// by name in byte order. Symbolic refs are listed with the object their
// target points to (as upload-pack advertises them); HEAD is not a ref
// under refs/ and is not listed.
func listRefs(ctx context.Context, g *Git, dir string) ([]Ref, error) {
	out, err := g.output(ctx, cmd{dir: dir, args: []string{"for-each-ref", "--format=" + refFormat, "refs/"}})
	if err != nil {
		return nil, fmt.Errorf("gitrepo: list refs: %w", err)
	}
	var refs []Ref
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, oid, ok := strings.Cut(sc.Text(), " ")
		if !ok || name == "" || oid == "" {
			return nil, fmt.Errorf("gitrepo: list refs: unexpected line %q", firstLine(sc.Text()))
		}
		refs = append(refs, Ref{Name: name, OID: oid})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("gitrepo: list refs: %w", err)
	}
	slices.SortFunc(refs, func(a, b Ref) int { return strings.Compare(a.Name, b.Name) })
	return refs, nil
}

// ChecksumRefs returns the refs checksum of a list of refs: the lowercase
// hex SHA-256 of the lines "refname object-id\n", sorted by refname in
// byte order (GitLab Geo's approach: it checksums the refs, not the
// objects, because equal refs name equal histories and listing refs is
// cheap). A repository without refs has the checksum of no lines,
// SHA-256 of the empty string. refs need not be sorted.
//
// HEAD is not a line (it is a pointer to a ref, replicated by Commit but
// not checksummed). The primary's repositories must not hide refs from
// upload-pack (uploadpack.hideRefs, transfer.hideRefs): a copy cannot
// fetch a hidden ref, so its checksum would never match.
func ChecksumRefs(refs []Ref) string {
	sorted := slices.Clone(refs)
	slices.SortFunc(sorted, func(a, b Ref) int { return strings.Compare(a.Name, b.Name) })
	h := sha256.New()
	for _, r := range sorted {
		h.Write([]byte(r.Name))
		h.Write([]byte{' '})
		h.Write([]byte(r.OID))
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))
}

func checksum(ctx context.Context, g *Git, dir string) (string, error) {
	refs, err := listRefs(ctx, g, dir)
	if err != nil {
		return "", err
	}
	return ChecksumRefs(refs), nil
}

// VerifyMode chooses how thoroughly Verify checks a repository's objects.
type VerifyMode int

const (
	// VerifyConnectivity checks that every object the refs reach exists
	// and that commits and trees parse (git fsck --connectivity-only):
	// fast, fit for skip-download, but a damaged blob goes unnoticed.
	VerifyConnectivity VerifyMode = iota
	// VerifyFull also checks every object's hash and every pack's
	// checksum (git fsck): it reads all the data, fit for periodic
	// re-verification.
	VerifyFull
)

// fsck runs git fsck in the repository at dir.
func fsck(ctx context.Context, g *Git, dir string, mode VerifyMode) error {
	args := []string{"fsck", "--no-progress", "--no-dangling"}
	switch mode {
	case VerifyConnectivity:
		args = append(args, "--connectivity-only")
	case VerifyFull:
		args = append(args, "--full")
	default:
		return fmt.Errorf("gitrepo: fsck: unknown VerifyMode %d", mode)
	}
	var out bytes.Buffer
	if err := g.run(ctx, cmd{dir: dir, args: args, stdout: &out}); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("gitrepo: fsck: %w", err)
		}
		detail := strings.TrimSpace(out.String())
		if len(detail) > g.stderrLimit {
			detail = detail[:g.stderrLimit] + "[...]"
		}
		return fmt.Errorf("gitrepo: %w: %w %s", ErrNotConnected, err, detail)
	}
	return nil
}
