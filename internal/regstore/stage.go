package regstore

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

// ClearStagedKey forgets claim c's staged key (an earlier sync of the row
// published there without its settle committing, or RequeueRemoval kept a
// deleted record's key there) and removes the bytes at it unless another
// registry row, or this row's recorded blob key, still names it (R7), in
// one transaction under the row and key locks; it does nothing and
// returns true when c.StagedKey is empty. It returns false, calling
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
		// The row's own blob_key counts: its bytes are released by the
		// settle that records the new key, not here.
		free, err := s.unreferenced(ctx, tx, []release{{key: c.StagedKey, typ: c.Replicable}})
		if err != nil {
			return err
		}
		if free.has(c.Replicable, c.StagedKey) {
			if err := remove(ctx, c.StagedKey); err != nil {
				return fmt.Errorf("remove staged key %q: %w", c.StagedKey, err)
			}
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
// committed on its own (and durably) before it returns. It holds each
// key's lock (R7) until that commit, so a concurrent removal of bytes at
// one of the keys either sees the new reference and keeps them, or ends
// before the reference is visible (and before the sync publishes). The sync engine
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
		for rows.Next() {
			var k Key
			if err := rows.Scan(&k.Replicable, &k.ModelID); err != nil {
				rows.Close()
				return err
			}
			staged[k] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		// R7: the new references commit only once no removal of these
		// keys is under way (see keyref.go); the rows are locked first.
		return lockKeys(ctx, tx, keys, true)
	})
	if err != nil {
		return nil, fmt.Errorf("registry: stage keys: %w", err)
	}
	return staged, nil
}
