package dirblob_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/blob/dirblob"
)

// TestDirKeysInByteOrder: Dir.Keys yields every committed key, in the
// byte order of whole keys (the order of PostgreSQL's COLLATE "C" and of
// object stores' List), starting after a given key; it leaves out the
// temporary directory, uncommitted writes, directories, symbolic links
// and names that are not valid keys.
func TestDirKeysInByteOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDir(t)
	keys := []string{"a/c", "a-b", "a/b/z", "a.x", "b", "a/b-", "lfs/bb/63/bb63", "lfs/bb/6/x", "Z", "a/b/y"}
	for _, k := range keys {
		w, err := d.Create(ctx, k, nil)
		require.NoError(t, err)
		_, err = w.Write([]byte(k))
		require.NoError(t, err)
		require.NoError(t, w.Commit(ctx))
	}
	pending, err := d.Create(ctx, "pending/not/committed", nil)
	require.NoError(t, err)
	defer pending.Abort()
	require.NoError(t, os.MkdirAll(filepath.Join(d.Driver().(*dirblob.Dir).Root(), "empty", "dir"), 0o755))
	require.NoError(t, os.Symlink("/etc/passwd", filepath.Join(d.Driver().(*dirblob.Dir).Root(), "a", "link")))
	require.NoError(t, os.WriteFile(filepath.Join(d.Driver().(*dirblob.Dir).Root(), "a", "back\\slash"), nil, 0o644))

	list := func(after string) []string {
		got := []string{}
		for k, err := range d.Keys(ctx, after) {
			require.NoError(t, err)
			got = append(got, k)
		}
		return got
	}
	want := slices.Clone(keys)
	slices.Sort(want) // Go compares strings bytewise
	require.Equal(t, want, list(""))
	for i, after := range want {
		require.Equal(t, want[i+1:], list(after), "after %q", after)
	}
	var afterAY []string
	for _, k := range want {
		if k > "a.y" {
			afterAY = append(afterAY, k)
		}
	}
	require.Equal(t, afterAY, list("a.y"), "after a key that is not stored")

	// Stopping early is allowed.
	for k := range d.Keys(ctx, "") {
		require.Equal(t, want[0], k)
		break
	}
}
