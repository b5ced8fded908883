package geotest_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/examples/lfs"
	"github.com/geoframework/geo/examples/packagefile"
	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/geotest/pgtest"
	"github.com/geoframework/geo/strategy"
)

var pg = pgtest.New(pgtest.Options{})

func TestMain(m *testing.M) { os.Exit(pg.Run(m)) }

// recT is a geotest.T that records failures instead of failing the real
// test, and runs only the clauses a self-test selects.
type recT struct {
	t        *testing.T
	name     string
	only     map[string]bool
	mu       *sync.Mutex
	failures map[string][]string // clause -> messages
	skipped  map[string]bool
	cleanups []func()
	dirs     []string
}

func newRecT(t *testing.T, only ...string) *recT {
	m := map[string]bool{}
	for _, o := range only {
		m[o] = true
	}
	return &recT{t: t, only: m, mu: &sync.Mutex{}, failures: map[string][]string{}, skipped: map[string]bool{}}
}

func (r *recT) Helper()      {}
func (r *recT) Name() string { return r.name }
func (r *recT) Logf(format string, args ...any) {
	r.t.Logf("[%s] %s", r.name, fmt.Sprintf(format, args...))
}
func (r *recT) record(msg string) {
	r.mu.Lock()
	r.failures[r.name] = append(r.failures[r.name], msg)
	r.mu.Unlock()
}
func (r *recT) Errorf(format string, args ...any) { r.record(fmt.Sprintf(format, args...)) }
func (r *recT) Fatalf(format string, args ...any) {
	r.record(fmt.Sprintf(format, args...))
	runtime.Goexit()
}
func (r *recT) Fatal(args ...any) { r.record(fmt.Sprint(args...)); runtime.Goexit() }
func (r *recT) Skip(args ...any) {
	r.mu.Lock()
	r.skipped[r.name] = true
	r.mu.Unlock()
	runtime.Goexit()
}
func (r *recT) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }
func (r *recT) TempDir() string {
	d, err := os.MkdirTemp("", "geotest-self-")
	if err != nil {
		r.t.Fatal(err)
	}
	r.dirs = append(r.dirs, d)
	return d
}

// Run runs f as a subtest in its own goroutine, so Fatalf can end it with
// runtime.Goexit as testing does, then runs its cleanups.
func (r *recT) Run(name string, f func(t geotest.T)) bool {
	if len(r.only) > 0 && !r.only[name] {
		return true
	}
	child := &recT{t: r.t, name: name, only: r.only, mu: r.mu, failures: r.failures, skipped: r.skipped}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			for i := len(child.cleanups) - 1; i >= 0; i-- {
				child.cleanups[i]()
			}
			for _, d := range child.dirs {
				os.RemoveAll(d)
			}
		}()
		f(child)
	}()
	<-done
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.failures[name]) == 0
}

func (r *recT) finish() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

func app(a geotest.App) *packagefile.App {
	return &packagefile.App{DB: a.DB, Storage: a.Storage, Publisher: a.Publisher, Adapter: &packagefile.Strategy{DB: a.DB}}
}

// harness is packagefile's harness with the adapter replaced by wrap.
func harness(wrap func(s *packagefile.Strategy) strategy.BlobStrategy) geotest.Harness {
	return geotest.Harness{
		Server:   pg,
		Setup:    packagefile.CreateSchema,
		Strategy: func(db *sqlx.DB) strategy.BlobStrategy { return wrap(&packagefile.Strategy{DB: db}) },
		ScopedStrategy: func(db *sqlx.DB) strategy.BlobStrategy {
			return wrap(&packagefile.Strategy{DB: db, ProjectIDs: []int64{1}})
		},
		Create: func(ctx context.Context, a geotest.App, b []byte) (int64, error) {
			return app(a).AddFile(ctx, 1, "p", "1", "p.tgz", b)
		},
		CreateOutOfScope: func(ctx context.Context, a geotest.App, b []byte) (int64, error) {
			return app(a).AddFile(ctx, 2, "q", "1", "q.tgz", b)
		},
		Update: func(ctx context.Context, a geotest.App, id int64, b []byte) error {
			return app(a).ReplaceFile(ctx, id, b)
		},
		Delete: func(ctx context.Context, a geotest.App, id int64) error { return app(a).DeleteFile(ctx, id) },
	}
}

type unsortedIDs struct{ *packagefile.Strategy }

func (u unsortedIDs) IDs(ctx context.Context, after int64, limit int) ([]int64, error) {
	ids, err := u.Strategy.IDs(ctx, after, limit)
	for i, j := 0, len(ids)-1; i < j; i, j = i+1, j-1 {
		ids[i], ids[j] = ids[j], ids[i]
	}
	return ids, err
}

type unstableKey struct {
	*packagefile.Strategy
	n *atomic.Int64
}

func (u unstableKey) BlobKey(ctx context.Context, id int64) (string, error) {
	k, err := u.Strategy.BlobKey(ctx, id)
	return fmt.Sprintf("%s.%d", k, u.n.Add(1)), err
}

type neverNotFound struct{ *packagefile.Strategy }

func (u neverNotFound) BlobKey(ctx context.Context, id int64) (string, error) {
	k, err := u.Strategy.BlobKey(ctx, id)
	if err != nil {
		return fmt.Sprintf("packages/0/files/%d/gone.tgz", id), nil
	}
	return k, nil
}

// ignoresScope lists out-of-scope ids although its BlobKey honours the scope.
type ignoresScope struct{ *packagefile.Strategy }

func (u ignoresScope) IDs(ctx context.Context, after int64, limit int) ([]int64, error) {
	all := &packagefile.Strategy{DB: u.DB}
	return all.IDs(ctx, after, limit)
}

func (u ignoresScope) BlobKey(ctx context.Context, id int64) (string, error) {
	all := &packagefile.Strategy{DB: u.DB}
	return all.BlobKey(ctx, id)
}

// batchKeys adds a correct strategy.BatchKeyer to an adapter: BlobKey per
// id, leaving out the ones not found.
type batchKeys struct{ *packagefile.Strategy }

func (b batchKeys) BlobKeys(ctx context.Context, ids []int64) (map[int64]string, error) {
	keys := map[int64]string{}
	for _, id := range ids {
		k, err := b.BlobKey(ctx, id)
		if errors.Is(err, strategy.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		keys[id] = k
	}
	return keys, nil
}

// batchKeysIgnoreScope's BlobKeys lists out-of-scope records although its
// BlobKey honours the scope.
type batchKeysIgnoreScope struct{ *packagefile.Strategy }

func (b batchKeysIgnoreScope) BlobKeys(ctx context.Context, ids []int64) (map[int64]string, error) {
	return batchKeys{&packagefile.Strategy{DB: b.DB}}.BlobKeys(ctx, ids)
}

// wrongChecksum's BlobChecksum (strategy.Checksummer) answers a digest
// that is not the bytes'.
type wrongChecksum struct{ *packagefile.Strategy }

func (w wrongChecksum) BlobChecksum(ctx context.Context, id int64) (string, error) {
	if _, err := w.BlobKey(ctx, id); err != nil {
		return "", err
	}
	return strings.Repeat("ab", 32), nil
}

// TestSuiteCatchesBrokenAdapters runs clauses of the suite against
// deliberately broken adapters and checks that each fails the intended
// clause with a "clause: got X, want Y" message, and that the correct
// adapter passes the same clauses.
func TestSuiteCatchesBrokenAdapters(t *testing.T) {
	clauses := []string{"adapter/ids_ascending_and_paged", "adapter/keys_valid_and_stable", "adapter/not_found_after_delete", "adapter/batch_keys_agree", "scope/respected"}
	cases := []struct {
		name   string
		wrap   func(s *packagefile.Strategy) strategy.BlobStrategy
		clause string // the clause that must fail; "" means none may
	}{
		{"correct", func(s *packagefile.Strategy) strategy.BlobStrategy { return batchKeys{s} }, ""},
		{"unsorted_ids", func(s *packagefile.Strategy) strategy.BlobStrategy { return unsortedIDs{s} }, "adapter/ids_ascending_and_paged"},
		{"unstable_key", func(s *packagefile.Strategy) strategy.BlobStrategy { return unstableKey{s, &atomic.Int64{}} }, "adapter/keys_valid_and_stable"},
		{"never_not_found", func(s *packagefile.Strategy) strategy.BlobStrategy { return neverNotFound{s} }, "adapter/not_found_after_delete"},
		{"ignores_scope", func(s *packagefile.Strategy) strategy.BlobStrategy {
			if s.ProjectIDs == nil {
				return s
			}
			return ignoresScope{s}
		}, "scope/respected"},
		{"batch_keys_ignore_scope", func(s *packagefile.Strategy) strategy.BlobStrategy {
			if s.ProjectIDs == nil {
				return batchKeys{s}
			}
			return batchKeysIgnoreScope{s}
		}, "adapter/batch_keys_agree"},
		{"wrong_checksum", func(s *packagefile.Strategy) strategy.BlobStrategy { return wrongChecksum{s} }, "integrity/verified_against_primary_checksum"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			only := clauses
			if tc.clause != "" {
				only = []string{tc.clause}
			}
			r := newRecT(t, only...)
			geotest.Run(r, harness(tc.wrap))
			r.finish()
			for _, c := range only {
				if r.skipped[c] {
					t.Errorf("clause %s skipped, want it run", c)
				}
			}
			if tc.clause == "" {
				for c, msgs := range r.failures {
					t.Errorf("correct adapter failed clause %s: %v", c, msgs)
				}
				return
			}
			msgs := r.failures[tc.clause]
			if len(msgs) == 0 {
				t.Fatalf("broken adapter %s: clause %s passed, want it to fail", tc.name, tc.clause)
			}
			if !strings.HasPrefix(msgs[0], tc.clause+": ") || !strings.Contains(msgs[0], "got ") || !strings.Contains(msgs[0], "want ") {
				t.Errorf("failure message %q: want the form \"%s: ... got X, want Y\"", msgs[0], tc.clause)
			}
			t.Logf("caught as intended: %s", msgs[0])
		})
	}
}

// TestSuiteWaitFailsWithoutProgress: a clause's wait fails once what it
// watches has not changed for Harness.Stall, long before the clause's
// Timeout (the watchdog for a hang): here an application that stores a
// record without publishing its created event, so sync/created (which
// relies on events alone) never sees a row.
func TestSuiteWaitFailsWithoutProgress(t *testing.T) {
	h := harness(func(s *packagefile.Strategy) strategy.BlobStrategy { return s })
	h.Create = func(ctx context.Context, a geotest.App, b []byte) (int64, error) {
		var pkg, id int64
		if err := a.DB.GetContext(ctx, &pkg, `INSERT INTO packages (project_id, name, version) VALUES (1, 'p', '1') RETURNING id`); err != nil {
			return 0, err
		}
		if err := a.DB.GetContext(ctx, &id, `INSERT INTO package_files (package_id, file_name, size) VALUES ($1, 'p.tgz', $2) RETURNING id`, pkg, len(b)); err != nil {
			return 0, err
		}
		w, err := a.Storage.Create(ctx, fmt.Sprintf("packages/%d/files/%d/p.tgz", pkg, id), nil)
		if err != nil {
			return 0, err
		}
		if _, err := w.Write(b); err != nil {
			w.Abort()
			return 0, err
		}
		return id, w.Commit(ctx) // and no created event
	}
	h.Stall = 2 * time.Second
	r := newRecT(t, "sync/created")
	start := time.Now()
	geotest.Run(r, h)
	r.finish()
	took := time.Since(start)
	msgs := r.failures["sync/created"]
	if len(msgs) == 0 {
		t.Fatalf("sync/created with no created event: passed, want a failure")
	}
	if !strings.Contains(msgs[0], "no progress for 2s") || !strings.Contains(msgs[0], "want synced") {
		t.Errorf("failure message %q: want a wait that failed for no progress for Harness.Stall", msgs[0])
	}
	if took >= geotest.DefaultClauseTimeout {
		t.Errorf("the clause failed after %v, want long before its %v Timeout", took, geotest.DefaultClauseTimeout)
	}
	t.Logf("caught as intended after %v: %s", took, msgs[0])
}

func lfsObjects(a geotest.App) lfs.Objects {
	return lfs.Objects{DB: a.DB, Storage: a.Storage, Publisher: a.Publisher}
}

func oidOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// lfsHarness is examples/lfs's harness: content-addressed, keys shared.
func lfsHarness() geotest.Harness {
	return geotest.Harness{
		Server:   pg,
		Setup:    lfs.CreateSchema,
		Strategy: func(db *sqlx.DB) strategy.BlobStrategy { return &lfs.Strategy{DB: db} },
		Create: func(ctx context.Context, a geotest.App, b []byte) (int64, error) {
			return lfsObjects(a).Store(ctx, 1, oidOf(b), int64(len(b)), bytes.NewReader(b))
		},
		Update: func(ctx context.Context, a geotest.App, id int64, b []byte) error {
			return lfsObjects(a).Repoint(ctx, id, oidOf(b), int64(len(b)), bytes.NewReader(b))
		},
		Delete:         func(ctx context.Context, a geotest.App, id int64) error { return lfsObjects(a).Delete(ctx, id) },
		KeysMayCollide: true,
	}
}

var keyClauses = []string{"keys/equal_bytes_equal_keys", "keys/shared_by_two_records", "keys/reused_after_delete", "keys/swap"}

// TestSuiteCatchesBrokenSharedKeys runs the keys/* clauses against
// deliberately broken content-addressed types (an adapter and
// applications an adopter could plausibly write) and checks that each
// fails the intended clause, on the primary's side where the break is the
// application's; that the correct type passes them; and that a type
// without Harness.KeysMayCollide skips them.
func TestSuiteCatchesBrokenSharedKeys(t *testing.T) {
	cases := []struct {
		name    string
		harness func() geotest.Harness
		clause  string // the clause that must fail; "" means none may
		says    string // what its first message must contain
	}{
		{"correct", lfsHarness, "", ""},
		{"keyed_by_id", func() geotest.Harness {
			// Claims KeysMayCollide but keys by id: equal bytes, different keys.
			h := harness(func(s *packagefile.Strategy) strategy.BlobStrategy { return s })
			h.KeysMayCollide = true
			return h
		}, "keys/equal_bytes_equal_keys", "want one key"},
		{"delete_removes_shared_bytes", func() geotest.Harness {
			// Removes the deleted record's bytes whoever else names them.
			h := lfsHarness()
			h.Delete = func(ctx context.Context, a geotest.App, id int64) error {
				key, err := (&lfs.Strategy{DB: a.DB}).BlobKey(ctx, id)
				if err != nil {
					return err
				}
				if err := lfsObjects(a).Delete(ctx, id); err != nil {
					return err
				}
				return a.Storage.Remove(ctx, key)
			}
			return h
		}, "keys/shared_by_two_records", "on the primary"},
		{"stale_dedup_cache", func() geotest.Harness {
			// Remembers the objects it stored and, for one seen before,
			// records the row without the bytes, although a delete has
			// collected them since.
			h := lfsHarness()
			var seen sync.Map
			h.Create = func(ctx context.Context, a geotest.App, b []byte) (int64, error) {
				oid := oidOf(b)
				if _, known := seen.LoadOrStore(oid, true); !known {
					return lfsObjects(a).Store(ctx, 1, oid, int64(len(b)), bytes.NewReader(b))
				}
				tx, err := a.DB.BeginTxx(ctx, nil)
				if err != nil {
					return 0, err
				}
				defer tx.Rollback()
				var id int64
				if err := tx.GetContext(ctx, &id, `INSERT INTO lfs_objects (project_id, oid, size) VALUES (1, $1, $2) RETURNING id`, oid, len(b)); err != nil {
					return 0, err
				}
				if err := a.Publisher.Publish(ctx, tx, lfs.Name, events.OpCreated, id, lfs.Key(oid)); err != nil {
					return 0, err
				}
				return id, tx.Commit()
			}
			return h
		}, "keys/reused_after_delete", "on the primary"},
		{"update_removes_old_bytes", func() geotest.Harness {
			// Removes the old bytes after an update whoever else names
			// them (what examples/upload's Replace does, rightly there:
			// its keys are never shared).
			h := lfsHarness()
			h.Update = func(ctx context.Context, a geotest.App, id int64, b []byte) error {
				old, err := (&lfs.Strategy{DB: a.DB}).BlobKey(ctx, id)
				if err != nil {
					return err
				}
				if err := lfsObjects(a).Repoint(ctx, id, oidOf(b), int64(len(b)), bytes.NewReader(b)); err != nil {
					return err
				}
				if old == lfs.Key(oidOf(b)) {
					return nil
				}
				return a.Storage.Remove(ctx, old)
			}
			return h
		}, "keys/swap", "on the primary"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			only := keyClauses
			if tc.clause != "" {
				only = []string{tc.clause}
			}
			r := newRecT(t, only...)
			geotest.Run(r, tc.harness())
			r.finish()
			for _, c := range only {
				if r.skipped[c] {
					t.Errorf("clause %s skipped, want it run", c)
				}
			}
			if tc.clause == "" {
				for c, msgs := range r.failures {
					t.Errorf("correct type failed clause %s: %v", c, msgs)
				}
				return
			}
			msgs := r.failures[tc.clause]
			if len(msgs) == 0 {
				t.Fatalf("broken type %s: clause %s passed, want it to fail", tc.name, tc.clause)
			}
			if !strings.HasPrefix(msgs[0], tc.clause+": ") || !strings.Contains(msgs[0], "got ") || !strings.Contains(msgs[0], "want ") {
				t.Errorf("failure message %q: want the form \"%s: ... got X, want Y\"", msgs[0], tc.clause)
			}
			if !strings.Contains(msgs[0], tc.says) {
				t.Errorf("failure message %q: want it to say %q (the break, not something else)", msgs[0], tc.says)
			}
			t.Logf("caught as intended: %s", msgs[0])
		})
	}
	t.Run("keys_cannot_collide", func(t *testing.T) {
		r := newRecT(t, keyClauses...)
		geotest.Run(r, harness(func(s *packagefile.Strategy) strategy.BlobStrategy { return s }))
		r.finish()
		for _, c := range keyClauses {
			if !r.skipped[c] {
				t.Errorf("clause %s without Harness.KeysMayCollide: got it run (failures %v), want it skipped", c, r.failures[c])
			}
		}
	})
}

// TestCompareSharedKeys: the exact comparison counts every record naming
// a shared key, and a shared file missing on the secondary as lost for
// each record that names it.
func TestCompareSharedKeys(t *testing.T) {
	w := geotest.NewWorld(t, geotest.WorldConfig{
		Server:     pg,
		Setup:      lfs.CreateSchema,
		Strategies: func(db *sqlx.DB) []strategy.BlobStrategy { return []strategy.BlobStrategy{&lfs.Strategy{DB: db}} },
	})
	ctx := context.Background()
	a := geotest.App{DB: w.PrimaryDB, Storage: w.PrimaryStorage, Publisher: w.Primary.Publisher()}
	shared, other := []byte("one object, two records"), []byte("another object")
	for _, b := range [][]byte{shared, shared, other} {
		if _, err := lfsObjects(a).Store(ctx, 1, oidOf(b), int64(len(b)), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	st := &lfs.Strategy{DB: w.PrimaryDB}
	r := w.Start(w.SecondaryConfig(st))
	r.TriggerConsistency()
	geotest.WaitFor(t, 2*time.Minute, "exact copy", func() (bool, string) {
		d, err := w.Compare(ctx, st)
		if err != nil {
			return false, err.Error()
		}
		return d.OK() && d.Records == 3, d.String()
	})
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := w.SecondaryStorage.Remove(ctx, lfs.Key(oidOf(shared))); err != nil {
		t.Fatal(err)
	}
	d, err := w.Compare(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if d.Records != 3 || d.Lost != 2 || d.Corrupted != 0 || d.Extra != 0 {
		t.Errorf("Compare with the shared file gone: got %s, want records=3 lost=2 and nothing else", d)
	}
}
