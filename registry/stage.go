package registry

import (
	"context"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// stageKeysSQL records the staged keys of the held claims among the arrays.
const stageKeysSQL = `
UPDATE geo_registry r SET staged_key = k.key
FROM (` + lockHeldSQL + `) sel, unnest($2::text[], $3::bigint[], $5::text[]) AS k(replicable, model_id, key)
WHERE r.replicable = sel.replicable AND r.model_id = sel.model_id
  AND k.replicable = sel.replicable AND k.model_id = sel.model_id`

// clearStagedSQL clears the staged key of a claim owner still holds,
// locking its row in lockHeldSQL's way.
const clearStagedSQL = `
UPDATE geo_registry r SET staged_key = NULL
FROM (` + lockHeldSQL + `) sel
WHERE r.replicable = sel.replicable AND r.model_id = sel.model_id`

// ClearStagedKey removes, under the row lock, the bytes at c.StagedKey (an
// earlier sync of claim c's row published there without its settle
// committing, or RequeueRemoval kept a deleted record's key there), then
// clears the row's staged_key, in one transaction; it does nothing
// and returns true when c.StagedKey is empty. It returns false, calling
// nothing, when owner no longer holds the claim. If remove fails, the row
// keeps naming the bytes and the error is returned.
//
// A sync that will publish at a key other than c.StagedKey must call it
// before StageKeys: the row has room for one staged key, and overwriting
// it first would leave the older bytes named nowhere if their removal
// then failed or the process died.
func (s *Store) ClearStagedKey(ctx context.Context, owner string, c Claim, remove func(ctx context.Context, key string) error) (bool, error) {
	if c.StagedKey == "" {
		return true, nil
	}
	args := []any{owner, pq.Array([]string{c.Replicable}), pq.Array([]int64{c.ModelID}), pq.Array([]int64{c.Seq})}
	err := s.rowTx(ctx, func(tx *sqlx.Tx) error {
		res, err := tx.ExecContext(ctx, clearStagedSQL, args...)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return errStale
		}
		if err := remove(ctx, c.StagedKey); err != nil {
			return fmt.Errorf("remove staged key %q: %w", c.StagedKey, err)
		}
		return nil
	})
	if errors.Is(err, errStale) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("registry: clear staged key %s/%d: %w", c.Replicable, c.ModelID, err)
	}
	return true, nil
}

// StageKeys records, for each item whose claim owner still holds, the key
// its Publish is about to make visible (staged_key), in one transaction
// committed on its own. The sync engine calls it just before settling:
// if the settle then does not commit (the process dies after the rename,
// or Publish fails after it), the row still names the bytes, and the next
// sync (Claim.StagedKey) or Delete removes them. Items without a Publish,
// or whose key is already the row's blob_key, need no staging and are
// skipped. SettleSynced and SettleSyncedBatch clear staged_key.
func (s *Store) StageKeys(ctx context.Context, owner string, items []SettleItem) error {
	var types, keys []string
	var ids, seqs []int64
	for _, it := range items {
		if it.Publish == nil || it.Result.BlobKey == "" || it.Result.BlobKey == it.Claim.BlobKey {
			continue
		}
		if c := it.Claim; c.StagedKey != "" && c.StagedKey != it.Result.BlobKey {
			return fmt.Errorf("registry: stage keys: %s/%d still names bytes at %q: ClearStagedKey first", c.Replicable, c.ModelID, c.StagedKey)
		}
		types = append(types, it.Claim.Replicable)
		ids = append(ids, it.Claim.ModelID)
		seqs = append(seqs, it.Claim.Seq)
		keys = append(keys, it.Result.BlobKey)
	}
	if len(ids) == 0 {
		return nil
	}
	// A row keeps one staged key: an earlier one the new key does not
	// replace was removed by ClearStagedKey first (checked above).
	// The rows are locked in key order (lockHeldSQL), as by every
	// statement locking several registry rows, so this cannot deadlock
	// with a concurrent settle, claim or MarkPending.
	err := s.rowTx(ctx, func(tx *sqlx.Tx) error {
		st, err := s.prepared(ctx, tx, stageKeysSQL)
		if err != nil {
			return err
		}
		_, err = st.ExecContext(ctx, owner, pq.Array(types), pq.Array(ids), pq.Array(seqs), pq.Array(keys))
		return s.stmts.check(stageKeysSQL, err)
	})
	if err != nil {
		return fmt.Errorf("registry: stage keys: %w", err)
	}
	return nil
}
