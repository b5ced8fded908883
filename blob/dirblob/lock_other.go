//go:build !unix

package dirblob

import "os"

// tryLock always succeeds where flock is unavailable: there, CleanTemp may
// remove the temporary files of other live Dirs sharing the root.
func tryLock(f *os.File) (bool, error) { return true, nil }
