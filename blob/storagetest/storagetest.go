// Package storagetest is the conformance suite every storage backend (a
// blob/driver.Bucket) must pass, run through the portable blob.Bucket as
// geo uses it. A backend's test wires it in a few lines:
//
//	func TestConformance(t *testing.T) {
//		storagetest.RunConformanceTests(t, func(t *testing.T) driver.Bucket {
//			d, err := dirblob.New(t.TempDir())
//			if err != nil {
//				t.Fatal(err)
//			}
//			return d // the suite closes it
//		})
//	}
//
// Each subtest is named after the clause of the driver contract it checks
// and gets a fresh, empty backend from newDriver ([RunConformanceTests]).
// Run it with -race. Optional interfaces ([driver.Syncer],
// [driver.BatchDeleter]) are checked when
// the backend implements them. Backend-specific promises (for example that
// dirblob leaves no temporary file behind) belong in the backend's own
// tests, for instance in a t.Cleanup registered by newDriver.
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
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/blob/driver"
	"github.com/geoframework/geo/strategy"
)

// HostileKeys returns keys the portable blob.Bucket rejects with
// blob.ErrInvalidKey before they reach a backend (a fresh slice on each
// call).
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
		string(bytes.Repeat([]byte("k"), strategy.KeyLenMax+1)),
	}
}

// RunConformanceTests runs the driver contract against the backends that
// newDriver returns, one fresh backend per subtest, each through
// blob.NewBucket (closed when the subtest ends). newDriver may register
// other cleanups with t.Cleanup.
func RunConformanceTests(t *testing.T, newDriver func(t *testing.T) driver.Bucket) {
	t.Helper()
	newStorage := func(t *testing.T) *blob.Bucket {
		b := blob.NewBucket(newDriver(t))
		t.Cleanup(func() { b.Close() })
		return b
	}
	t.Run("OpenMissingIsErrNotExist", func(t *testing.T) { testOpenMissing(t, newStorage(t)) })
	t.Run("CommitMakesExactBytesVisible", func(t *testing.T) { testCommitVisible(t, newStorage(t)) })
	t.Run("NothingVisibleBeforeCommit", func(t *testing.T) { testNothingBeforeCommit(t, newStorage(t)) })
	t.Run("AbortLeavesNothing", func(t *testing.T) { testAbort(t, newStorage(t)) })
	t.Run("CommitOrAbortExactlyOnce", func(t *testing.T) { testOnce(t, newStorage(t)) })
	t.Run("CancelledContextLeavesNothing", func(t *testing.T) { testCancelled(t, newStorage(t)) })
	t.Run("FailedCommitLeavesOldOrWholeNew", func(t *testing.T) { testInterruptedCommit(t, newStorage(t)) })
	t.Run("OverwriteIsAtomic", func(t *testing.T) { testOverwriteAtomic(t, newStorage(t)) })
	t.Run("ConcurrentWritersLeaveOneCompleteVersion", func(t *testing.T) { testConcurrentWriters(t, newStorage(t)) })
	t.Run("RemoveIsIdempotent", func(t *testing.T) { testRemove(t, newStorage(t)) })
	t.Run("HostileKeysAreErrInvalidKey", func(t *testing.T) { testHostileKeys(t, newStorage(t)) })
	t.Run("EmptyBlob", func(t *testing.T) { testEmpty(t, newStorage(t)) })
	t.Run("ReaderSeeks", func(t *testing.T) { testSeek(t, newStorage(t)) })
	t.Run("SyncerKeepsTheCommitContract", func(t *testing.T) { testSyncer(t, newStorage(t)) })
	t.Run("ChecksumMismatchCommitsNothing", func(t *testing.T) { testChecksumMismatch(t, newStorage(t)) })
	t.Run("ListInByteOrderAfterAKey", func(t *testing.T) { testList(t, newStorage(t)) })
	t.Run("BatchRemoval", func(t *testing.T) { testBatchRemoval(t, newStorage(t)) })
	t.Run("RangeReads", func(t *testing.T) { testRange(t, newStorage(t)) })
}

// testSyncer checks writers that implement driver.Syncer (it passes for
// those that do not): Sync publishes nothing, bytes written after a Sync
// are committed with the rest, and Sync after Commit or Abort fails.
func testSyncer(t *testing.T, s *blob.Bucket) {
	ctx := testCtx(t)
	w, err := s.Create(ctx, "synced/blob", nil)
	if err != nil {
		t.Fatal(err)
	}
	sy := w
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

	w, err = s.Create(ctx, "synced/aborted", nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(first)
	if err := w.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if err := w.Abort(); err != nil {
		t.Fatalf("Abort: %v", err)
	}
	wantMissing(t, ctx, s, "synced/aborted")
	if err := w.Sync(ctx); err == nil {
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
func put(t *testing.T, ctx context.Context, s *blob.Bucket, key string, data []byte) {
	t.Helper()
	if err := write(ctx, s, key, data); err != nil {
		t.Fatalf("put %q: %v", key, err)
	}
}

func write(ctx context.Context, s *blob.Bucket, key string, data []byte) error {
	w, err := s.Create(ctx, key, nil)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 7919)
		if _, err := w.Write(rest[:n]); err != nil {
			w.Abort()
			return fmt.Errorf("write: %w", err)
		}
		rest = rest[n:]
	}
	if err := w.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func read(ctx context.Context, s *blob.Bucket, key string) ([]byte, error) {
	r, err := s.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

func wantMissing(t *testing.T, ctx context.Context, s *blob.Bucket, key string) {
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

func wantContent(t *testing.T, ctx context.Context, s *blob.Bucket, key string, want []byte) {
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

func testOpenMissing(t *testing.T, s *blob.Bucket) {
	ctx := testCtx(t)
	wantMissing(t, ctx, s, "missing")
	wantMissing(t, ctx, s, "no/such/dir/blob")
	put(t, ctx, s, "file", []byte("x"))
	wantMissing(t, ctx, s, "file/below")
}

func testCommitVisible(t *testing.T, s *blob.Bucket) {
	ctx := testCtx(t)
	data := pattern(300_001, 1)
	for _, key := range []string{"top", "a/b/c/nested.bin", "a/b/sibling"} {
		w, err := s.Create(ctx, key, nil)
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

func testNothingBeforeCommit(t *testing.T, s *blob.Bucket) {
	ctx := testCtx(t)
	w, err := s.Create(ctx, "k/new", nil)
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
	w, err = s.Create(ctx, "k/new", nil)
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

func testAbort(t *testing.T, s *blob.Bucket) {
	ctx := testCtx(t)
	w, err := s.Create(ctx, "aborted/blob", nil)
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
	w, err = s.Create(ctx, "kept", nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("discarded"))
	if err := w.Abort(); err != nil {
		t.Fatalf("Abort: %v", err)
	}
	wantContent(t, ctx, s, "kept", []byte("old"))
}

func testOnce(t *testing.T, s *blob.Bucket) {
	ctx := testCtx(t)
	w, err := s.Create(ctx, "once", nil)
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

	w, err = s.Create(ctx, "never", nil)
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

func testCancelled(t *testing.T, s *blob.Bucket) {
	ctx := testCtx(t)
	cctx, cancel := context.WithCancel(ctx)
	w, err := s.Create(cctx, "cancelled/blob", nil)
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

	if w, err := s.Create(cctx, "cancelled/early", nil); err == nil {
		w.Abort()
		t.Errorf("Create with a cancelled context = nil error, want one")
	}
	wantMissing(t, ctx, s, "cancelled/early")

	// Cancelling the Commit context before Commit discards the bytes too.
	w, err = s.Create(ctx, "cancelled/commit", nil)
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

// testInterruptedCommit: a Commit whose context ends while it runs may
// fail, and then the key holds the old version or the whole new one (an
// object store may have published it although the answer was lost),
// never a mix or a part; a new key holds nothing or the whole object. The
// context ends at several moments, from before Commit looks at it to
// after it is done, so each backend meets the cases its timing allows;
// any outcome but a partial one passes.
func testInterruptedCommit(t *testing.T, s *blob.Bucket) {
	ctx := testCtx(t)
	const key, fresh = "interrupted/blob", "interrupted/new-%d"
	cur := pattern(300_000, 'o')
	put(t, ctx, s, key, cur)
	delays := []time.Duration{0, time.Microsecond, 100 * time.Microsecond, time.Millisecond, 3 * time.Millisecond, 10 * time.Millisecond, 30 * time.Millisecond}
	for i, d := range delays {
		for _, k := range []string{key, fmt.Sprintf(fresh, i)} {
			data := pattern(300_000+i*1000, byte(i+1))
			w, err := s.Create(ctx, k, &blob.WriteOptions{SHA256: sum(data), Size: int64(len(data))})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(data); err != nil {
				t.Fatal(err)
			}
			cctx, cancel := context.WithCancel(ctx)
			stop := time.AfterFunc(d, cancel)
			cerr := w.Commit(cctx)
			stop.Stop()
			cancel()
			w.Abort()
			got, rerr := read(ctx, s, k)
			switch {
			case cerr == nil && (rerr != nil || !bytes.Equal(got, data)):
				t.Fatalf("Commit(%q) = nil with its context ending after %v, then read %d bytes (%v), want the %d bytes written", k, d, len(got), rerr, len(data))
			case k == key && rerr != nil:
				t.Fatalf("Commit(%q) = %v with its context ending after %v: reading the key then = %v, want the old version or the whole new one", k, cerr, d, rerr)
			case rerr != nil && !errors.Is(rerr, blob.ErrNotExist):
				t.Fatalf("read %q after Commit = %v: %v", k, cerr, rerr)
			case rerr == nil && !bytes.Equal(got, data) && (k != key || !bytes.Equal(got, cur)):
				t.Fatalf("Commit(%q) = %v with its context ending after %v: the key holds %d bytes (sha %.12s), want the old version or the whole new one, never a part or a mix", k, cerr, d, len(got), sum(got))
			}
			if k == key && rerr == nil {
				cur = got
			}
		}
	}
}

func testOverwriteAtomic(t *testing.T, s *blob.Bucket) {
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

func testConcurrentWriters(t *testing.T, s *blob.Bucket) {
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

func testRemove(t *testing.T, s *blob.Bucket) {
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

func testHostileKeys(t *testing.T, s *blob.Bucket) {
	ctx := testCtx(t)
	for _, key := range HostileKeys() {
		if _, err := s.Open(ctx, key); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Open(%q) error = %v, want ErrInvalidKey", key, err)
		}
		if _, err := s.Stat(ctx, key); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Stat(%q) error = %v, want ErrInvalidKey", key, err)
		}
		w, err := s.Create(ctx, key, nil)
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

func testEmpty(t *testing.T, s *blob.Bucket) {
	ctx := testCtx(t)
	w, err := s.Create(ctx, "empty", nil)
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

func testSeek(t *testing.T, s *blob.Bucket) {
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

// testChecksumMismatch: a write created with the checksum its bytes must
// have commits nothing when they differ (blob.ErrChecksumMismatch), and
// the old version stays; with the right checksum it commits.
func testChecksumMismatch(t *testing.T, s *blob.Bucket) {
	ctx := testCtx(t)
	old, data := pattern(3000, 1), pattern(5000, 2)
	put(t, ctx, s, "sum/blob", old)
	w, err := s.Create(ctx, "sum/blob", &blob.WriteOptions{SHA256: sum(pattern(5000, 3)), Size: int64(len(data))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); !errors.Is(err, blob.ErrChecksumMismatch) {
		t.Fatalf("Commit of bytes that differ from WriteOptions.SHA256 = %v, want an error matching ErrChecksumMismatch", err)
	}
	wantContent(t, ctx, s, "sum/blob", old)
	w, err = s.Create(ctx, "sum/blob", &blob.WriteOptions{SHA256: sum(data), Size: int64(len(data))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatalf("Commit with the right checksum: %v", err)
	}
	wantContent(t, ctx, s, "sum/blob", data)
}

// testList: Keys yields every committed key, in byte order of whole keys
// (as PostgreSQL's COLLATE "C" orders them), starting after any key,
// without uncommitted writes; a consumer may stop early.
func testList(t *testing.T, s *blob.Bucket) {
	ctx := testCtx(t)
	keys := []string{"a/c", "a-b", "a/b/z", "a.x", "b", "a/b-", "lfs/bb/63/bb63", "lfs/bb/6/x", "Z", "a/b/y", "é/x"}
	for _, k := range keys {
		put(t, ctx, s, k, []byte(k))
	}
	pending, err := s.Create(ctx, "pending/key", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pending.Abort()
	pending.Write([]byte("x"))
	want := append([]string(nil), keys...)
	sort.Strings(want) // Go compares strings bytewise
	list := func(after string) []string {
		got := []string{}
		for k, err := range s.Keys(ctx, after) {
			if err != nil {
				t.Fatalf("Keys(%q): %v", after, err)
			}
			got = append(got, k)
		}
		return got
	}
	if got := list(""); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Keys(\"\") = %q, want %q (byte order, no uncommitted key)", got, want)
	}
	for i, after := range want {
		if got := list(after); fmt.Sprint(got) != fmt.Sprint(want[i+1:]) {
			t.Fatalf("Keys(%q) = %q, want %q", after, got, want[i+1:])
		}
	}
	for k := range s.Keys(ctx, "") {
		if k != want[0] {
			t.Fatalf("first key = %q, want %q", k, want[0])
		}
		break
	}
}

// testBatchRemoval: RemoveBatch removes every key given (missing ones
// skipped) and leaves the others; SyncRemoved then succeeds.
func testBatchRemoval(t *testing.T, s *blob.Bucket) {
	ctx := testCtx(t)
	var gone []string
	for i := range 20 {
		k := fmt.Sprintf("batch/%d/%d", i%3, i)
		put(t, ctx, s, k, pattern(100, byte(i)))
		if i%2 == 0 {
			gone = append(gone, k)
		}
	}
	gone = append(gone, "batch/never/there")
	if err := s.RemoveBatch(ctx, gone); err != nil {
		t.Fatalf("RemoveBatch: %v", err)
	}
	if err := s.SyncRemoved(ctx, gone); err != nil {
		t.Fatalf("SyncRemoved: %v", err)
	}
	for i := range 20 {
		k := fmt.Sprintf("batch/%d/%d", i%3, i)
		if i%2 == 0 {
			wantMissing(t, ctx, s, k)
		} else {
			wantContent(t, ctx, s, k, pattern(100, byte(i)))
		}
	}
}

// testRange: a Reader positioned by Seek reads from there, as
// http.ServeContent needs for Range requests, and WriteTo copies the rest.
func testRange(t *testing.T, s *blob.Bucket) {
	ctx := testCtx(t)
	data := pattern(200_000, 9)
	put(t, ctx, s, "range/blob", data)
	r, err := s.Open(ctx, "range/blob")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Seek(150_000, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if n, err := r.WriteTo(&buf); err != nil || n != 50_000 || !bytes.Equal(buf.Bytes(), data[150_000:]) {
		t.Fatalf("WriteTo after Seek(150000) = %d, %v, want the last 50,000 bytes", n, err)
	}
	if _, err := r.Seek(10, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 10)
	if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, data[10:20]) {
		t.Fatalf("read after Seek(10) = %v, %v", got, err)
	}
	if st, err := s.Stat(ctx, "range/blob"); err != nil || st.Size != int64(len(data)) {
		t.Fatalf("Stat = %+v, %v, want size %d", st, err, len(data))
	}
}
