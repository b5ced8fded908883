//go:build !linux

package blob

import (
	"os"
	"path"
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
