//go:build unix

package gitrepo

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
)

// setProcessGroup makes the command the leader of a new process group and
// makes cancelling its context kill the whole group, so that git's own
// children (git-remote-http, fetch-pack, index-pack) never outlive it and
// keep writing into a directory being removed.
func setProcessGroup(c *exec.Cmd) {
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error {
		err := syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		if errors.Is(err, syscall.ESRCH) {
			return os.ErrProcessDone
		}
		return err
	}
}

// errNotEmpty is rename's error for a non-empty directory at the target.
var errNotEmpty error = syscall.ENOTEMPTY

// tryLock takes an exclusive advisory lock on f without blocking. It
// reports false (and no error) when another open file holds the lock. The
// lock lasts until f is closed, or until its owner process dies. It is the
// lock blob.Dir takes on its temporary subdirectories, so a Store and a
// blob.Dir may share a root.
func tryLock(f *os.File) (bool, error) {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return false, nil
	}
	return err == nil, err
}
