package dirblob_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/blob/dirblob"
	"github.com/geoframework/geo/blob/driver"
	"github.com/geoframework/geo/blob/storagetest"
)

// newDir returns a Bucket over a Dir in a fresh directory and checks, when
// the test ends, that no temporary file was left behind.
func newDir(t testing.TB) *blob.Bucket {
	t.Helper()
	b := open(t, t.TempDir())
	root := b.Driver().(*dirblob.Dir).Root()
	t.Cleanup(func() {
		if files := tempFiles(t, root); len(files) > 0 {
			t.Errorf("temporary files left behind: %v", files)
		}
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// open opens root as a Bucket or fails the test.
func open(t testing.TB, root string) *blob.Bucket {
	t.Helper()
	b, err := dirblob.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// cleanTemp runs the Dir's CleanTemp under b.
func cleanTemp(ctx context.Context, b *blob.Bucket) (int, error) {
	return b.Driver().(*dirblob.Dir).CleanTemp(ctx)
}

// tempFiles lists the files under root/.geo-tmp other than lock files.
func tempFiles(t testing.TB, root string) []string {
	t.Helper()
	var files []string
	filepath.WalkDir(filepath.Join(root, ".geo-tmp"), func(p string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() && e.Name() != "lock" {
			files = append(files, p)
		}
		return nil
	})
	return files
}

func TestConformance(t *testing.T) {
	storagetest.RunConformanceTests(t, func(t *testing.T) driver.Bucket {
		d, err := dirblob.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		root := d.Root()
		t.Cleanup(func() { // after the suite's Close
			if files := tempFiles(t, root); len(files) > 0 {
				t.Errorf("temporary files left behind: %v", files)
			}
		})
		return d
	})
}

// TestReservedKeysRefused: keys under the Dir's temporary directory pass
// strategy.ValidateKey but are the Dir's own: refused, as ErrInvalidKey.
func TestReservedKeysRefused(t *testing.T) {
	b := newDir(t)
	ctx := t.Context()
	for _, key := range []string{".geo-tmp", ".geo-tmp/x", ".geo-tmpx/y"} {
		if w, err := b.Create(ctx, key, nil); !errors.Is(err, blob.ErrInvalidKey) {
			if err == nil {
				w.Abort()
			}
			t.Errorf("Create(%q) = %v, want ErrInvalidKey", key, err)
		}
		if _, err := b.Open(ctx, key); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Open(%q) = %v, want ErrInvalidKey", key, err)
		}
		if err := b.Remove(ctx, key); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Remove(%q) = %v, want ErrInvalidKey", key, err)
		}
	}
}

func TestDirCleanTempRemovesDeadOwnersOnly(t *testing.T) {
	root := t.TempDir()
	live, err := dirblob.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	ctx := t.Context()
	w, err := live.Create(ctx, "in/flight", nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("still writing"))

	// A dead process's leftovers: an unlocked lock file, a directory with
	// no lock file at all, and a stray file.
	for _, p := range []string{".geo-tmp/dead1/lock", ".geo-tmp/dead1/w-1", ".geo-tmp/dead2/w-7", ".geo-tmp/stray"} {
		os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o700)
		if err := os.WriteFile(filepath.Join(root, p), []byte("junk"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	restarted, err := dirblob.Open(root) // runs CleanTemp
	if err != nil {
		t.Fatal(err)
	}
	defer restarted.Close()
	for _, p := range []string{".geo-tmp/dead1", ".geo-tmp/dead2", ".geo-tmp/stray"} {
		if _, err := os.Stat(filepath.Join(root, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after restart: %v, want removed", p, err)
		}
	}
	if n, err := cleanTemp(ctx, restarted); err != nil || n != 0 {
		t.Errorf("second CleanTemp = %d, %v, want 0, nil", n, err)
	}
	// The live Dir's in-flight write survived both cleanups.
	if err := w.Commit(ctx); err != nil {
		t.Fatalf("Commit of a live Dir's write after another Dir's CleanTemp: %v", err)
	}
	r, err := restarted.Open(ctx, "in/flight")
	if err != nil {
		t.Fatal(err)
	}
	r.Close()

	// Once the live Dir dies (here: closes), nothing of it remains.
	live.Close()
	cleanTemp(ctx, restarted)
	if files := tempFiles(t, root); len(files) > 0 {
		t.Errorf("temporary files after the owner went away: %v", files)
	}
	entries, _ := os.ReadDir(filepath.Join(root, ".geo-tmp"))
	if len(entries) != 1 {
		t.Errorf(".geo-tmp holds %d entries, want only the restarted Dir's own", len(entries))
	}
}

func TestDirHostileKeysTouchNothingOutsideRoot(t *testing.T) {
	parent := t.TempDir()
	root := filepath.Join(parent, "root")
	d, err := dirblob.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(root, "escape")); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	keys := append(storagetest.HostileKeys(), "../outside", "a/../../outside", "/"+parent+"/x")
	for _, key := range keys {
		if w, err := d.Create(ctx, key, nil); err == nil {
			w.Write([]byte("pwned"))
			w.Commit(ctx)
			t.Errorf("Create(%q) succeeded", key)
		}
		d.Remove(ctx, key)
	}
	// A symbolic link inside root that points outside does not lead out.
	if w, err := d.Create(ctx, "escape/pwned", nil); err == nil {
		w.Write([]byte("pwned"))
		if err := w.Commit(ctx); err == nil {
			t.Errorf("Commit through a symlink pointing outside root succeeded")
		}
	}
	if _, err := d.Open(ctx, "escape/anything"); err == nil {
		t.Errorf("Open through a symlink pointing outside root succeeded")
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 1 || entries[0].Name() != "root" {
		t.Errorf("parent of root holds %v, want only root", entries)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("symlink target outside root holds %v, want nothing", entries)
	}
	if files := tempFiles(t, root); len(files) > 0 {
		t.Errorf("temporary files left behind: %v", files)
	}
}

func TestDirCloseRemovesUncommitted(t *testing.T) {
	root := t.TempDir()
	d, err := dirblob.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	w, err := d.Create(context.Background(), "k", nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("abandoned"))
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if files := tempFiles(t, root); len(files) > 0 {
		t.Errorf("temporary files after Close: %v", files)
	}
}

func TestDirWriterSyncThenCommit(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	w, err := d.Create(ctx, "a/k", nil)
	if err != nil {
		t.Fatal(err)
	}
	s := w
	if _, err := w.Write([]byte("ab")); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	wantNothingAt(t, d, "a/k")
	// Bytes written after a Sync are part of the commit.
	if _, err := w.Write([]byte("cd")); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if got := string(readAll(t, d, "a/k")); got != "abcd" {
		t.Errorf("committed %q, want %q", got, "abcd")
	}
	if err := s.Sync(ctx); err == nil {
		t.Errorf("Sync after Commit = nil, want an error")
	}

	// A cancelled context fails the Sync; the writer is then aborted and
	// leaves nothing (newDir checks the temporary directory).
	w, err = d.Create(ctx, "b", nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("x"))
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := w.Sync(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Sync with a cancelled context = %v, want context.Canceled", err)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(ctx); err == nil {
		t.Errorf("Sync after Abort = nil, want an error")
	}
	wantNothingAt(t, d, "b")
}

// TestDirCommitWhereTheDirectoryChanged: a key whose directory was removed
// since the last commit gets it back; a key below a file fails to commit
// and leaves no temporary file; the bytes land where the key says.
func TestDirCommitWhereTheDirectoryChanged(t *testing.T) {
	root := t.TempDir()
	d, err := dirblob.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := t.Context()
	put := func(key, data string) error {
		w, err := d.Create(ctx, key, nil)
		if err != nil {
			return err
		}
		if _, err := w.Write([]byte(data)); err != nil {
			return err
		}
		return w.Commit(ctx)
	}
	if err := put("a/b/1", "one"); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(root, "a")); err != nil {
		t.Fatal(err)
	}
	if err := put("a/b/2", "two"); err != nil {
		t.Fatalf("commit after its directory was removed: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(root, "a", "b", "2")); err != nil || string(got) != "two" {
		t.Fatalf("a/b/2 = %q, %v; want \"two\"", got, err)
	}
	if err := put("a/b/2/below", "x"); err == nil {
		t.Fatal("commit of a key below a file succeeded")
	}
	if got, err := os.ReadFile(filepath.Join(root, "a", "b", "2")); err != nil || string(got) != "two" {
		t.Fatalf("a/b/2 after the failed commit = %q, %v; want \"two\"", got, err)
	}
	if files := tempFiles(t, root); len(files) > 0 {
		t.Errorf("temporary files left behind: %v", files)
	}
}

// wantNothingAt fails the test when a blob is stored at key.
func wantNothingAt(t *testing.T, b *blob.Bucket, key string) {
	t.Helper()
	if _, err := b.Stat(t.Context(), key); !errors.Is(err, blob.ErrNotExist) {
		t.Errorf("Stat(%q) = %v, want ErrNotExist", key, err)
	}
}

// readAll reads the blob at key.
func readAll(t *testing.T, b *blob.Bucket, key string) []byte {
	t.Helper()
	r, err := b.Open(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
