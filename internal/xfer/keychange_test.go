package xfer_test

import (
	"context"
	"errors"
	"testing"

	"github.com/geoframework/geo/internal/xfer"
	"github.com/geoframework/geo/replicator/transfer"
)

// A record updated between the secondary's key lookup and the transfer is
// served from its new key; the secondary must not store those bytes under
// the old key (found by geochaos flaky-primary: a row synced at key v1 held
// v2's bytes until the update's event arrived).
func TestFetchRejectsBytesServedFromAnotherKey(t *testing.T) {
	p := newPrimary(t)
	p.add(7, []byte("version two"))
	p.mu.Lock()
	p.wrap = func(s xfer.Source) xfer.Source { s.Key = "records/7-v2"; return s }
	p.mu.Unlock()
	dst := newDir(t)
	d := p.downloader(t, nil)
	_, err := d.Fetch(context.Background(), testReplicable, 7, dst, "records/7-v1", "")
	if !errors.Is(err, transfer.ErrKeyChanged) {
		t.Fatalf("Fetch of a record served from another key: err = %v, want ErrKeyChanged", err)
	}
	wantNothingAt(t, dst, "records/7-v1")

	p.mu.Lock()
	p.wrap = func(s xfer.Source) xfer.Source { s.Key = "records/7-v1"; return s }
	p.mu.Unlock()
	res, err := d.Fetch(context.Background(), testReplicable, 7, dst, "records/7-v1", "")
	if err != nil {
		t.Fatalf("Fetch with the key it asked for: %v", err)
	}
	res.Writer.Abort()
}
