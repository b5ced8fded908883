package gitrepo

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// What the engines' repository kind needs beyond fetch, commit and
// verify: whether a copy exists (the existence scan, and the re-check of
// a skipped download at settle), how much a stage brought (the sync's
// bytes), and replacing a damaged copy whole (a repair, after
// verification found objects missing or damaged).

// Exists reports whether a bare repository lives at relPath: nil when one
// does, an error wrapping ErrNotRepository when nothing (or something
// else) is there, or ErrInvalidPath for a hostile path. It runs no git
// command: a few lstat calls.
func (s *Store) Exists(relPath string) error {
	if _, err := s.repository(relPath); err != nil {
		return fmt.Errorf("gitrepo: exists: %w", err)
	}
	return nil
}

// Exists is Store.Exists on the primary's repositories.
func (s *Server) Exists(relPath string) error {
	dir, err := within(s.root, relPath)
	if err != nil {
		return fmt.Errorf("gitrepo: exists: %w", err)
	}
	if err := bareRepository(dir); err != nil {
		return fmt.Errorf("gitrepo: exists: %w", err)
	}
	return nil
}

// Size returns the bytes of the objects the stage holds of its own (its
// packs and loose objects, not the live copy's it borrows): what the
// fetch brought. It reads the stage's objects directory, so call it
// before Commit or Abort; afterwards it returns 0.
func (st *Stage) Size() int64 {
	if st.done {
		return 0
	}
	var n int64
	_ = filepath.WalkDir(filepath.Join(st.dir, "objects"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() && filepath.Base(filepath.Dir(p)) != "info" {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// IsReplace reports whether the stage replaces the live copy whole
// (FetchParams.Replace with a live copy there).
func (st *Stage) IsReplace() bool { return st.replace }

// commitReplace puts a whole new repository in place of the live copy: it
// renames the copy out of the path into the Store's trash (durably), then
// the stage into the path, as commitNew does. A crash between the two
// renames leaves the path empty, never half a repository: the engine's
// row is not synced yet, and the next sync clones anew.
func (st *Stage) commitReplace() error {
	fi, err := os.Lstat(st.live)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: the live copy was removed", ErrStale)
	case err != nil:
		return err
	case !os.SameFile(fi, st.liveID):
		return fmt.Errorf("%w: the live copy was replaced", ErrStale)
	}
	if err := syncTree(st.dir); err != nil {
		return fmt.Errorf("make the stage durable: %w", err)
	}
	trash, trashRel := st.s.tempName("trash")
	if err := st.s.r.Rename(st.relPath, trashRel); err != nil {
		return fmt.Errorf("move the old copy away: %w", err)
	}
	if err := syncDir(filepath.Dir(st.live)); err != nil {
		return err
	}
	if err := st.commitNew(); err != nil {
		return err
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("new copy in place, but removing the old one: %w", err)
	}
	return nil
}
