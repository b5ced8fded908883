package geotest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/geoframework/geo/internal/gitrepo"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/strategy"
)

// RepositorySites names what CompareRepositorySites compares: the
// secondary's tracking database and both sites' repository roots.
type RepositorySites struct {
	Tracking      *sqlx.DB
	PrimaryRoot   string
	SecondaryRoot string
}

// CompareRepositories checks the secondary of this world against the
// primary for repository strategies (scoped as the secondary sees them):
// every record in scope has a synced registry row and a copy whose refs
// checksum equals the primary repository's and whose objects are all
// there (git fsck --connectivity-only); no other registry row or
// repository exists; no row is left started; no stage or trash remains.
func (w *World) CompareRepositories(ctx context.Context, strategies ...strategy.RepositoryStrategy) (Diff, error) {
	return CompareRepositorySites(ctx, RepositorySites{Tracking: w.TrackingDB,
		PrimaryRoot: w.PrimaryRepositories, SecondaryRoot: w.SecondaryRepositories}, strategies...)
}

// CompareAll is Compare and CompareRepositories at once, for a secondary
// replicating both kinds: each kind's types are compared with the
// kind's storage, and a row of a type among none of strategies is extra.
func (w *World) CompareAll(ctx context.Context, strategies ...strategy.Strategy) (Diff, error) {
	var blobs []strategy.BlobStrategy
	var repos []strategy.RepositoryStrategy
	for _, s := range strategies {
		switch s := s.(type) {
		case strategy.BlobStrategy:
			blobs = append(blobs, s)
		case strategy.RepositoryStrategy:
			repos = append(repos, s)
		default:
			return Diff{}, fmt.Errorf("geotest: CompareAll: %T is of no kind", s)
		}
	}
	bd, err := w.Compare(ctx, blobs...)
	if err != nil {
		return bd, err
	}
	// Compare counts every row of another type as extra; the repository
	// types' rows are CompareRepositories' to judge.
	var repoRows int
	if err := w.TrackingDB.GetContext(ctx, &repoRows, `SELECT count(*) FROM geo_registry WHERE replicable = ANY($1)`,
		pqStrings(namesOf(repos))); err != nil {
		return bd, err
	}
	bd.Extra -= repoRows
	rd, err := compareRepositories(ctx, RepositorySites{Tracking: w.TrackingDB,
		PrimaryRoot: w.PrimaryRepositories, SecondaryRoot: w.SecondaryRepositories}, repos, false)
	if err != nil {
		return bd, err
	}
	return bd.add(rd), nil
}

func namesOf(repos []strategy.RepositoryStrategy) map[string]bool {
	m := map[string]bool{}
	for _, s := range repos {
		m[s.Name()] = true
	}
	return m
}

// add returns d with o's counts added and o's details appended.
func (d Diff) add(o Diff) Diff {
	d.Records += o.Records
	d.Lost += o.Lost
	d.NeverArrived += o.NeverArrived
	d.Stale += o.Stale
	d.Vanished += o.Vanished
	d.Corrupted += o.Corrupted
	d.Stuck += o.Stuck
	d.Extra += o.Extra
	d.TempFiles += o.TempFiles
	for _, s := range o.Details {
		d.note("%s", s)
	}
	return d
}

// CompareRepositorySites is World.CompareRepositories for any pair of
// sites, such as the demo's.
func CompareRepositorySites(ctx context.Context, w RepositorySites, strategies ...strategy.RepositoryStrategy) (Diff, error) {
	return compareRepositories(ctx, w, strategies, true)
}

// compareRepositories compares; countOthers counts the rows of types not
// among strategies as extra.
func compareRepositories(ctx context.Context, w RepositorySites, strategies []strategy.RepositoryStrategy, countOthers bool) (Diff, error) {
	var d Diff
	if len(strategies) == 0 && !countOthers {
		return d, nil
	}
	g, err := gitrepo.New(ctx, nil)
	if err != nil {
		return d, err
	}
	srv, err := gitrepo.NewServer(g, w.PrimaryRoot, nil)
	if err != nil {
		return d, err
	}
	copies, err := gitrepo.NewServer(g, w.SecondaryRoot, nil) // read-only use: checksums, Exists
	if err != nil {
		return d, err
	}
	store, err := registry.NewStore(w.Tracking, registry.Options{})
	if err != nil {
		return d, err
	}
	want := map[string]bool{}
	names := namesOf(strategies)
	for _, s := range strategies {
		inScope := map[int64]bool{}
		var after int64
		for {
			ids, err := s.IDs(ctx, after, 1000)
			if err != nil {
				return d, fmt.Errorf("list %s: %w", s.Name(), err)
			}
			for _, id := range ids {
				rel, err := s.RepositoryPath(ctx, id)
				if errors.Is(err, strategy.ErrNotFound) {
					continue // deleted since it was listed
				}
				if err != nil {
					return d, fmt.Errorf("path %s/%d: %w", s.Name(), id, err)
				}
				inScope[id] = true
				d.Records++
				want[rel] = true
				if err := compareRepository(ctx, &d, store, srv, copies, w.SecondaryRoot, g, s.Name(), id, rel); err != nil {
					return d, err
				}
			}
			if len(ids) < 1000 {
				break
			}
			after = ids[len(ids)-1]
		}
		if err := d.checkRows(ctx, w.Tracking, s.Name(), inScope); err != nil {
			return d, err
		}
	}
	if countOthers {
		var others int
		if err := w.Tracking.GetContext(ctx, &others, `SELECT count(*) FROM geo_registry WHERE NOT (replicable = ANY($1))`, pqStrings(names)); err != nil {
			return d, err
		}
		d.Extra += others
	}
	return d, walkRepositories(w.SecondaryRoot, want, &d)
}

// compareRepository compares one record's copy with the primary's.
func compareRepository(ctx context.Context, d *Diff, store *registry.Store, srv, copies *gitrepo.Server, root string, g *gitrepo.Git,
	name string, id int64, rel string) error {
	row, rerr := store.Get(ctx, name, id)
	if rerr != nil && !errors.Is(rerr, registry.ErrNotFound) {
		return rerr
	}
	primary, err := srv.Checksum(ctx, rel)
	if err != nil {
		return fmt.Errorf("primary repository of %s/%d: %w", name, id, err)
	}
	local, lerr := copies.Checksum(ctx, rel)
	if lerr != nil && !errors.Is(lerr, gitrepo.ErrNotRepository) {
		return lerr
	}
	if rerr != nil || row.State != registry.StateSynced {
		d.Lost++
		if lerr == nil && local != primary {
			d.Stale++
			d.note("%s/%d: not synced (%v), an older copy kept at %s", name, id, rowState(row, rerr), rel)
		} else {
			d.NeverArrived++
			d.note("%s/%d: never arrived (%v)", name, id, rowState(row, rerr))
		}
		return nil
	}
	switch {
	case errors.Is(lerr, gitrepo.ErrNotRepository):
		d.Lost++
		d.Vanished++
		d.note("%s/%d: synced but no repository at %s", name, id, rel)
	case local != primary:
		d.Corrupted++
		d.note("%s/%d: refs checksum %s, primary %s", name, id, local[:12], primary[:12])
	default:
		if _, err := gitrepo.RunGit(ctx, g, filepath.Join(root, rel), "fsck", "--connectivity-only", "--no-progress"); err != nil {
			d.Corrupted++
			d.note("%s/%d: objects missing: %v", name, id, err)
		}
	}
	return nil
}

// walkRepositories counts the repositories under root that want lacks as
// extra, and the stages and trash left in its temporary directory.
func walkRepositories(root string, want map[string]bool, d *Diff) error {
	if _, err := os.Stat(root); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if rel == "." {
			return nil
		}
		if strings.HasPrefix(rel, ".geo-tmp") {
			// .geo-tmp/<owner>/lock is an owner's lock; anything else in
			// an owner's directory is a stage or trash left behind.
			if parts := strings.Split(rel, "/"); len(parts) == 3 && parts[2] != "lock" {
				d.TempFiles++
				d.note("temporary entry left: %s", rel)
			}
			if e.IsDir() && len(strings.Split(rel, "/")) >= 3 {
				return fs.SkipDir
			}
			return nil
		}
		if !e.IsDir() {
			d.Extra++
			d.note("extra file %s", rel)
			return nil
		}
		if _, err := os.Stat(filepath.Join(p, "objects")); err == nil {
			if !want[rel] {
				d.Extra++
				d.note("extra repository %s", rel)
			}
			return fs.SkipDir
		}
		return nil
	})
}
