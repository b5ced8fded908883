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
)

// faultyStorage wraps the secondary's storage and fails operations at
// random the way a sick disk does: Create (EIO), Write (ENOSPC or EIO
// after writing part of the buffer), the early fsync of checked bytes
// (blob.Syncer, called by the Downloader: EIO), Commit before anything is visible
// (the file's fsync fails: EIO), Commit after the rename (the directory's
// fsync fails: the new bytes are visible but not known durable, which is
// what blob.Dir itself reports in that case) and Remove (EIO). After every
// Commit that made bytes visible it reads them back: the bytes at a final
// key must be exactly those the primary wrote there, never a prefix.
type faultyStorage struct {
	blob.Storage
	contents *contentLog

	pCreate, pWrite, pSync, pCommitBefore, pCommitAfter, pRemove float64

	mu      sync.Mutex
	r       *mrand.Rand
	counts  map[string]int
	commits int
	partial []string
}

func newFaultyStorage(inner blob.Storage, contents *contentLog, seed uint64) *faultyStorage {
	return &faultyStorage{
		Storage: inner, contents: contents,
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

func (s *faultyStorage) Create(ctx context.Context, key string) (blob.Writer, error) {
	if s.roll(s.pCreate, "create-EIO") {
		return nil, fmt.Errorf("blob: create %q: %w", key, &fs.PathError{Op: "open", Path: key, Err: syscall.EIO})
	}
	w, err := s.Storage.Create(ctx, key)
	if err != nil {
		return nil, err
	}
	return &faultyWriter{Writer: w, s: s, key: key}, nil
}

func (s *faultyStorage) Remove(ctx context.Context, key string) error {
	if s.roll(s.pRemove, "remove-EIO") {
		return fmt.Errorf("blob: remove %q: %w", key, &fs.PathError{Op: "unlinkat", Path: key, Err: syscall.EIO})
	}
	return s.Storage.Remove(ctx, key)
}

// audit reads back the bytes just made visible at key.
func (s *faultyStorage) audit(ctx context.Context, key string) {
	got, _, err := shaOf(ctx, s.Storage, key)
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
	blob.Writer
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
		return n, fmt.Errorf("blob: write %q: %w", w.key, &fs.PathError{Op: "write", Path: w.key, Err: errno})
	}
	return w.Writer.Write(p)
}

// Sync fails the early fsync at random (EIO); otherwise it is the inner
// writer's, when it has one.
func (w *faultyWriter) Sync(ctx context.Context) error {
	if w.s.roll(w.s.pSync, "sync-EIO") {
		return fmt.Errorf("blob: sync %q: %w", w.key, &fs.PathError{Op: "fsync", Path: w.key, Err: syscall.EIO})
	}
	if s, ok := w.Writer.(blob.Syncer); ok {
		return s.Sync(ctx)
	}
	return nil
}

func (w *faultyWriter) Commit(ctx context.Context) error {
	if w.s.roll(w.s.pCommitBefore, "fsync-EIO") {
		w.Writer.Abort()
		return fmt.Errorf("blob: commit %q: %w", w.key, &fs.PathError{Op: "fsync", Path: w.key, Err: syscall.EIO})
	}
	after := w.s.roll(w.s.pCommitAfter, "dir-fsync-EIO-after-rename")
	if err := w.Writer.Commit(ctx); err != nil {
		return err
	}
	w.s.audit(ctx, w.key)
	if after {
		return fmt.Errorf("blob: commit %q: sync directory: %w", w.key, &fs.PathError{Op: "fsync", Path: path.Dir(w.key), Err: syscall.EIO})
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
	dir, err := blob.NewDir(e.SecondaryRoot)
	if err != nil {
		return err
	}
	defer dir.Close()
	faulty := newFaultyStorage(dir, e.contents, o.seed)
	sec, err := startSecondary(e.secondaryConfig(faulty))
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
