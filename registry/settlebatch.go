package registry

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// SettleItem is one successful sync for SettleSyncedBatch: the claim, what
// was synced, and the function that publishes the staged bytes.
type SettleItem struct {
	Claim   Claim
	Result  SyncedResult
	Publish func(ctx context.Context) error
}

// SettleOutcome is SettleSyncedBatch's answer for one item, with the
// meaning of SettleSynced's results: Settled false and Err nil means the
// claim was no longer current (the caller discards its staged bytes); an
// Err (matching ErrChecksumMismatch, or wrapping a publish or database
// error) means the caller settles the claim with SettleFailed.
type SettleOutcome struct {
	Settled bool
	Err     error
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

// SettleSyncedBatch is SettleSynced for many claims in one transaction:
// the same checks and the same resulting rows, in four round trips for
// the whole batch instead of three per row. It is what the sync engine
// uses when several syncs finish at about the same time.
//
// In one transaction it locks the rows whose claims are still current (in
// key order, as every statement locking several rows does, so it cannot
// deadlock with them), calls
// the Publish functions of those items concurrently while the locks are
// held (R2: a concurrent Delete waits and then removes the published
// bytes), marks synced the rows whose Publish succeeded and commits. A
// failed Publish leaves its row started and is reported in that item's
// Err; the other items are not affected. Items whose claim is no longer
// current get Settled false and their Publish is not called. A known
// primary checksum that differs from the local one is ErrChecksumMismatch
// for that item, without touching its row (R6). If the transaction
// itself fails, every item that reached it gets the error; rows whose
// bytes were already published then stay started and are reclaimed after
// their lease, as with SettleSynced.
//
// Items must name distinct rows; a repeated row gets an error. The result
// has one outcome per item, in order.
func (s *Store) SettleSyncedBatch(ctx context.Context, owner string, items []SettleItem) []SettleOutcome {
	out := make([]SettleOutcome, len(items))
	if len(items) == 0 {
		return out
	}
	now := s.now()
	type entry struct {
		i      int
		vstate VerificationState
	}
	var todo []entry
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
					c.Replicable, c.ModelID, ErrChecksumMismatch, r.Checksum, r.PrimaryChecksum)
				continue
			}
			vstate = VerificationSucceeded
		}
		todo = append(todo, entry{i, vstate})
	}
	if len(todo) == 0 {
		return out
	}
	slices.SortFunc(todo, func(a, b entry) int {
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
