package regstore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
)

// TestSettleSyncedBatchSameRowsAsSettleSynced settles the same results one
// by one and in a batch and expects identical rows: the batch is only a
// faster path, never a different state machine. If SettleSynced changes
// what it writes, this fails until settlebatch.go follows.
func TestSettleSyncedBatchSameRowsAsSettleSynced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, db, _ := newStore(t, regstore.Options{})
	results := []regstore.SyncedResult{
		{BlobKey: "k/1", Size: 9, Checksum: "AA", PrimaryChecksum: "aa"}, // verified
		{BlobKey: "k/2", Size: 0, Checksum: "bb"},                        // no primary checksum yet
		{BlobKey: "", Size: 3, Checksum: ""},                             // nothing recorded
	}
	mustMarkPending(t, s, "one", 1, 2, 3)
	mustMarkPending(t, s, "batch", 1, 2, 3)
	// Make the rows carry old failure and verification state to clear.
	if _, err := db.ExecContext(ctx, `UPDATE geo_registry SET retry_count = 4, last_sync_failure = 'x',
  missing_on_primary = true, verification_failure = 'y', checksum_mismatch = true, verification_retry_count = 2`); err != nil {
		t.Fatal(err)
	}
	one := mustClaim(t, s, "w", time.Minute, regstore.TypeLimit{Replicable: "one", Limit: 3})
	batch := mustClaim(t, s, "w", time.Minute, regstore.TypeLimit{Replicable: "batch", Limit: 3})
	byID := func(cs []regstore.Claim, id int64) regstore.Claim {
		for _, c := range cs {
			if c.ModelID == id {
				return c
			}
		}
		t.Fatalf("no claim for %d", id)
		return regstore.Claim{}
	}
	var items []regstore.SettleItem
	for i, r := range results {
		id := int64(i + 1)
		if ok, err := s.SettleSynced(ctx, "w", byID(one, id), r, nil); !ok || err != nil {
			t.Fatalf("SettleSynced(%d) = %v, %v", id, ok, err)
		}
		items = append(items, regstore.SettleItem{Claim: byID(batch, id), Result: r})
	}
	for i, o := range s.SettleSyncedBatch(ctx, "w", items) {
		if !o.Settled || o.Err != nil {
			t.Fatalf("SettleSyncedBatch item %d = %+v, want settled", i, o)
		}
	}
	for id := int64(1); id <= 3; id++ {
		a, b := mustGet(t, s, "one", id), mustGet(t, s, "batch", id)
		a.Replicable, a.Seq, a.CreatedAt = b.Replicable, b.Seq, b.CreatedAt
		if fmt.Sprintf("%+v", a) != fmt.Sprintf("%+v", b) {
			t.Errorf("row %d:\nSettleSynced      %+v\nSettleSyncedBatch %+v", id, a, b)
		}
	}
}

// TestSettleSyncedBatchOutcomes checks each item's outcome is independent:
// stale claims (R1, R2), a checksum mismatch (R6) and a failing publish
// leave their rows alone while the others settle.
func TestSettleSyncedBatchOutcomes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _ := newStore(t, regstore.Options{})
	mustMarkPending(t, s, "a", 1, 2, 3, 4, 5, 6)
	cs := mustClaim(t, s, "w", time.Minute, regstore.TypeLimit{Replicable: "a", Limit: 6})
	claim := map[int64]regstore.Claim{}
	for _, c := range cs {
		claim[c.ModelID] = c
	}
	mustMarkPending(t, s, "a", 2)                             // R1: updated while syncing
	if _, err := s.Delete(ctx, "a", 3, "", nil); err != nil { // R2: deleted while syncing
		t.Fatal(err)
	}
	errDisk := errors.New("disk full")
	var mu sync.Mutex
	publishedIDs := map[int64]bool{}
	publish := func(id int64, err error) func(context.Context) error {
		return func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			publishedIDs[id] = true
			return err
		}
	}
	ok := regstore.SyncedResult{BlobKey: "k", Checksum: "aa", PrimaryChecksum: "aa"}
	items := []regstore.SettleItem{
		{Claim: claim[6], Result: ok, Publish: publish(6, nil)},
		{Claim: claim[2], Result: ok, Publish: publish(2, nil)},
		{Claim: claim[3], Result: ok, Publish: publish(3, nil)},
		{Claim: claim[4], Result: regstore.SyncedResult{Checksum: "bb", PrimaryChecksum: "cc"}, Publish: publish(4, nil)},
		{Claim: claim[5], Result: ok, Publish: publish(5, errDisk)},
		{Claim: claim[1], Result: ok, Publish: publish(1, nil)},
		{Claim: claim[1], Result: ok}, // repeated
	}
	out := s.SettleSyncedBatch(ctx, "w", items)
	check := func(i int, settled bool, want error) {
		t.Helper()
		o := out[i]
		if o.Settled != settled || (want == nil) != (o.Err == nil) || (want != nil && !errors.Is(o.Err, want)) {
			t.Errorf("item %d (row %d) = %+v, want settled %v, error %v", i, items[i].Claim.ModelID, o, settled, want)
		}
	}
	check(0, true, nil)
	check(1, false, nil)
	check(2, false, nil)
	check(3, false, blob.ErrChecksumMismatch)
	check(4, false, errDisk)
	check(5, true, nil)
	if out[6].Err == nil || out[6].Settled {
		t.Errorf("repeated row = %+v, want an error", out[6])
	}
	if publishedIDs[2] || publishedIDs[3] || publishedIDs[4] {
		t.Errorf("published %v: stale or mismatched items must not be published", publishedIDs)
	}
	for id, want := range map[int64]registry.State{1: registry.StateSynced, 6: registry.StateSynced,
		2: registry.StatePending, 4: registry.StateStarted, 5: registry.StateStarted} {
		if r := mustGet(t, s, "a", id); r.State != want {
			t.Errorf("row %d state = %v, want %v", id, r.State, want)
		}
	}
	// The failed publish's row is still ours to fail (R4).
	if ok, err := s.SettleFailed(ctx, "w", claim[5], "disk full", false); !ok || err != nil {
		t.Errorf("SettleFailed after a failed publish = %v, %v; want true", ok, err)
	}
}

// TestR2SettleBatchRacingDelete races a batch settle with deletes of some
// of its rows: whichever wins, no deleted row leaves a row or a file.
func TestR2SettleBatchRacingDelete(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _ := newStore(t, regstore.Options{})
	dir := t.TempDir()
	const rounds, per = 30, 8
	next := int64(1)
	for round := 0; round < rounds; round++ {
		first := next
		mustMarkPending(t, s, "a", ids(first, first+per-1)...)
		next += per
		cs := mustClaim(t, s, "w", time.Minute, regstore.TypeLimit{Replicable: "a", Limit: per})
		path := func(id int64) string { return filepath.Join(dir, fmt.Sprint(id)) }
		var items []regstore.SettleItem
		for _, c := range cs {
			items = append(items, regstore.SettleItem{Claim: c, Result: regstore.SyncedResult{BlobKey: fmt.Sprint(c.ModelID)},
				Publish: func(context.Context) error {
					tmp := path(c.ModelID) + ".tmp"
					if err := os.WriteFile(tmp, []byte("bytes"), 0o644); err != nil {
						return err
					}
					return os.Rename(tmp, path(c.ModelID))
				}})
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for id := first; id < first+per; id += 2 { // delete every other row
			wg.Go(func() {
				<-start
				if _, err := s.Delete(ctx, "a", id, "", func(context.Context, string) error {
					if err := os.Remove(path(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
						return err
					}
					return nil
				}); err != nil {
					t.Error(err)
				}
			})
		}
		close(start)
		out := s.SettleSyncedBatch(ctx, "w", items)
		wg.Wait()
		for i, o := range out {
			if o.Err != nil {
				t.Fatalf("round %d item %d: %v", round, i, o.Err)
			}
		}
		for id := first; id < first+per; id++ {
			_, rowErr := s.Get(ctx, "a", id)
			_, fileErr := os.Stat(path(id))
			deleted := (id-first)%2 == 0
			if deleted && (!errors.Is(rowErr, registry.ErrNotFound) || !errors.Is(fileErr, os.ErrNotExist)) {
				t.Fatalf("round %d: deleted row %d survived: get = %v, stat = %v", round, id, rowErr, fileErr)
			}
			if !deleted && (rowErr != nil || fileErr != nil) {
				t.Fatalf("round %d: row %d not settled: get = %v, stat = %v", round, id, rowErr, fileErr)
			}
		}
	}
}
