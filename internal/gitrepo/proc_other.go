//go:build !unix

package gitrepo

import (
	"io/fs"
	"os"
	"os/exec"
)

// setProcessGroup only kills the command itself where process groups are
// unavailable: git's children may outlive a cancellation there.
func setProcessGroup(c *exec.Cmd) {}

// errNotEmpty stands for rename's error for a non-empty target directory;
// where it is unknown, fs.ErrExist (also checked) has to do.
var errNotEmpty = fs.ErrExist

// tryLock always succeeds where flock is unavailable: there, a Store may
// remove the temporary files of other live Stores sharing the root.
func tryLock(f *os.File) (bool, error) { return true, nil }
