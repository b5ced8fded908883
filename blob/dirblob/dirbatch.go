package dirblob

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"

	"golang.org/x/sync/errgroup"
)

// DeleteBatch implements driver.BatchDeleter: it unlinks the file at each
// key (directories and missing files are skipped, as by Delete) without
// fsyncing their directories; SyncDeletes does that, once per directory.
// Keys are grouped by directory: on Linux each directory is opened once
// (openat2 under RESOLVE_BENEATH) and its files unlinked relative to it,
// a few directories at a time.
func (d *Dir) DeleteBatch(ctx context.Context, keys []string) error {
	byDir := map[string][]string{}
	var dirs []string
	for _, key := range keys {
		if reserved(key) {
			return errReserved
		}
		dir := path.Dir(key)
		if _, ok := byDir[dir]; !ok {
			dirs = append(dirs, dir)
		}
		byDir[dir] = append(byDir[dir], path.Base(key))
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(removeBatchWorkers)
	for _, dir := range dirs {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return fmt.Errorf("dirblob: remove in %q: %w", dir, err)
			}
			return d.removeIn(dir, byDir[dir])
		})
	}
	return g.Wait()
}

// removeBatchWorkers is how many directories DeleteBatch works in at once.
const removeBatchWorkers = 4

// SyncDeletes implements driver.BatchDeleter: it fsyncs each directory that
// held one of keys once. A directory that no longer exists is skipped.
func (d *Dir) SyncDeletes(ctx context.Context, keys []string) error {
	done := map[string]bool{}
	for _, key := range keys {
		dir := path.Dir(key)
		if done[dir] {
			continue
		}
		done[dir] = true
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("dirblob: sync removals: %w", err)
		}
		if err := d.syncDir(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("dirblob: sync removals in %q: %w", dir, err)
		}
	}
	return nil
}
