package cloudblob_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"gocloud.dev/blob/fileblob"
	"gocloud.dev/blob/memblob"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/blob/cloudblob"
	"github.com/geoframework/geo/blob/driver"
	"github.com/geoframework/geo/blob/storagetest"
)

func TestConformanceMem(t *testing.T) {
	storagetest.RunConformanceTests(t, func(t *testing.T) driver.Bucket {
		return cloudblob.New(memblob.OpenBucket(nil))
	})
}

// TestConformanceFile opens fileblob by URL, as geo does: OpenBucket's
// default metadata=skip is what keeps overwrites atomic for readers.
func TestConformanceFile(t *testing.T) {
	storagetest.RunConformanceTests(t, func(t *testing.T) driver.Bucket {
		return openURL(t, "file://"+t.TempDir()).Driver()
	})
}

func TestOddKeysMem(t *testing.T) {
	testOddKeys(t, openURL(t, "mem://"))
}

func TestOddKeysFile(t *testing.T) {
	testOddKeys(t, openURL(t, "file://"+t.TempDir()))
}

// TestListOutOfOrderFails: a service that lists keys out of byte order
// (fileblob's directory walk, unsorted, visits "a/b/c" and "a/b/d"
// before "a/b-", and swaps only the last two)
// makes List fail with ErrListOrder instead of yielding them so; sorted,
// as New sets it for fileblob, the listing is right.
func TestListOutOfOrderFails(t *testing.T) {
	gb, err := fileblob.OpenBucket(t.TempDir(), &fileblob.Options{Metadata: fileblob.MetadataDontWrite})
	if err != nil {
		t.Fatal(err)
	}
	d := cloudblob.New(gb)
	bk := blob.NewBucket(d)
	defer bk.Close()
	put(t, bk, "a/b-", []byte("1"))
	put(t, bk, "a/b/c", []byte("2"))
	put(t, bk, "a/b/d", []byte("3"))
	var got []string
	for k, err := range bk.Keys(t.Context(), "") {
		if err != nil {
			t.Fatalf("Keys (sorted): %v", err)
		}
		got = append(got, k)
	}
	if len(got) != 3 || got[0] != "a/b-" || got[1] != "a/b/c" || got[2] != "a/b/d" {
		t.Fatalf("Keys (sorted) = %q, want [a/b- a/b/c a/b/d]", got)
	}
	cloudblob.SetSortList(d, false)
	var lerr error
	for _, err := range bk.Keys(t.Context(), "") {
		if err != nil {
			lerr = err
		}
	}
	if !errors.Is(lerr, cloudblob.ErrListOrder) {
		t.Fatalf("Keys over an out-of-order listing ended with %v, want ErrListOrder", lerr)
	}
}

// openURL opens urlstr with cloudblob.OpenBucket, closed when the test ends.
func openURL(t *testing.T, urlstr string) *blob.Bucket {
	t.Helper()
	bk, err := cloudblob.OpenBucket(t.Context(), urlstr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bk.Close() })
	return bk
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i%251)
	}
	return b
}

func put(t *testing.T, bk *blob.Bucket, key string, data []byte) {
	t.Helper()
	w, err := bk.Create(t.Context(), key, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Commit(t.Context()); err != nil {
		t.Fatalf("Commit(%q): %v", key, err)
	}
}

// oddKeys pass strategy.ValidateKey and must be stored as themselves, or
// fail cleanly.
func oddKeys() []string {
	long := strings.Repeat(strings.Repeat("l", 200)+"/", 6)
	return []string{
		"with space", "plus+sign", "percent%20", "query?x=1", "hash#frag", "amp&eq=", "semi;colon",
		"quote\"s", "apos'", "<angle>", "star*", "colon:x", "pipe|", "caret^", "back`tick", "tilde~",
		"ünïcødé/ключ/键", "emoji😀", "trailing.", "a..", "...", ".hidden", "dir/.hidden", "-dash",
		long[:1023], // 1023 bytes, in segments of 200
		"a/b/c/d/e/f/g/h/i/j",
		".sgwtmp.not", "a/x.sgwtmp", // near versitygw's own directory name
	}
}

// refusedKeys pass strategy.ValidateKey but would be escaped by go-cloud:
// cloudblob refuses them as ErrInvalidKey.
func refusedKeys() []string {
	return []string{"ctl\x01char", "del\x7f", "tab\tkey", "new\nline", "a../b", "x__0x41__y", "bad\xffutf8",
		".sgwtmp", ".sgwtmp/x", "a/.sgwtmp/y", "a/.sgwtmp"}
}

// testOddKeys: each odd key is stored and read as itself, listed, and
// removed, or its write fails and leaves nothing visible; refused keys
// fail with ErrInvalidKey on every operation.
func testOddKeys(t *testing.T, bk *blob.Bucket) {
	ctx := t.Context()
	var stored []string
	for _, k := range oddKeys() {
		data := []byte("content of " + k)
		w, err := bk.Create(ctx, k, nil)
		if err == nil {
			w.Write(data)
			err = w.Commit(ctx)
		}
		if err != nil {
			t.Logf("key %q fails cleanly: %v", k, err)
			if _, serr := bk.Stat(ctx, k); serr == nil {
				t.Errorf("key %q: the write failed (%v) but Stat finds an object", k, err)
			}
			continue
		}
		r, err := bk.Open(ctx, k)
		if err != nil {
			t.Errorf("Open(%q) after Commit: %v", k, err)
			continue
		}
		got, _ := io.ReadAll(r)
		r.Close()
		if !bytes.Equal(got, data) {
			t.Errorf("read %q = %q, want %q", k, got, data)
		}
		stored = append(stored, k)
	}
	var listed []string
	for k, err := range bk.Keys(ctx, "") {
		if err != nil {
			t.Fatalf("Keys: %v", err)
		}
		listed = append(listed, k)
	}
	want := slices.Clone(stored)
	slices.Sort(want)
	if !slices.Equal(listed, want) {
		t.Errorf("Keys = %q, want %q (every key stored, as itself, in byte order)", listed, want)
	}
	// The "directory" of a stored key is no object.
	for _, dir := range []string{"a/b/c", "dir", "ünïcødé/ключ"} {
		if _, err := bk.Stat(ctx, dir); !errors.Is(err, blob.ErrNotExist) {
			t.Errorf("Stat(%q), a directory of stored keys, = %v, want ErrNotExist", dir, err)
		}
		if r, err := bk.Open(ctx, dir); !errors.Is(err, blob.ErrNotExist) {
			if err == nil {
				r.Close()
			}
			t.Errorf("Open(%q), a directory of stored keys, = %v, want ErrNotExist", dir, err)
		}
		if err := bk.Remove(ctx, dir); err != nil {
			t.Errorf("Remove(%q), a directory of stored keys, = %v, want nil", dir, err)
		}
	}
	for _, k := range stored {
		if err := bk.Remove(ctx, k); err != nil {
			t.Errorf("Remove(%q): %v", k, err)
		}
		if _, err := bk.Stat(ctx, k); !errors.Is(err, blob.ErrNotExist) {
			t.Errorf("Stat(%q) after Remove = %v, want ErrNotExist", k, err)
		}
	}
	for _, k := range refusedKeys() {
		if _, err := bk.Create(ctx, k, nil); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Create(%q) = %v, want ErrInvalidKey", k, err)
		}
		if _, err := bk.Stat(ctx, k); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Stat(%q) = %v, want ErrInvalidKey", k, err)
		}
		if _, err := bk.Open(ctx, k); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Open(%q) = %v, want ErrInvalidKey", k, err)
		}
		if err := bk.Remove(ctx, k); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Remove(%q) = %v, want ErrInvalidKey", k, err)
		}
	}
}
