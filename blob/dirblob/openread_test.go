package dirblob

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/geoframework/geo/blob/driver"
)

// TestOpenReadResolvesBeneathRoot runs Dir's reads both ways (openat2 where
// the kernel has it, and os.Root's walk, which a kernel without openat2
// gets): a key reached through a link inside root opens, a link leading
// outside root does not, a missing key is ErrNotExist, and commits and
// removals work through either.
func TestOpenReadResolvesBeneathRoot(t *testing.T) {
	for _, walk := range []bool{false, true} {
		name := "openat2"
		if walk {
			name = "os.Root walk"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			root := t.TempDir()
			d, err := New(root)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			d.noOpenat2.Store(walk)
			put := func(key, data string) {
				t.Helper()
				w, err := d.NewWriter(ctx, key, &driver.WriterOptions{Size: -1})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := w.Write([]byte(data)); err != nil {
					t.Fatal(err)
				}
				if err := w.Commit(ctx); err != nil {
					t.Fatal(err)
				}
			}
			get := func(key string) (string, error) {
				r, err := d.NewRangeReader(ctx, key, 0, -1)
				if err != nil {
					return "", err
				}
				defer r.Close()
				b, err := io.ReadAll(r)
				return string(b), err
			}
			put("real/dir/f", "inside")
			outside := t.TempDir()
			if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("outside"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("real", filepath.Join(root, "alias")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(outside, filepath.Join(root, "escape")); err != nil {
				t.Fatal(err)
			}
			if got, err := get("real/dir/f"); err != nil || got != "inside" {
				t.Errorf("Open(real/dir/f) = %q, %v; want \"inside\"", got, err)
			}
			if got, err := get("alias/dir/f"); err != nil || got != "inside" {
				t.Errorf("Open through a link inside root = %q, %v; want \"inside\"", got, err)
			}
			if got, err := get("escape/secret"); err == nil {
				t.Errorf("Open through a link leading outside root = %q, want an error", got)
			}
			if _, err := get("real/dir/missing"); d.ErrorCode(err) != driver.NotFound {
				t.Errorf("Open of a missing key: got %v, want ErrNotExist", err)
			}
			put("real/dir/f", "again")
			if got, err := get("real/dir/f"); err != nil || got != "again" {
				t.Errorf("Open after a second commit = %q, %v; want \"again\"", got, err)
			}
			if err := d.Delete(ctx, "real/dir/f"); err != nil {
				t.Fatal(err)
			}
			if _, err := get("real/dir/f"); d.ErrorCode(err) != driver.NotFound {
				t.Errorf("Open after Remove: got %v, want ErrNotExist", err)
			}
			if d.noOpenat2.Load() != walk {
				t.Errorf("noOpenat2 = %v after the run, want %v (this kernel has openat2)", d.noOpenat2.Load(), walk)
			}
		})
	}
}
