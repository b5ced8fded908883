package geotest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/geotest/s3test"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/strategy"
)

// Diff is an exact comparison of a secondary with its primary for the
// given types.
type Diff struct {
	Records int // records the secondary should hold
	// Lost counts the records that should be there and are not:
	// NeverArrived + Stale + Vanished.
	Lost int
	// NeverArrived: no synced row, and no copy at the record's key.
	NeverArrived int
	// Stale: no synced row, and a copy with other bytes than the
	// primary's kept at the record's key (a failed or pending update: the
	// secondary keeps the last good copy until the new one arrives).
	Stale int
	// Vanished: a synced row, but no blob at its key (R7 broken).
	Vanished  int
	Corrupted int      // a synced row, but bytes differ from the primary's
	Stuck     int      // registry rows left started
	Extra     int      // blobs or rows the secondary should not have
	TempFiles int      // temporary files (or uploads) left behind
	Details   []string // the first problems found, for messages
}

// OK reports whether the secondary is an exact copy.
func (d Diff) OK() bool {
	return d.Lost == 0 && d.Corrupted == 0 && d.Stuck == 0 && d.Extra == 0 && d.TempFiles == 0
}

func (d *Diff) note(format string, args ...any) {
	if len(d.Details) < 10 {
		d.Details = append(d.Details, fmt.Sprintf(format, args...))
	}
}

// checkRows counts type name's registry rows left started (Stuck) and
// those of records not in inScope (Extra): the row checks both kinds'
// comparisons share.
func (d *Diff) checkRows(ctx context.Context, tracking *sqlx.DB, name string, inScope map[int64]bool) error {
	var rows []struct {
		ID    int64 `db:"model_id"`
		State int16 `db:"state"`
	}
	if err := tracking.SelectContext(ctx, &rows, `SELECT model_id, state FROM geo_registry WHERE replicable = $1`, name); err != nil {
		return err
	}
	for _, r := range rows {
		if registry.State(r.State) == registry.StateStarted {
			d.Stuck++
			d.note("%s/%d: left started", name, r.ID)
		}
		if !inScope[r.ID] {
			d.Extra++
			d.note("%s/%d: registry row for a record not on the primary (or out of scope)", name, r.ID)
		}
	}
	return nil
}

// String summarises d.
func (d Diff) String() string {
	s := fmt.Sprintf("records=%d lost=%d (never arrived=%d stale=%d vanished=%d) corrupted=%d stuck=%d extra=%d temp=%d",
		d.Records, d.Lost, d.NeverArrived, d.Stale, d.Vanished, d.Corrupted, d.Stuck, d.Extra, d.TempFiles)
	if len(d.Details) > 0 {
		s += ": " + strings.Join(d.Details, "; ")
	}
	return s
}

// Compare checks the secondary of this world against the primary for the
// secondary's strategies (scoped as the secondary sees them): every record
// in scope has a synced registry row and a blob whose SHA-256 equals the
// primary's; no other registry row or blob exists; no row is left started;
// no temporary data remains (files in a directory's .geo-tmp, multipart
// uploads and staged files in an S3 bucket).
func (w *World) Compare(ctx context.Context, strategies ...strategy.BlobStrategy) (Diff, error) {
	sites := Sites{
		Tracking: w.TrackingDB, PrimaryStorage: w.PrimaryStorage,
		SecondaryStorage: w.SecondaryStorage, SecondaryRoot: w.SecondaryRoot,
	}
	if b := w.SecondaryBucket; b != nil {
		sites.Leftovers = func(ctx context.Context) ([]string, error) { return BucketLeftovers(ctx, b) }
	}
	return CompareSites(ctx, sites, strategies...)
}

// Sites names what CompareSites compares: the secondary's tracking
// database and both sites' storage, with where the secondary's storage
// keeps temporary data.
type Sites struct {
	Tracking         *sqlx.DB
	PrimaryStorage   *blob.Bucket
	SecondaryStorage *blob.Bucket
	// SecondaryRoot is the root directory of a secondary storage on a
	// directory (blob/dirblob), whose .geo-tmp is checked for temporary
	// files left behind; "" for object storage. Extra blobs are found in
	// SecondaryStorage's listing (blob.Bucket.Keys) on every backend.
	SecondaryRoot string
	// Leftovers, when set, returns the temporary data the secondary's
	// storage holds besides its blobs (for S3: multipart uploads neither
	// completed nor aborted, a gateway's staged files; BucketLeftovers);
	// each counts as a temporary file.
	Leftovers func(ctx context.Context) ([]string, error)
}

// BucketLeftovers is a Sites.Leftovers for a bucket of geotest/s3test: its
// multipart uploads neither completed nor aborted, and the files in the
// gateway's staging area.
func BucketLeftovers(ctx context.Context, b *s3test.Bucket) ([]string, error) {
	ups, err := b.IncompleteUploads(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ups))
	for _, k := range ups {
		out = append(out, "multipart upload of "+k)
	}
	staged, err := b.StagedFiles()
	if err != nil {
		return nil, err
	}
	for _, f := range staged {
		out = append(out, "staged file "+f)
	}
	return out, nil
}

// CompareSites is World.Compare for any pair of sites, such as the demo's.
func CompareSites(ctx context.Context, w Sites, strategies ...strategy.BlobStrategy) (Diff, error) {
	var d Diff
	store, err := registry.NewStore(w.Tracking, registry.Options{})
	if err != nil {
		return d, err
	}
	wantFiles := map[string]bool{}
	names := map[string]bool{}
	for _, s := range strategies {
		names[s.Name()] = true
		inScope := map[int64]bool{}
		var after int64
		for {
			ids, err := s.IDs(ctx, after, 1000)
			if err != nil {
				return d, fmt.Errorf("list %s: %w", s.Name(), err)
			}
			for _, id := range ids {
				inScope[id] = true
				d.Records++
				key, err := s.BlobKey(ctx, id)
				if errors.Is(err, strategy.ErrNotFound) {
					// Deleted since it was listed: the application is still
					// changing data. Not a difference of the secondary's.
					delete(inScope, id)
					d.Records--
					continue
				}
				if err != nil {
					return d, fmt.Errorf("key %s/%d: %w", s.Name(), id, err)
				}
				wantFiles[key] = true
				row, err := store.Get(ctx, s.Name(), id)
				if err != nil && !errors.Is(err, registry.ErrNotFound) {
					return d, err
				}
				want, _, perr := sha(ctx, w.PrimaryStorage, key)
				if perr != nil {
					return d, fmt.Errorf("primary bytes of %s/%d: %w", s.Name(), id, perr)
				}
				got, _, serr := sha(ctx, w.SecondaryStorage, key)
				if serr != nil && !errors.Is(serr, blob.ErrNotExist) {
					return d, serr
				}
				if err != nil || row.State != registry.StateSynced {
					d.Lost++
					if serr == nil && got != want {
						d.Stale++
						d.note("%s/%d: not synced (%v), an older copy kept at %s", s.Name(), id, rowState(row, err), key)
					} else {
						d.NeverArrived++
						d.note("%s/%d: never arrived (%v)", s.Name(), id, rowState(row, err))
					}
					continue
				}
				switch {
				case errors.Is(serr, blob.ErrNotExist):
					d.Lost++
					d.Vanished++
					d.note("%s/%d: synced but no file at %s", s.Name(), id, key)
				case got != want:
					d.Corrupted++
					d.note("%s/%d: sha %s, primary %s", s.Name(), id, got[:12], want[:12])
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
	var others int
	if err := w.Tracking.GetContext(ctx, &others, `SELECT count(*) FROM geo_registry WHERE NOT (replicable = ANY($1))`, pqStrings(names)); err != nil {
		return d, err
	}
	d.Extra += others
	// Extra blobs: the secondary storage's own listing, as the engines see
	// it (a directory walk for blob/dirblob, object listings for S3).
	for key, err := range w.SecondaryStorage.Keys(ctx, "") {
		if err != nil {
			return d, fmt.Errorf("list the secondary's storage: %w", err)
		}
		if !wantFiles[key] {
			d.Extra++
			d.note("extra blob %s", key)
		}
	}
	if w.SecondaryRoot != "" {
		if err := tempFiles(&d, w.SecondaryRoot); err != nil {
			return d, err
		}
	}
	if w.Leftovers != nil {
		left, err := w.Leftovers(ctx)
		if err != nil {
			return d, fmt.Errorf("temporary data of the secondary's storage: %w", err)
		}
		for _, l := range left {
			d.TempFiles++
			d.note("temporary data left: %s", l)
		}
	}
	return d, nil
}

// tempFiles counts the files left in a directory storage's .geo-tmp
// (owners' lock files are not temporary data).
func tempFiles(d *Diff, root string) error {
	tmp := filepath.Join(root, ".geo-tmp")
	err := filepath.WalkDir(tmp, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if !e.IsDir() && !strings.HasSuffix(rel, "/lock") && !strings.HasSuffix(rel, ".lock") {
			d.TempFiles++
			d.note("temporary file left: %s", rel)
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

func rowState(r registry.Row, err error) string {
	if err != nil {
		return err.Error()
	}
	return r.State.String()
}

func sha(ctx context.Context, s *blob.Bucket, key string) (string, int64, error) {
	r, err := s.Open(ctx, key)
	if err != nil {
		return "", 0, err
	}
	defer r.Close()
	return blob.SHA256Reader(ctx, r)
}

func pqStrings(m map[string]bool) any {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return pq.Array(out)
}
