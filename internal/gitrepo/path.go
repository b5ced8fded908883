package gitrepo

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/geoframework/geo/strategy"
)

// ErrInvalidPath is returned (wrapped) for a repository path that breaks
// the storage key rule (strategy.ValidateKey: relative, no "." or ".."
// segment, no NUL or backslash, not under the reserved ".geo-tmp"), or
// that leads outside the root through a symbolic link. Such a path never
// reaches git. The error never quotes the path, which may be hostile.
var ErrInvalidPath = errors.New("gitrepo: invalid repository path")

// ErrNotRepository is returned (wrapped) when nothing, or something other
// than a bare git repository, lives at a repository path.
var ErrNotRepository = errors.New("gitrepo: no repository at the path")

// validPath checks relPath against the key rule and keeps it out of the
// Store's temporary directory.
func validPath(relPath string) error {
	if err := strategy.ValidateKey(relPath); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidPath, err)
	}
	if strings.HasPrefix(relPath, tempDirName) {
		return fmt.Errorf("%w: under the reserved %s", ErrInvalidPath, tempDirName)
	}
	return nil
}

// resolveRoot returns the absolute path of root with every symbolic link
// resolved, creating the directory when create is set.
func resolveRoot(root string, create bool) (string, error) {
	if root == "" {
		return "", errors.New("root is empty")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return "", err
	}
	if create {
		if err := os.MkdirAll(abs, 0o755); err != nil {
			return "", err
		}
	}
	return filepath.EvalSymlinks(abs)
}

// within returns root/relPath after checking relPath and that no symbolic
// link in the part of it that exists leads outside root (root itself is
// already resolved). The path need not exist.
func within(root, relPath string) (string, error) {
	if err := validPath(relPath); err != nil {
		return "", err
	}
	full := filepath.Join(root, relPath)
	// Resolve the deepest existing ancestor (or the path itself).
	probe := full
	for {
		real, err := filepath.EvalSymlinks(probe)
		if err == nil {
			if real != root && !strings.HasPrefix(real, root+string(filepath.Separator)) {
				return "", fmt.Errorf("%w: a symbolic link leads outside the root", ErrInvalidPath)
			}
			return full, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("gitrepo: resolve repository path: %w", err)
		}
		if probe == root {
			return full, nil
		}
		probe = filepath.Dir(probe)
	}
}

// bareRepository checks that dir is a directory holding a bare git
// repository: HEAD, objects/ and refs/, and no ".git" entry (git's
// repository discovery would try dir/.git first).
func bareRepository(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return ErrNotRepository
		}
		return fmt.Errorf("gitrepo: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: not a directory", ErrNotRepository)
	}
	for _, want := range []struct {
		name string
		dir  bool
	}{{"HEAD", false}, {"objects", true}, {"refs", true}} {
		fi, err := os.Lstat(filepath.Join(dir, want.name))
		if err != nil || fi.IsDir() != want.dir {
			return fmt.Errorf("%w: no %s", ErrNotRepository, want.name)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, ".git")); !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: holds a .git entry", ErrNotRepository)
	}
	return nil
}
