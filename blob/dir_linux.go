//go:build linux

package blob

import (
	"errors"
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
// temporary directory is held open from NewDir on (it is this Dir's own,
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
