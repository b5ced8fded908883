package dirblob

import (
	"context"
	"fmt"
	"iter"
	"path"
	"slices"
	"strings"

	"github.com/geoframework/geo/strategy"
)

// List implements driver.Bucket: a depth-first walk of the directory tree
// that yields regular files in ascending byte order of their keys. The
// reserved temporary directory is skipped, and so are names that are not
// valid keys (a file someone put there by hand, such as "a\\b"). Memory is
// one directory's entries per level of the walk; subtrees whose keys all
// sort at or before after are not read.
func (d *Dir) List(ctx context.Context, after string) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		d.walkKeys(ctx, "", after, yield)
	}
}

// walkKeys yields the keys under dir (relative to the root, "" for the
// root itself) greater than after; it returns false once yield asked to
// stop or an error was yielded.
func (d *Dir) walkKeys(ctx context.Context, dir, after string, yield func(string, error) bool) bool {
	if err := ctx.Err(); err != nil {
		yield("", fmt.Errorf("dirblob: list keys: %w", err))
		return false
	}
	name := dir
	if name == "" {
		name = "."
	}
	// openRead (openat2 under RESOLVE_BENEATH on Linux) gives a file
	// outside os.Root, whose ReadDir takes each entry's type from the
	// directory itself; a directory opened through os.Root stats every
	// entry (most of a scan's time).
	f, err := d.openRead(name)
	if err != nil {
		yield("", fmt.Errorf("dirblob: list keys in %q: %w", name, err))
		return false
	}
	entries, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		yield("", fmt.Errorf("dirblob: list keys in %q: %w", name, err))
		return false
	}
	// A directory's keys all start with its name and "/": sorting each
	// directory by that name makes the depth-first walk yield keys in the
	// byte order of the whole key ("a-b" < "a/c" because '-' < '/').
	type entry struct {
		sortName string
		key      string
		dir      bool
	}
	list := make([]entry, 0, len(entries))
	for _, e := range entries {
		key := path.Join(dir, e.Name())
		if dir == "" && strings.HasPrefix(e.Name(), ReservedPrefix) {
			continue
		}
		switch {
		case e.IsDir():
			list = append(list, entry{e.Name() + "/", key, true})
		case e.Type().IsRegular():
			list = append(list, entry{e.Name(), key, false})
		}
	}
	slices.SortFunc(list, func(a, b entry) int { return strings.Compare(a.sortName, b.sortName) })
	for _, e := range list {
		if e.dir {
			prefix := e.key + "/"
			if prefix <= after && !strings.HasPrefix(after, prefix) {
				continue // every key below sorts before after
			}
			if !d.walkKeys(ctx, e.key, after, yield) {
				return false
			}
			continue
		}
		if e.key <= after || strategy.ValidateKey(e.key) != nil {
			continue
		}
		if !yield(e.key, nil) {
			return false
		}
	}
	return true
}
