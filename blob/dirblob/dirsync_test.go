package dirblob

import (
	"context"
	"testing"

	"github.com/geoframework/geo/blob/driver"
)

// TestDirWriterSyncedFlag guards Commit's durability after an early Sync:
// Commit skips the file fsync only while nothing was written since the
// Sync, so every write must clear the flag (an observable crash is not
// available here; the flag is what decides).
func TestDirWriterSyncedFlag(t *testing.T) {
	ctx := context.Background()
	d, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	w, err := d.NewWriter(ctx, "k", &driver.WriterOptions{Size: -1})
	if err != nil {
		t.Fatal(err)
	}
	dw := w.(*dirWriter)
	w.Write([]byte("a"))
	if dw.synced {
		t.Fatalf("synced before any Sync")
	}
	if err := dw.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !dw.synced {
		t.Fatalf("not synced after Sync")
	}
	w.Write(nil) // an empty write changes nothing
	if !dw.synced {
		t.Errorf("an empty write cleared the synced flag")
	}
	w.Write([]byte("b"))
	if dw.synced {
		t.Errorf("a write after Sync left the synced flag set: Commit would skip the fsync of new bytes")
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}
