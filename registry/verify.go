package registry

import (
	"context"
	"fmt"

	"github.com/lib/pq"
)

// reverifySetSQL is what a reverify sets ($2 is the time): verification
// pending and due now, taking away any verification in progress (its
// settle then matches no row). verification_retry_count is kept: only a
// verification success resets it.
const reverifySetSQL = `
  verification_state = 0, verification_retry_at = NULL,
  verification_started_at = NULL, lease_owner = NULL, lease_expires_at = NULL, updated_at = $2`

// reverifySQL makes the synced rows selected by the condition that follows
// verification pending and due now.
const reverifySQL = `
UPDATE geo_registry SET` + reverifySetSQL + `
WHERE replicable = $1 AND state = 2 AND `

// Reverify makes the synced rows ids of replicable verification pending,
// due now (an operator's request). Rows not synced are left alone: their
// next sync settles their verification. It returns the number of rows
// changed.
func (s *Store) Reverify(ctx context.Context, replicable string, ids []int64) (int64, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	res, err := s.db.ExecContext(ctx, reverifySQL+`model_id = ANY($3::bigint[])`, replicable, s.now(), pq.Array(ids))
	if err != nil {
		return 0, fmt.Errorf("registry: reverify %s: %w", replicable, err)
	}
	return rowsAffected(res)
}

// reverifyAllWhere selects the rows of a reverify of all rows: synced,
// with a verification not already pending, or only a failed one; in a
// batch's statement with the columns as batchTerm names them.
func reverifyAllWhere(onlyFailed, inBatch bool) string {
	cond := batchTerm("state", inBatch) + ` = 2 AND ` + batchTerm("verification_state", inBatch)
	if onlyFailed {
		return cond + ` = 3`
	}
	return cond + ` <> 0`
}

// reverifyBatch is the batch of ReverifyBatches.
func reverifyBatch(onlyFailed bool) batchAction {
	op := "reverify all"
	if onlyFailed {
		op = "reverify failed"
	}
	return batchAction{op: op, query: fmt.Sprintf(batchSQL, reverifyAllWhere(onlyFailed, true), reverifySetSQL)}
}

// ReverifyBatches makes the synced rows of replicable whose verification
// is not already pending (only those whose verification failed, with
// opts.OnlyFailed) verification pending and due now, walking the
// type's rows in model_id order after opts.After in batches of opts.Size
// rows, each batch its own short transaction that locks the rows it
// changes in model_id order. A verification in flight on a changed row
// is taken away (its settle matches no row).
//
// As with ResyncBatches, each batch sees the rows as they are when it
// runs: a row that becomes synced, or whose verification fails, after its
// id range was passed is not visited again by this walk. It returns how
// far it got; on an error, BatchOptions{After: p.After} resumes exactly
// after the last committed batch.
func (s *Store) ReverifyBatches(ctx context.Context, replicable string, opts BatchOptions) (BatchProgress, error) {
	return s.runBatches(ctx, reverifyBatch(opts.OnlyFailed), replicable, opts)
}
