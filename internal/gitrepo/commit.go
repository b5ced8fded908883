package gitrepo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ErrStale is returned (wrapped) by Stage.Commit when the live copy is no
// longer the one the stage was fetched against: it was removed, replaced,
// created meanwhile (for a new repository's stage), or a ref moved. The
// stage is discarded; sync again.
var ErrStale = errors.New("gitrepo: live copy changed since the fetch")

// ErrCommitted is returned (wrapped) by Stage.Commit when the stage was
// already committed or aborted.
var ErrCommitted = errors.New("gitrepo: stage already committed or aborted")

// refChange is one line of the ref transaction.
type refChange struct {
	name, old, new string // old "" = create; new "" = delete
}

// diffRefs returns the changes that turn the refs old into the refs new
// (both sorted by name).
func diffRefs(old, new []Ref) []refChange {
	var out []refChange
	i, j := 0, 0
	for i < len(old) || j < len(new) {
		switch {
		case j == len(new) || (i < len(old) && old[i].Name < new[j].Name):
			out = append(out, refChange{name: old[i].Name, old: old[i].OID})
			i++
		case i == len(old) || new[j].Name < old[i].Name:
			out = append(out, refChange{name: new[j].Name, new: new[j].OID})
			j++
		default:
			if old[i].OID != new[j].OID {
				out = append(out, refChange{name: old[i].Name, old: old[i].OID, new: new[j].OID})
			}
			i++
			j++
		}
	}
	return out
}

// Commit makes the staged state live. The caller holds the repository's
// lock (the engine's row lock): no other Commit or Remove of the same
// repository runs meanwhile. The stage is discarded whatever the outcome.
//
// A new repository's stage is made durable (every file and directory
// fsynced) and renamed into place in one rename; if a repository appeared
// at the path meanwhile, the error wraps ErrStale and nothing changes.
//
// A replacing stage (FetchParams.Replace) is made durable the same way;
// the live copy, if it is still the one the fetch saw (else ErrStale), is
// renamed into the Store's trash and the stage into its place.
//
// For a live copy, Commit first checks that the copy is the one the stage
// borrowed from (same directory), then:
//  1. moves the stage's new objects into the copy: each pack's files,
//     fsynced, with its .idx last (git only sees a pack through its
//     index), then any loose object, then fsyncs the directories. Objects
//     come first so that no ref ever points to a missing object; objects
//     already present are left alone (same name, same content).
//  2. swaps the refs in one `git update-ref --stdin` transaction
//     (start, prepare, commit): refs that changed are updated, new refs
//     created, refs the primary no longer has deleted, each only if it
//     still holds the value recorded when the fetch started (else the
//     error wraps ErrStale and no ref changes). Ref files are fsynced.
//  3. points HEAD at the primary's HEAD branch, if that changed.
//
// Errors other than ErrStale and ErrCommitted are failures to write. ctx
// ending during a commit kills git mid-transaction, which is a crash (see
// the package doc's crash safety: the next sync repairs it); the engine
// should cancel a commit only when shutting down.
func (st *Stage) Commit(ctx context.Context) error {
	if st.done {
		return fmt.Errorf("gitrepo: commit: %w", ErrCommitted)
	}
	st.done = true
	defer os.RemoveAll(st.dir)
	var err error
	switch {
	case st.isNew:
		err = st.commitNew()
	case st.replace:
		err = st.commitReplace()
	default:
		err = st.commitExisting(ctx)
	}
	if err != nil {
		return fmt.Errorf("gitrepo: commit: %w", err)
	}
	return nil
}

// Abort discards the stage; the live copy is untouched. Abort after Commit
// or Abort does nothing.
func (st *Stage) Abort() error {
	if st.done {
		return nil
	}
	st.done = true
	if err := os.RemoveAll(st.dir); err != nil {
		return fmt.Errorf("gitrepo: abort: %w", err)
	}
	return nil
}

func (st *Stage) commitNew() error {
	switch _, err := os.Lstat(st.live); {
	case err == nil:
		return fmt.Errorf("%w: a repository appeared at the path", ErrStale)
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	if err := syncTree(st.dir); err != nil {
		return fmt.Errorf("make the stage durable: %w", err)
	}
	rel, err := filepath.Rel(st.s.root, st.live)
	if err != nil {
		return err
	}
	parent := filepath.Dir(rel)
	if err := st.s.r.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	stageRel, err := filepath.Rel(st.s.root, st.dir)
	if err != nil {
		return err
	}
	if err := st.s.r.Rename(stageRel, rel); err != nil {
		if errors.Is(err, fs.ErrExist) || errors.Is(err, errNotEmpty) {
			return fmt.Errorf("%w: a repository appeared at the path", ErrStale)
		}
		return err
	}
	// The rename, and any parent directory MkdirAll created, durable.
	for dir := filepath.Dir(st.live); ; dir = filepath.Dir(dir) {
		if err := syncDir(dir); err != nil {
			return err
		}
		if dir == st.s.root || len(dir) <= len(st.s.root) {
			break
		}
	}
	return syncDir(filepath.Dir(st.dir))
}

func (st *Stage) commitExisting(ctx context.Context) error {
	fi, err := os.Lstat(st.live)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: the live copy was removed", ErrStale)
		}
		return err
	}
	if !os.SameFile(fi, st.liveID) {
		return fmt.Errorf("%w: the live copy was replaced", ErrStale)
	}
	if err := moveObjects(filepath.Join(st.dir, "objects"), filepath.Join(st.live, "objects")); err != nil {
		return fmt.Errorf("move objects: %w", err)
	}
	changes := diffRefs(st.oldRefs, st.newRefs)
	if len(changes) > 0 {
		if err := st.updateRefs(ctx, changes); err != nil {
			return err
		}
	}
	if st.head != "" && st.head != st.oldHead {
		if err := st.s.git.run(ctx, cmd{dir: st.live, args: []string{"symbolic-ref", "HEAD", st.head},
			config: []ConfigEntry{{"core.fsync", "reference"}}}); err != nil {
			return fmt.Errorf("set HEAD: %w", err)
		}
		if err := syncDir(st.live); err != nil {
			return err
		}
	}
	return nil
}

// updateRefs applies changes to the live copy in one ref transaction. A
// transaction refused because a ref lock file is left over (a process
// died holding it: the caller's lock means nobody else writes) is retried
// once after removing the copy's stale lock files.
func (st *Stage) updateRefs(ctx context.Context, changes []refChange) error {
	var in bytes.Buffer
	in.WriteString("start\n")
	for _, c := range changes {
		switch {
		case c.old == "":
			fmt.Fprintf(&in, "create %s %s\n", c.name, c.new)
		case c.new == "":
			fmt.Fprintf(&in, "delete %s %s\n", c.name, c.old)
		default:
			fmt.Fprintf(&in, "update %s %s %s\n", c.name, c.new, c.old)
		}
	}
	in.WriteString("prepare\ncommit\n")
	run := func() error {
		return st.s.git.run(ctx, cmd{dir: st.live, args: []string{"update-ref", "--no-deref", "--stdin"},
			stdin: bytes.NewReader(in.Bytes()), config: []ConfigEntry{{"core.fsync", "reference"}}})
	}
	err := run()
	if err != nil && ctx.Err() == nil && strings.Contains(err.Error(), ".lock': File exists") {
		if cerr := removeRefLocks(st.live); cerr != nil {
			return fmt.Errorf("update refs: %w (removing stale locks: %v)", err, cerr)
		}
		err = run()
	}
	if err != nil {
		if ctx.Err() == nil && strings.Contains(err.Error(), "cannot lock ref") {
			return fmt.Errorf("update refs: %w: %w", ErrStale, err)
		}
		return fmt.Errorf("update refs: %w", err)
	}
	// Loose ref files are fsynced by git (core.fsync=reference); make
	// their names durable too.
	dirs := map[string]bool{st.live: true}
	for _, c := range changes {
		dirs[filepath.Dir(filepath.Join(st.live, filepath.FromSlash(c.name)))] = true
	}
	for _, d := range slices.Sorted(maps.Keys(dirs)) {
		if err := syncDir(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// removeRefLocks removes the ref lock files of the repository at dir:
// packed-refs.lock, HEAD.lock and refs/**/*.lock.
func removeRefLocks(dir string) error {
	for _, name := range []string{"packed-refs.lock", "HEAD.lock"} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return filepath.WalkDir(filepath.Join(dir, "refs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(d.Name(), ".lock") {
			return os.Remove(p)
		}
		return nil
	})
}

// moveObjects moves the packs and loose objects of the object directory
// from into the object directory to.
func moveObjects(from, to string) error {
	packs, err := os.ReadDir(filepath.Join(from, "pack"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	movedPack := false
	for _, e := range packs {
		base, ok := strings.CutSuffix(e.Name(), ".idx")
		if !ok || !strings.HasPrefix(base, "pack-") {
			continue
		}
		// Every file of the pack, the index last.
		var files []string
		for _, f := range packs {
			if n := f.Name(); strings.HasPrefix(n, base+".") && n != e.Name() && !strings.HasSuffix(n, ".keep") {
				files = append(files, n)
			}
		}
		files = append(files, e.Name())
		for _, n := range files {
			moved, err := moveFile(filepath.Join(from, "pack", n), filepath.Join(to, "pack", n))
			if err != nil {
				return err
			}
			movedPack = movedPack || moved
		}
	}
	if movedPack {
		if err := syncDir(filepath.Join(to, "pack")); err != nil {
			return err
		}
	}
	// Loose objects: objects/xx/<rest of the id>.
	dirs, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	for _, d := range dirs {
		if !d.IsDir() || len(d.Name()) != 2 || !isHex(d.Name()) {
			continue
		}
		objs, err := os.ReadDir(filepath.Join(from, d.Name()))
		if err != nil {
			return err
		}
		moved := false
		for _, o := range objs {
			if !isHex(o.Name()) {
				continue // tmp_obj_* and the like
			}
			// Mkdir, not MkdirAll: never create the object directory itself.
			if err := os.Mkdir(filepath.Join(to, d.Name()), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
			m, err := moveFile(filepath.Join(from, d.Name(), o.Name()), filepath.Join(to, d.Name(), o.Name()))
			if err != nil {
				return err
			}
			moved = moved || m
		}
		if moved {
			if err := syncDir(filepath.Join(to, d.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// moveFile fsyncs from and renames it to to, unless to exists (objects
// and packs are named by their content, so it holds the same bytes). It
// reports whether it renamed.
func moveFile(from, to string) (bool, error) {
	if _, err := os.Lstat(to); err == nil {
		return false, nil
	}
	if err := syncFile(from); err != nil {
		return false, err
	}
	return true, os.Rename(from, to)
}

func isHex(s string) bool {
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return s != ""
}

func syncFile(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncDir(p string) error { return syncFile(p) }

// syncTree fsyncs every file and directory under root, directories after
// their entries.
func syncTree(root string) error {
	var dirs []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
			return nil
		}
		if d.Type().IsRegular() {
			return syncFile(p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, d := range slices.Backward(dirs) {
		if err := syncDir(d); err != nil {
			return err
		}
	}
	return nil
}

// Remove removes the repository at relPath, if any. It first renames the
// repository out of its path, into the Store's temporary directory (one
// rename, made durable), then removes it there: a crash never leaves a
// half-removed repository at the path, and the trash of a crashed process
// is removed by the next OpenStore. The caller holds the repository's lock
// (the engine's row lock). A missing repository is not an error. The error
// wraps ErrInvalidPath for a hostile path; a failure after the rename
// still leaves the path clear.
func (s *Store) Remove(ctx context.Context, relPath string) error {
	live, err := within(s.root, relPath)
	if err != nil {
		return fmt.Errorf("gitrepo: remove: %w", err)
	}
	if _, err := os.Lstat(live); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("gitrepo: remove: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("gitrepo: remove: %w", err)
	}
	trash, trashRel := s.tempName("trash")
	if err := s.r.Rename(relPath, trashRel); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("gitrepo: remove: %w", err)
	}
	if err := syncDir(filepath.Dir(live)); err != nil {
		return fmt.Errorf("gitrepo: remove: path clear, but: %w", err)
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("gitrepo: remove: path clear, but: %w", err)
	}
	return nil
}
