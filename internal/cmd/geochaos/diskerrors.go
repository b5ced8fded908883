package main

import (
	"context"
	"fmt"
	"io/fs"
	mrand "math/rand/v2"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/blob/dirblob"
	"github.com/geoframework/geo/blob/driver"
)

// faultyStorage wraps the secondary's storage backend (the directory
// driver, under the portable blob.Bucket) and fails operations at random
// the way a sick disk does: NewWriter (EIO), Write (ENOSPC or EIO after
// writing part of the buffer), the early fsync of checked bytes
// (driver.Syncer, which the Downloader reaches through Writer.Sync: EIO),
// Commit before anything is visible (the file's fsync fails: EIO), Commit
// after the rename (the directory's fsync fails: the new bytes are visible
// but not known durable, which is what the directory backend itself
// reports in that case) and Delete (EIO, and the batch deletes of the
// consistency pass). After every Commit that made bytes visible it reads
// them back: the bytes at a final key must be exactly those the primary
// wrote there, never a prefix.
type faultyStorage struct {
	*dirblob.Dir
	bucket   *blob.Bucket // over the inner Dir, for read-backs
	contents *contentLog

	pCreate, pWrite, pSync, pCommitBefore, pCommitAfter, pRemove float64

	mu      sync.Mutex
	r       *mrand.Rand
	counts  map[string]int
	commits int
	partial []string
}

func newFaultyStorage(inner *dirblob.Dir, contents *contentLog, seed uint64) *faultyStorage {
	return &faultyStorage{
		Dir: inner, bucket: blob.NewBucket(inner), contents: contents,
		pCreate: 0.03, pWrite: 0.03, pSync: 0.05, pCommitBefore: 0.08, pCommitAfter: 0.05, pRemove: 0.05,
		r: mrand.New(mrand.NewPCG(seed, 13)), counts: map[string]int{},
	}
}

// roll returns true with probability p and counts what was injected.
func (s *faultyStorage) roll(p float64, what string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.r.Float64() < p {
		s.counts[what]++
		return true
	}
	return false
}

func (s *faultyStorage) intn(n int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.r.IntN(n)
}

func (s *faultyStorage) NewWriter(ctx context.Context, key string, opts *driver.WriterOptions) (driver.Writer, error) {
	if s.roll(s.pCreate, "create-EIO") {
		return nil, &fs.PathError{Op: "open", Path: key, Err: syscall.EIO}
	}
	w, err := s.Dir.NewWriter(ctx, key, opts)
	if err != nil {
		return nil, err
	}
	return &faultyWriter{Writer: w, s: s, key: key}, nil
}

func (s *faultyStorage) Delete(ctx context.Context, key string) error {
	if s.roll(s.pRemove, "remove-EIO") {
		return &fs.PathError{Op: "unlinkat", Path: key, Err: syscall.EIO}
	}
	return s.Dir.Delete(ctx, key)
}

func (s *faultyStorage) DeleteBatch(ctx context.Context, keys []string) error {
	if s.roll(s.pRemove, "remove-EIO") {
		return &fs.PathError{Op: "unlinkat", Path: keys[0], Err: syscall.EIO}
	}
	return s.Dir.DeleteBatch(ctx, keys)
}

// audit reads back the bytes just made visible at key.
func (s *faultyStorage) audit(ctx context.Context, key string) {
	got, _, err := shaOf(ctx, s.bucket, key)
	want, known := s.contents.get(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.commits++
	switch {
	case err != nil:
		s.partial = append(s.partial, fmt.Sprintf("%s: unreadable after commit: %v", key, err))
	case !known || got != want:
		s.partial = append(s.partial, fmt.Sprintf("%s: sha %s after commit, primary wrote %s", key, got, want))
	}
}

type faultyWriter struct {
	driver.Writer
	s   *faultyStorage
	key string
}

func (w *faultyWriter) Write(p []byte) (int, error) {
	if len(p) > 0 && w.s.roll(w.s.pWrite, "write-error") {
		k := w.s.intn(len(p))
		n, err := w.Writer.Write(p[:k])
		if err != nil {
			return n, err
		}
		errno := syscall.ENOSPC
		if w.s.intn(2) == 0 {
			errno = syscall.EIO
		}
		return n, &fs.PathError{Op: "write", Path: w.key, Err: errno}
	}
	return w.Writer.Write(p)
}

// Sync fails the early fsync at random (EIO); otherwise it is the inner
// writer's, when it has one.
func (w *faultyWriter) Sync(ctx context.Context) error {
	if w.s.roll(w.s.pSync, "sync-EIO") {
		return &fs.PathError{Op: "fsync", Path: w.key, Err: syscall.EIO}
	}
	if s, ok := w.Writer.(driver.Syncer); ok {
		return s.Sync(ctx)
	}
	return nil
}

func (w *faultyWriter) Commit(ctx context.Context) error {
	if w.s.roll(w.s.pCommitBefore, "fsync-EIO") {
		w.Writer.Abort()
		return &fs.PathError{Op: "fsync", Path: w.key, Err: syscall.EIO}
	}
	after := w.s.roll(w.s.pCommitAfter, "dir-fsync-EIO-after-rename")
	if err := w.Writer.Commit(ctx); err != nil {
		return err
	}
	w.s.audit(ctx, w.key)
	if after {
		return fmt.Errorf("sync directory: %w", &fs.PathError{Op: "fsync", Path: path.Dir(w.key), Err: syscall.EIO})
	}
	return nil
}

// runDiskErrors: the secondary's storage fails creates, writes (ENOSPC,
// EIO), file fsyncs, directory fsyncs after the rename and removes at
// random while the primary keeps changing data. Rows fail and retry with
// backoff; every commit that made bytes visible is read back (nothing
// partial at a final key); at the end, the exact comparison.
func runDiskErrors(ctx context.Context, o options) error {
	const name = "disk-errors"
	n := o.size(o.n, 200, 2000)
	seedN := n * 3 / 5
	e, w, err := seededEnv(ctx, o, name, envConfig{}, seedN, false)
	if err != nil {
		return err
	}
	defer e.close()
	dir, err := dirblob.New(e.SecondaryRoot)
	if err != nil {
		return err
	}
	faulty := newFaultyStorage(dir, e.contents, o.seed)
	storage := blob.NewBucket(faulty)
	defer storage.Close()
	sec, err := startSecondary(e.secondaryConfig(storage))
	if err != nil {
		return err
	}
	defer sec.stop()
	checker, stopCheck := startChecker(ctx, e)
	defer stopCheck()
	if err := w.churnUntilCreated(ctx, n-seedN, 3*time.Millisecond, false); err != nil {
		return err
	}
	o.logf(name, "application %s; waiting for convergence through the disk faults", w)
	d, took, cerr := e.waitConverged(ctx, o.timeout)
	if err := stopCheck(); err != nil { // its last pass covers the last settles
		return err
	}
	if err := sec.stop(); err != nil {
		return err
	}
	faulty.mu.Lock()
	injected, commits, partial := countReasons(faulty.counts), faulty.commits, append([]string(nil), faulty.partial...)
	faulty.mu.Unlock()
	o.logf(name, "injected: %s", injected)
	o.logf(name, "failure reasons recorded on rows: %s", countReasons(checker.reasons))
	for _, k := range sortedKeys(checker.samples) {
		o.logf(name, "  e.g. %s: %s", k, oneLine(checker.samples[k], 220))
	}
	o.logf(name, "commits read back: %d, partial or wrong at a final key: %d; synced transitions checked: %d, bad: %d",
		commits, len(partial), checker.checked, len(checker.bad))
	if cerr != nil {
		summary(o.out, name, d, took)
		return cerr
	}
	if d, err = e.compare(ctx); err != nil {
		return err
	}
	serr := summary(o.out, name, d, took)
	if len(partial) > 0 {
		return fmt.Errorf("bytes at a final key were not the primary's: %s", strings.Join(partial[:min(5, len(partial))], "; "))
	}
	if len(checker.bad) > 0 {
		return fmt.Errorf("%d bad files were marked synced: %s", len(checker.bad), strings.Join(checker.bad[:min(5, len(checker.bad))], "; "))
	}
	return serr
}
