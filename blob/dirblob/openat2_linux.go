//go:build linux

package dirblob

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// openRead opens name (relative to root) for reading with one openat2
// call that resolves the whole path in the kernel under RESOLVE_BENEATH:
// a symbolic link or ".." may not lead outside root, like os.Root's rule,
// and procfs magic links are refused. os.Root walks the path instead,
// one openat and close per component (three of each for a key two
// directories deep), on every open. Kernels without openat2 (before 5.6)
// and sandboxes that refuse it get os.Root's walk from then on; a walk
// the kernel asks to retry (EAGAIN: a rename raced it) gets it once.
func (d *Dir) openRead(name string) (*os.File, error) {
	if d.noOpenat2.Load() {
		return d.root.Open(name)
	}
	rc, err := d.rootDir.SyscallConn()
	if err != nil {
		return d.root.Open(name)
	}
	how := unix.OpenHow{Flags: unix.O_RDONLY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS}
	fd, errno := -1, error(nil)
	cerr := rc.Control(func(dfd uintptr) {
		for {
			r, e := unix.Openat2(int(dfd), name, &how)
			if !errors.Is(e, unix.EINTR) {
				fd, errno = r, e
				return
			}
		}
	})
	switch {
	case cerr != nil:
		return d.root.Open(name)
	case errno == nil:
		return os.NewFile(uintptr(fd), filepath.Join(d.path, filepath.FromSlash(name))), nil
	case errors.Is(errno, syscall.ENOSYS), errors.Is(errno, syscall.EPERM):
		d.noOpenat2.Store(true)
		return d.root.Open(name)
	case errors.Is(errno, syscall.EAGAIN):
		return d.root.Open(name)
	case errors.Is(errno, syscall.EXDEV), errors.Is(errno, syscall.ELOOP):
		return nil, &fs.PathError{Op: "openat2", Path: name, Err: errEscapes}
	}
	return nil, &fs.PathError{Op: "openat2", Path: name, Err: errno}
}

// errEscapes is openRead's error for a path that resolves outside root.
var errEscapes = errors.New("path escapes from parent")
