//go:build !linux

package dirblob

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"syscall"
)

// createTemp creates the temporary file tmp (relative to root).
func (d *Dir) createTemp(_, tmp string) (*os.File, error) {
	return d.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
}

// publish renames the temporary file tmp to key, creating key's directory
// (and fsyncing the parents of what it creates) if needed, then fsyncs
// key's directory. renamed reports whether the rename happened: an error
// with renamed true is the directory fsync's.
func (d *Dir) publish(_, tmp, key string) (renamed bool, err error) {
	dir := path.Dir(key)
	if err := d.ensureDir(dir); err != nil {
		return false, err
	}
	if err := d.root.Rename(tmp, key); err != nil {
		return false, err
	}
	return true, d.syncDir(dir)
}

// openRead opens name (relative to root) for reading.
func (d *Dir) openRead(name string) (*os.File, error) {
	return d.root.Open(name)
}

// removeIn removes the files names in directory dir (relative to root)
// one by one, as Remove does but without the directory fsync.
func (d *Dir) removeIn(dir string, names []string) error {
	for _, name := range names {
		if err := d.removeOne(path.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

// removeOne is Remove without the directory fsync: a missing file or a
// directory at key is skipped.
func (d *Dir) removeOne(key string) error {
	fi, err := d.root.Lstat(key)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("dirblob: remove %q: %w", key, err)
	}
	if fi.IsDir() {
		return nil
	}
	if err := d.root.Remove(key); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("dirblob: remove %q: %w", key, err)
	}
	return nil
}
