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
  AND k.replicable = sel.replicable AND k.model_id = sel.model_id
RETURNING r.replicable, r.model_id`

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

// Staging names the key a claimed row's sync publishes its bytes at.
type Staging struct {
	Claim Claim
	Key   string
}

// StageKeys records, for each staging whose claim owner still holds, the
// key the sync is about to make visible (staged_key), in one transaction
// committed on its own (and durably) before it returns. The sync engine
// calls it for each claimed batch before the syncs start, and for what is
// left just before settling: if the settle then does not commit (the
// process dies after the rename, or Publish fails after it), the row
// still names the bytes, and the next sync (Claim.StagedKey) or Delete
// removes them. SettleSynced and SettleSyncedBatch clear staged_key.
//
// Stagings that need nothing are skipped: an empty key, the row's
// recorded blob_key, or the claim's StagedKey already. A claim whose
// StagedKey is another key is an error (call ClearStagedKey first: the
// row has room for one staged key). It returns the rows it recorded a key
// for; rows whose claim is no longer held are left out.
func (s *Store) StageKeys(ctx context.Context, owner string, stagings []Staging) (map[Key]bool, error) {
	var types, keys []string
	var ids, seqs []int64
	for _, st := range stagings {
		c := st.Claim
		if st.Key == "" || st.Key == c.BlobKey || st.Key == c.StagedKey {
			continue
		}
		if c.StagedKey != "" {
			return nil, fmt.Errorf("registry: stage keys: %s/%d still names bytes at %q: ClearStagedKey first", c.Replicable, c.ModelID, c.StagedKey)
		}
		types = append(types, c.Replicable)
		ids = append(ids, c.ModelID)
		seqs = append(seqs, c.Seq)
		keys = append(keys, st.Key)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	// A row keeps one staged key: an earlier one the new key does not
	// replace was removed by ClearStagedKey first (checked above).
	// The rows are locked in key order (lockHeldSQL), as by every
	// statement locking several registry rows, so this cannot deadlock
	// with a concurrent settle, claim or MarkPending.
	staged := make(map[Key]bool, len(ids))
	err := s.rowTx(ctx, func(tx *sqlx.Tx) error {
		st, err := s.prepared(ctx, tx, stageKeysSQL)
		if err != nil {
			return err
		}
		rows, err := st.QueryContext(ctx, owner, pq.Array(types), pq.Array(ids), pq.Array(seqs), pq.Array(keys))
		if err != nil {
			return s.stmts.Check(stageKeysSQL, err)
		}
		defer rows.Close()
		for rows.Next() {
			var k Key
			if err := rows.Scan(&k.Replicable, &k.ModelID); err != nil {
				return err
			}
			staged[k] = true
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("registry: stage keys: %w", err)
	}
	return staged, nil
}
