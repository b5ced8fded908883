package regstore

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/geoframework/geo/blob"
)

// SettleItem is one successful sync for SettleSyncedBatch: the claim, what
// was synced, the function that publishes the staged bytes, and the one
// that removes bytes at a key the row stops naming.
type SettleItem struct {
	Claim  Claim
	Result SyncedResult
	// Publish makes the synced bytes visible at Result.BlobKey (nil:
	// nothing to publish).
	Publish func(ctx context.Context) error
	// Remove removes the bytes at a key the row stops naming: its
	// previous blob key or its staged key, when it is not Result.BlobKey
	// and no other row names it (R7). Nil leaves such bytes in place.
	Remove func(ctx context.Context, key string) error
}

// SettleOutcome is SettleSyncedBatch's answer for one item, with the
// meaning of SettleSynced's results: Settled false and Err nil means the
// claim was no longer current (the caller discards its staged bytes); an
// Err (matching blob.ErrChecksumMismatch, or wrapping a publish or database
// error) means the caller settles the claim with SettleFailed.
type SettleOutcome struct {
	Settled bool
	Err     error
}

// settleEntry is an item of SettleSyncedBatch that reaches the
// transaction, with the verification state its row gets.
type settleEntry struct {
	i      int
	vstate VerificationState
}

// settleBatchSQL marks the locked rows whose bytes were published synced,
// setting exactly what settleSyncedSQL sets for one row.
const settleBatchSQL = `
UPDATE geo_registry r SET
  state = 2, retry_count = 0, retry_at = NULL, last_synced_at = $2,
  last_sync_failure = NULL, missing_on_primary = false,
  blob_key = NULLIF(k.blob_key, ''), staged_key = NULL, blob_size = k.blob_size, lease_owner = NULL, lease_expires_at = NULL,
  verification_state = k.vstate, verification_checksum = NULLIF(k.checksum, ''),
  verification_checksum_mismatched = NULL, checksum_mismatch = false,
  verified_at = CASE WHEN k.vstate = 2 THEN $2::timestamptz END, verification_retry_at = NULL,
  verification_failure = NULL, verification_started_at = NULL, updated_at = $2
FROM unnest($3::text[], $4::bigint[], $5::bigint[], $6::text[], $7::bigint[], $8::smallint[], $9::text[])
  AS k(replicable, model_id, seq, blob_key, blob_size, vstate, checksum)
WHERE r.replicable = k.replicable AND r.model_id = k.model_id AND r.seq = k.seq
  AND r.state = 1 AND r.lease_owner = $1`

// SettleSyncedBatch records that the syncs of items succeeded, in one
// transaction for the whole batch (four to six round trips however many
// rows). It is what the sync engine uses: syncs that finish at about the
// same time settle together.
//
// In one transaction it locks the rows whose claims are still current
// (same seq, started, owned by owner), in key order, as every statement
// locking several rows does, so it cannot deadlock with them; calls the
// Publish functions of those items concurrently while the locks are held
// (R2: a concurrent Delete waits and then removes the published bytes);
// removes the bytes at the keys those rows stop naming (previous blob
// key, staged key) that no other registry row names, under the keys'
// locks (R7), with each item's Remove; marks synced the rows whose
// Publish and removals succeeded; and commits.
//
// Items whose claim is no longer current get Settled false and Err nil,
// and their Publish is not called: the caller discards the staged bytes.
// A known primary checksum that differs from the local one is
// blob.ErrChecksumMismatch for that item, without touching its row (R6). A
// failed Publish or removal leaves that item's row started and is
// reported in its Err (the caller settles it with SettleFailed); the
// other items are not affected. If the transaction itself fails, every
// item that reached it gets the error; rows whose bytes were already
// published then stay started and are reclaimed after their lease.
//
// The synced row gets retry_count 0, no retry_at, last_synced_at now, no
// failure, missing_on_primary false, the result's key and size, no staged
// key and no lease. verification_retry_count is kept: only a verification
// success resets it, so verification backoff grows across consecutive
// verify-fail → resync cycles (GitLab #607991). Its verification state is
// succeeded (verified_at now) when the primary checksum is known and
// matches, and pending when it is unknown.
//
// Items must name distinct rows; a repeated row gets an error. The result
// has one outcome per item, in order.
func (s *Store) SettleSyncedBatch(ctx context.Context, owner string, items []SettleItem) []SettleOutcome {
	out := make([]SettleOutcome, len(items))
	if len(items) == 0 {
		return out
	}
	now := s.now()
	var todo []settleEntry
	seen := make(map[Key]bool, len(items))
	for i, it := range items {
		c, r := it.Claim, it.Result
		if seen[c.Key()] {
			out[i].Err = fmt.Errorf("registry: settle synced %s/%d: row repeated in one batch", c.Replicable, c.ModelID)
			continue
		}
		seen[c.Key()] = true
		vstate := VerificationPending
		if r.PrimaryChecksum != "" {
			if !strings.EqualFold(r.PrimaryChecksum, r.Checksum) {
				out[i].Err = fmt.Errorf("registry: settle synced %s/%d: %w: local %q, primary %q",
					c.Replicable, c.ModelID, blob.ErrChecksumMismatch, r.Checksum, r.PrimaryChecksum)
				continue
			}
			vstate = VerificationSucceeded
		}
		todo = append(todo, settleEntry{i, vstate})
	}
	if len(todo) == 0 {
		return out
	}
	slices.SortFunc(todo, func(a, b settleEntry) int {
		ca, cb := items[a.i].Claim, items[b.i].Claim
		return cmp.Or(strings.Compare(ca.Replicable, cb.Replicable), cmp.Compare(ca.ModelID, cb.ModelID))
	})
	byKey := make(map[Key]int, len(todo)) // index into todo
	types, ids, seqs := make([]string, len(todo)), make([]int64, len(todo)), make([]int64, len(todo))
	for j, e := range todo {
		c := items[e.i].Claim
		types[j], ids[j], seqs[j] = c.Replicable, c.ModelID, c.Seq
		byKey[c.Key()] = j
	}

	published := make([]bool, len(todo))
	err := s.rowTx(ctx, func(tx *sqlx.Tx) error {
		lock, err := s.prepared(ctx, tx, lockHeldSQL)
		if err != nil {
			return err
		}
		rows, err := lock.QueryContext(ctx, owner, pq.Array(types), pq.Array(ids), pq.Array(seqs))
		if err != nil {
			return s.stmts.Check(lockHeldSQL, err)
		}
		var locked []int
		for rows.Next() {
			var k Key
			var seq int64
			if err := rows.Scan(&k.Replicable, &k.ModelID, &seq); err != nil {
				rows.Close()
				return err
			}
			locked = append(locked, byKey[k])
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		// Publish concurrently: each is an fsync or two, independent of
		// the others, and every row stays locked until the commit.
		var wg sync.WaitGroup
		for _, j := range locked {
			it := items[todo[j].i]
			if it.Publish == nil {
				published[j] = true
				continue
			}
			wg.Go(func() {
				if err := it.Publish(ctx); err != nil {
					out[todo[j].i].Err = fmt.Errorf("registry: settle synced %s/%d: publish: %w",
						it.Claim.Replicable, it.Claim.ModelID, err)
					return
				}
				published[j] = true
			})
		}
		wg.Wait()
		idx := make([]int, len(todo))
		for j, e := range todo {
			idx[j] = e.i
		}
		if err := s.removeReleasedBatch(ctx, tx, items, idx, published, out); err != nil {
			return err
		}
		var (
			uTypes, uKeys, uSums []string
			uIDs, uSeqs, uSizes  []int64
			uStates              []int16
		)
		for j, ok := range published {
			if !ok {
				continue
			}
			it := items[todo[j].i]
			uTypes = append(uTypes, it.Claim.Replicable)
			uIDs = append(uIDs, it.Claim.ModelID)
			uSeqs = append(uSeqs, it.Claim.Seq)
			uKeys = append(uKeys, it.Result.BlobKey)
			uSizes = append(uSizes, it.Result.Size)
			uStates = append(uStates, int16(todo[j].vstate))
			uSums = append(uSums, strings.ToLower(it.Result.Checksum))
		}
		if len(uIDs) == 0 {
			return nil
		}
		upd, err := s.prepared(ctx, tx, settleBatchSQL)
		if err != nil {
			return err
		}
		res, err := upd.ExecContext(ctx, owner, now, pq.Array(uTypes), pq.Array(uIDs), pq.Array(uSeqs),
			pq.Array(uKeys), pq.Array(uSizes), pq.Array(uStates), pq.Array(uSums))
		if err != nil {
			return s.stmts.Check(settleBatchSQL, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n != int64(len(uIDs)) {
			// Impossible while the rows are locked; refuse to commit a
			// partial picture rather than guess.
			return fmt.Errorf("settled %d rows of %d locked and published", n, len(uIDs))
		}
		return nil
	})
	if err != nil {
		err = fmt.Errorf("registry: settle synced batch of %d: %w", len(todo), err)
		// Nothing was committed. Every item without an error of its own
		// gets the transaction's: SettleFailed, which the caller runs next,
		// changes nothing for a claim that is no longer current.
		for j := range todo {
			if o := &out[todo[j].i]; o.Err == nil {
				o.Err = err
			}
		}
		return out
	}
	for j, ok := range published {
		if ok {
			out[todo[j].i].Settled = true
		}
	}
	return out
}

// removeReleasedBatch removes, in tx, the bytes at the keys that the
// published items (published[j] for item idx[j]) stop naming and that no
// other row names (R7: locked, then checked in one statement each). An
// item whose removal fails is no longer published: its row stays
// started, and out records why. A key released by several items is
// removed once.
func (s *Store) removeReleasedBatch(ctx context.Context, tx *sqlx.Tx, items []SettleItem, idx []int, published []bool, out []SettleOutcome) error {
	var rels []release
	by := map[spaceKey][]int{} // key in its space -> positions in idx releasing it
	for j, i := range idx {
		it := items[i]
		if !published[j] || it.Remove == nil {
			continue
		}
		for _, k := range releasedKeys(it.Result.BlobKey, it.Claim.BlobKey, it.Claim.StagedKey) {
			rels = append(rels, release{key: k, rowKey: it.Claim.Key()})
			sk := spaceKey{s.spaces[it.Claim.Replicable], k}
			by[sk] = append(by[sk], j)
		}
	}
	free, err := s.unreferenced(ctx, tx, rels)
	if err != nil {
		return err
	}
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for sk, js := range by {
		k := sk.key
		if !free.has(items[idx[js[0]]].Claim.Replicable, k) {
			continue
		}
		it := items[idx[js[0]]]
		wg.Go(func() {
			err := it.Remove(ctx, k)
			if err == nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, j := range js {
				published[j] = false
				c := items[idx[j]].Claim
				out[idx[j]].Err = fmt.Errorf("registry: settle synced %s/%d: remove released key %q: %w",
					c.Replicable, c.ModelID, k, err)
			}
		})
	}
	wg.Wait()
	return nil
}
