package registry

import (
	"context"
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
		types = append(types, it.Claim.Replicable)
		ids = append(ids, it.Claim.ModelID)
		seqs = append(seqs, it.Claim.Seq)
		keys = append(keys, it.Result.BlobKey)
	}
	if len(ids) == 0 {
		return nil
	}
	// A row keeps one staged key: if an earlier staged key was never
	// cleaned up, the next sync's commit removes the one it replaces
	// (Claim.StagedKey) before this one is recorded.
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
