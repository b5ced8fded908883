//go:build linux

package dirblob

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"syscall"
)

// On Linux, Dir creates temporary files and renames them into place with
// system calls relative to open directories (openat, renameat) instead of
// resolving both paths from root on every call as os.Root does: a 4 KiB
// blob's commit walked its temporary directory twice and its key's
// directory three times, about ten openat and close calls per blob, and
// on a virtual machine the kernel entries cost more than the write. The
// temporary directory is held open from New on (it is this Dir's own,
// under its lock); a key's directory is still resolved through root, once
// per commit, so links planted under root are refused as before, and that
// one open serves both the rename and the directory fsync.

// createTemp creates the temporary file tmpBase in this Dir's temporary
// directory (tmp is its path relative to root, for errors).
func (d *Dir) createTemp(tmpBase, tmp string) (*os.File, error) {
	rc, err := d.tmpDir.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd, oerr := -1, error(nil)
	err = rc.Control(func(dfd uintptr) {
		for {
			fd, oerr = syscall.Openat(int(dfd), tmpBase,
				syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, 0o644)
			if !errors.Is(oerr, syscall.EINTR) {
				return
			}
		}
	})
	if err != nil {
		return nil, err
	}
	if oerr != nil {
		return nil, &fs.PathError{Op: "openat", Path: tmp, Err: oerr}
	}
	return os.NewFile(uintptr(fd), filepath.Join(d.path, filepath.FromSlash(tmp))), nil
}

// publish renames the temporary file tmpBase to key, creating key's
// directory (and fsyncing the parents of what it creates) if needed, then
// fsyncs key's directory. renamed reports whether the rename happened: an
// error with renamed true is the directory fsync's.
func (d *Dir) publish(tmpBase, tmp, key string) (renamed bool, err error) {
	dir := path.Dir(key)
	dst, err := d.openRead(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := d.ensureDir(dir); err != nil {
			return false, err
		}
		dst, err = d.openRead(dir)
	}
	if err != nil {
		return false, err
	}
	defer dst.Close()
	if err := renameat(d.tmpDir, tmpBase, dst, path.Base(key)); err != nil {
		return false, &os.LinkError{Op: "renameat", Old: tmp, New: key, Err: err}
	}
	return true, dst.Sync()
}

// renameat renames oldName in directory from to newName in directory to.
func renameat(from *os.File, oldName string, to *os.File, newName string) error {
	fc, err := from.SyscallConn()
	if err != nil {
		return err
	}
	tc, err := to.SyscallConn()
	if err != nil {
		return err
	}
	var rerr error
	err = fc.Control(func(ffd uintptr) {
		cerr := tc.Control(func(tfd uintptr) {
			for {
				rerr = syscall.Renameat(int(ffd), oldName, int(tfd), newName)
				if !errors.Is(rerr, syscall.EINTR) {
					return
				}
			}
		})
		if cerr != nil {
			rerr = cerr
		}
	})
	if err != nil {
		return err
	}
	return rerr
}

// removeIn unlinks the files names in directory dir (relative to root),
// opened once through openRead (RESOLVE_BENEATH); a missing file, a
// directory, or a directory that does not exist is skipped.
func (d *Dir) removeIn(dir string, names []string) error {
	f, err := d.openRead(dir)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("dirblob: remove in %q: %w", dir, err)
	}
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var uerr error
	var failed string
	cerr := rc.Control(func(fd uintptr) {
		for _, name := range names {
			for {
				err := syscall.Unlinkat(int(fd), name)
				if errors.Is(err, syscall.EINTR) {
					continue
				}
				if err != nil && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.EISDIR) {
					uerr, failed = err, name
					return
				}
				break
			}
		}
	})
	if cerr != nil {
		return cerr
	}
	if uerr != nil {
		return fmt.Errorf("dirblob: remove %q: %w", path.Join(dir, failed), uerr)
	}
	return nil
}
