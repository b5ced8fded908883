// Package storagetest is the contract test every blob.Storage backend must
// pass. A backend's test wires it in a few lines:
//
//	func TestDirContract(t *testing.T) {
//		storagetest.RunStorageTests(t, func(t *testing.T) blob.Storage {
//			d, err := blob.NewDir(t.TempDir())
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { d.Close() })
//			return d
//		})
//	}
//
// Each subtest is named after the clause of the blob.Storage contract it
// checks and gets a fresh, empty storage from newStorage. Run it with -race.
// The suite checks what any backend can be asked through blob.Storage;
// backend-specific promises (for example that blob.Dir leaves no temporary
// file behind) belong in the backend's own tests, for instance in a
// t.Cleanup registered by newStorage.
//
// storagetest is for tests only.
package storagetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/geoframework/geo/blob"
)

// HostileKeys returns keys every backend must reject with blob.ErrInvalidKey
// before touching its storage (a fresh slice on each call).
func HostileKeys() []string {
	return []string{
		"",
		"../../etc/passwd",
		"/abs",
		"/etc/passwd",
		"a/../../b",
		"a/..",
		"..",
		".",
		"./a",
		"a/./b",
		"a//b",
		"a/",
		"a\x00b",
		"a\\b",
		"..\\..\\windows",
		".geo-tmp/x",
		string(bytes.Repeat([]byte("k"), blob.MaxKeyLen+1)),
	}
}

// RunStorageTests runs the blob.Storage contract against the storages that
// newStorage returns, one fresh storage per subtest. newStorage should
// register any cleanup with t.Cleanup.
func RunStorageTests(t *testing.T, newStorage func(t *testing.T) blob.Storage) {
	t.Helper()
	t.Run("OpenMissingIsErrNotExist", func(t *testing.T) { testOpenMissing(t, newStorage(t)) })
	t.Run("CommitMakesExactBytesVisible", func(t *testing.T) { testCommitVisible(t, newStorage(t)) })
	t.Run("NothingVisibleBeforeCommit", func(t *testing.T) { testNothingBeforeCommit(t, newStorage(t)) })
	t.Run("AbortLeavesNothing", func(t *testing.T) { testAbort(t, newStorage(t)) })
	t.Run("CommitOrAbortExactlyOnce", func(t *testing.T) { testOnce(t, newStorage(t)) })
	t.Run("CancelledContextLeavesNothing", func(t *testing.T) { testCancelled(t, newStorage(t)) })
	t.Run("OverwriteIsAtomic", func(t *testing.T) { testOverwriteAtomic(t, newStorage(t)) })
	t.Run("ConcurrentWritersLeaveOneCompleteVersion", func(t *testing.T) { testConcurrentWriters(t, newStorage(t)) })
	t.Run("RemoveIsIdempotent", func(t *testing.T) { testRemove(t, newStorage(t)) })
	t.Run("HostileKeysAreErrInvalidKey", func(t *testing.T) { testHostileKeys(t, newStorage(t)) })
	t.Run("EmptyBlob", func(t *testing.T) { testEmpty(t, newStorage(t)) })
	t.Run("ReaderSeeks", func(t *testing.T) { testSeek(t, newStorage(t)) })
	t.Run("SyncerKeepsTheCommitContract", func(t *testing.T) { testSyncer(t, newStorage(t)) })
}

// testSyncer checks writers that implement blob.Syncer (it passes for
// those that do not): Sync publishes nothing, bytes written after a Sync
// are committed with the rest, and Sync after Commit or Abort fails.
func testSyncer(t *testing.T, s blob.Storage) {
	ctx := testCtx(t)
	w, err := s.Create(ctx, "synced/blob")
	if err != nil {
		t.Fatal(err)
	}
	sy, ok := w.(blob.Syncer)
	if !ok {
		w.Abort()
		return
	}
	first, second := pattern(70_000, 5), pattern(30_000, 6)
	if _, err := w.Write(first); err != nil {
		t.Fatal(err)
	}
	if err := sy.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	wantMissing(t, ctx, s, "synced/blob")
	if _, err := w.Write(second); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	wantContent(t, ctx, s, "synced/blob", append(first, second...))
	if err := sy.Sync(ctx); err == nil {
		t.Errorf("Sync after Commit = nil, want an error")
	}

	w, err = s.Create(ctx, "synced/aborted")
	if err != nil {
		t.Fatal(err)
	}
	w.Write(first)
	if err := w.(blob.Syncer).Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if err := w.Abort(); err != nil {
		t.Fatalf("Abort: %v", err)
	}
	wantMissing(t, ctx, s, "synced/aborted")
	if err := w.(blob.Syncer).Sync(ctx); err == nil {
		t.Errorf("Sync after Abort = nil, want an error")
	}
}

// testCtx is a watchdog: a hung backend fails the subtest instead of
// hanging CI.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// put writes data at key in chunks and commits.
func put(t *testing.T, ctx context.Context, s blob.Storage, key string, data []byte) {
	t.Helper()
	if err := write(ctx, s, key, data); err != nil {
		t.Fatalf("put %q: %v", key, err)
	}
}

func write(ctx context.Context, s blob.Storage, key string, data []byte) error {
	w, err := s.Create(ctx, key)
	if err != nil {
		return fmt.Errorf("Create: %w", err)
	}
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 7919)
		if _, err := w.Write(rest[:n]); err != nil {
			w.Abort()
			return fmt.Errorf("Write: %w", err)
		}
		rest = rest[n:]
	}
	if err := w.Commit(ctx); err != nil {
		return fmt.Errorf("Commit: %w", err)
	}
	return nil
}

func read(ctx context.Context, s blob.Storage, key string) ([]byte, error) {
	r, err := s.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

func wantMissing(t *testing.T, ctx context.Context, s blob.Storage, key string) {
	t.Helper()
	if r, err := s.Open(ctx, key); !errors.Is(err, blob.ErrNotExist) {
		if err == nil {
			r.Close()
		}
		t.Errorf("Open(%q) error = %v, want ErrNotExist", key, err)
	}
	if _, err := s.Stat(ctx, key); !errors.Is(err, blob.ErrNotExist) {
		t.Errorf("Stat(%q) error = %v, want ErrNotExist", key, err)
	}
}

func wantContent(t *testing.T, ctx context.Context, s blob.Storage, key string, want []byte) {
	t.Helper()
	got, err := read(ctx, s, key)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %q = %d bytes (sha256 %s), want %d bytes (sha256 %s)", key, len(got), sum(got), len(want), sum(want))
	}
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i%251)
	}
	return b
}

func testOpenMissing(t *testing.T, s blob.Storage) {
	ctx := testCtx(t)
	wantMissing(t, ctx, s, "missing")
	wantMissing(t, ctx, s, "no/such/dir/blob")
	put(t, ctx, s, "file", []byte("x"))
	wantMissing(t, ctx, s, "file/below")
}

func testCommitVisible(t *testing.T, s blob.Storage) {
	ctx := testCtx(t)
	data := pattern(300_001, 1)
	for _, key := range []string{"top", "a/b/c/nested.bin", "a/b/sibling"} {
		w, err := s.Create(ctx, key)
		if err != nil {
			t.Fatalf("Create(%q): %v", key, err)
		}
		if _, err := w.Write(data[:1000]); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data[1000:]); err != nil {
			t.Fatal(err)
		}
		n, sha := w.Written()
		if n != int64(len(data)) || sha != sum(data) {
			t.Errorf("Written() = %d, %s, want %d, %s", n, sha, len(data), sum(data))
		}
		before := time.Now().Add(-2 * time.Second)
		if err := w.Commit(ctx); err != nil {
			t.Fatalf("Commit(%q): %v", key, err)
		}
		wantContent(t, ctx, s, key, data)
		info, err := s.Stat(ctx, key)
		if err != nil {
			t.Fatalf("Stat(%q): %v", key, err)
		}
		if info.Size != int64(len(data)) || info.ModTime.Before(before) {
			t.Errorf("Stat(%q) = %+v, want size %d and a ModTime after %v", key, info, len(data), before)
		}
		r, err := s.Open(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if r.Size() != int64(len(data)) || !r.ModTime().Equal(info.ModTime) {
			t.Errorf("Reader Size, ModTime = %d, %v, want %d, %v", r.Size(), r.ModTime(), len(data), info.ModTime)
		}
		r.Close()
	}
}

func testNothingBeforeCommit(t *testing.T, s blob.Storage) {
	ctx := testCtx(t)
	w, err := s.Create(ctx, "k/new")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("new bytes"))
	wantMissing(t, ctx, s, "k/new")
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wantContent(t, ctx, s, "k/new", []byte("new bytes"))

	// An uncommitted overwrite leaves the old version in place.
	w, err = s.Create(ctx, "k/new")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("newer"))
	wantContent(t, ctx, s, "k/new", []byte("new bytes"))
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wantContent(t, ctx, s, "k/new", []byte("newer"))
}

func testAbort(t *testing.T, s blob.Storage) {
	ctx := testCtx(t)
	w, err := s.Create(ctx, "aborted/blob")
	if err != nil {
		t.Fatal(err)
	}
	w.Write(pattern(100_000, 3))
	if err := w.Abort(); err != nil {
		t.Fatalf("Abort: %v", err)
	}
	wantMissing(t, ctx, s, "aborted/blob")

	// Aborting an overwrite keeps the old version.
	put(t, ctx, s, "kept", []byte("old"))
	w, err = s.Create(ctx, "kept")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("discarded"))
	if err := w.Abort(); err != nil {
		t.Fatalf("Abort: %v", err)
	}
	wantContent(t, ctx, s, "kept", []byte("old"))
}

func testOnce(t *testing.T, s blob.Storage) {
	ctx := testCtx(t)
	w, err := s.Create(ctx, "once")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("v1"))
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Errorf("Abort after Commit = %v, want nil", err)
	}
	if err := w.Commit(ctx); err == nil {
		t.Errorf("second Commit = nil, want an error")
	}
	wantContent(t, ctx, s, "once", []byte("v1"))

	w, err = s.Create(ctx, "never")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("v1"))
	w.Abort()
	if err := w.Commit(ctx); err == nil {
		t.Errorf("Commit after Abort = nil, want an error")
	}
	if _, err := w.Write([]byte("more")); err == nil {
		t.Errorf("Write after Abort = nil, want an error")
	}
	wantMissing(t, ctx, s, "never")
}

func testCancelled(t *testing.T, s blob.Storage) {
	ctx := testCtx(t)
	cctx, cancel := context.WithCancel(ctx)
	w, err := s.Create(cctx, "cancelled/blob")
	if err != nil {
		t.Fatal(err)
	}
	w.Write(pattern(50_000, 5))
	cancel()
	if err := w.Commit(ctx); err == nil {
		t.Errorf("Commit after the Create context was cancelled = nil, want an error")
	}
	wantMissing(t, ctx, s, "cancelled/blob")
	w.Abort()

	if w, err := s.Create(cctx, "cancelled/early"); err == nil {
		w.Abort()
		t.Errorf("Create with a cancelled context = nil error, want one")
	}
	wantMissing(t, ctx, s, "cancelled/early")

	// Cancelling the Commit context before Commit discards the bytes too.
	w, err = s.Create(ctx, "cancelled/commit")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("x"))
	done, cancel2 := context.WithCancel(ctx)
	cancel2()
	if err := w.Commit(done); err == nil {
		t.Errorf("Commit with a cancelled context = nil, want an error")
	}
	w.Abort()
	wantMissing(t, ctx, s, "cancelled/commit")
}

func testOverwriteAtomic(t *testing.T, s blob.Storage) {
	ctx := testCtx(t)
	versions := [][]byte{pattern(200_000, 'a'), pattern(333_333, 'b'), {}, pattern(1, 'c')}
	valid := map[string]bool{}
	for _, v := range versions {
		valid[sum(v)] = true
	}
	put(t, ctx, s, "hot", versions[0])
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []string
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				got, err := read(ctx, s, "hot")
				if err == nil && !valid[sum(got)] {
					err = fmt.Errorf("read %d bytes that are no committed version", len(got))
				}
				if err != nil {
					mu.Lock()
					bad = append(bad, err.Error())
					mu.Unlock()
					return
				}
			}
		})
	}
	for i := range 40 {
		put(t, ctx, s, "hot", versions[(i+1)%len(versions)])
	}
	close(stop)
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("a reader saw a torn or missing blob during overwrites: %v", bad)
	}
}

func testConcurrentWriters(t *testing.T, s blob.Storage) {
	ctx := testCtx(t)
	const writers = 8
	valid := map[string]bool{}
	datas := make([][]byte, writers)
	for i := range datas {
		datas[i] = pattern(64<<10+i*101, byte(i*17))
		valid[sum(datas[i])] = true
	}
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Go(func() { errs[i] = write(ctx, s, "contended/key", datas[i]) })
	}
	wg.Wait()
	committed := 0
	for _, err := range errs {
		if err == nil {
			committed++
		}
	}
	if committed == 0 {
		t.Fatalf("no concurrent writer committed: %v", errs)
	}
	got, err := read(ctx, s, "contended/key")
	if err != nil {
		t.Fatal(err)
	}
	if !valid[sum(got)] {
		t.Fatalf("after concurrent writers the blob is %d bytes that no writer wrote", len(got))
	}
}

func testRemove(t *testing.T, s blob.Storage) {
	ctx := testCtx(t)
	if err := s.Remove(ctx, "never/there"); err != nil {
		t.Errorf("Remove(missing) = %v, want nil", err)
	}
	put(t, ctx, s, "gone/soon", []byte("bytes"))
	put(t, ctx, s, "gone/sibling", []byte("stays"))
	for i := range 2 {
		if err := s.Remove(ctx, "gone/soon"); err != nil {
			t.Errorf("Remove #%d = %v, want nil", i+1, err)
		}
	}
	wantMissing(t, ctx, s, "gone/soon")
	wantContent(t, ctx, s, "gone/sibling", []byte("stays"))
	put(t, ctx, s, "gone/soon", []byte("again"))
	wantContent(t, ctx, s, "gone/soon", []byte("again"))
}

func testHostileKeys(t *testing.T, s blob.Storage) {
	ctx := testCtx(t)
	for _, key := range HostileKeys() {
		if _, err := s.Open(ctx, key); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Open(%q) error = %v, want ErrInvalidKey", key, err)
		}
		if _, err := s.Stat(ctx, key); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Stat(%q) error = %v, want ErrInvalidKey", key, err)
		}
		w, err := s.Create(ctx, key)
		if !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Create(%q) error = %v, want ErrInvalidKey", key, err)
		}
		if err == nil {
			w.Abort()
		}
		if err := s.Remove(ctx, key); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Remove(%q) error = %v, want ErrInvalidKey", key, err)
		}
	}
}

func testEmpty(t *testing.T, s blob.Storage) {
	ctx := testCtx(t)
	w, err := s.Create(ctx, "empty")
	if err != nil {
		t.Fatal(err)
	}
	if n, sha := w.Written(); n != 0 || sha != sum(nil) {
		t.Errorf("Written() = %d, %s, want 0, %s", n, sha, sum(nil))
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wantContent(t, ctx, s, "empty", []byte{})
	if info, err := s.Stat(ctx, "empty"); err != nil || info.Size != 0 {
		t.Errorf("Stat(empty) = %+v, %v, want size 0", info, err)
	}
}

func testSeek(t *testing.T, s blob.Storage) {
	ctx := testCtx(t)
	data := pattern(10_000, 9)
	put(t, ctx, s, "seek", data)
	r, err := s.Open(ctx, "seek")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if off, err := r.Seek(1234, io.SeekStart); err != nil || off != 1234 {
		t.Fatalf("Seek(1234) = %d, %v", off, err)
	}
	got := make([]byte, 100)
	if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, data[1234:1334]) {
		t.Errorf("read after Seek = %v, %v, want bytes 1234-1333", got[:8], err)
	}
	if end, err := r.Seek(0, io.SeekEnd); err != nil || end != int64(len(data)) {
		t.Errorf("Seek(0, End) = %d, %v, want %d", end, err, len(data))
	}
}
