package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// BatchSizeDefault is the default BatchOptions.Size: how many rows of a
// type a batched admin action walks in one transaction. A batch of
// 10,000 rows resyncs in a few tens of milliseconds here (1,000,000 rows:
// [Performance], "Second wave: resync of every row"), far below any
// statement timeout.
//
// [Performance]: https://github.com/geoframework/geo/blob/main/docs/performance.md
const BatchSizeDefault = 10_000

// BatchOptions says how ResyncBatches and ReverifyBatches walk a type's
// rows, and which rows CountResyncBatches and CountReverifyBatches count.
// The zero value walks every row from the first, BatchSizeDefault rows a
// transaction, without a progress callback or a per-batch timeout.
type BatchOptions struct {
	// OnlyFailed selects only the failed rows: failed syncs for a
	// resync, failed verifications for a reverify.
	OnlyFailed bool
	// After starts the walk after this model_id (record ids are
	// positive, so 0 is the start). To resume an interrupted walk, pass
	// the After of the last BatchProgress it reported: every row up to
	// it was handled by a committed batch.
	After int64
	// Size is how many rows, changed or not, one batch walks (and at
	// most changes). 0 means BatchSizeDefault; negative is an error.
	Size int
	// BatchTimeout bounds each batch (one statement, one transaction);
	// the walk as a whole is bounded only by the context. 0 means no
	// bound; negative is an error. A batch that runs out of time is
	// rolled back and the error matches context.DeadlineExceeded.
	BatchTimeout time.Duration
	// Progress, when not nil, is called after each committed batch, the
	// last one included (BatchProgress.Done). An error it returns stops
	// the walk before the next batch: the action returns that error
	// (wrapped) with the progress reached, so the caller can resume
	// after BatchProgress.After.
	Progress func(BatchProgress) error
}

// BatchProgress is how far a batched admin action got.
type BatchProgress struct {
	// After is the last model_id walked by the last committed batch
	// (BatchOptions.After until one commits): resume after it.
	After int64
	// Walked is how many rows the committed batches walked, and Changed
	// how many of them they changed.
	Walked, Changed int64
	// Batches is how many batches committed.
	Batches int
	// Done says the walk reached the end of the type's rows.
	Done bool
}

// batchSQL is the statement of one batch of a batched admin action,
// with %[1]s the selecting condition and %[2]s the UPDATE's SET list
// ($1 type, $2 the store's clock, $3 after, $4 size). bound is the next
// $4 rows of the type after $3 in primary key order, whatever their
// state: how many and the last id. The UPDATE changes the rows of that
// id range the condition selects. Both walk the primary key from $3 on
// (batchPlansSQL), so no batch walks the rows of the batches before it,
// and the UPDATE locks its rows in model_id order, as every statement
// changing several registry rows does, which keeps it free of deadlocks
// with them. A row another transaction changed meanwhile is re-checked
// on its current version (READ COMMITTED): a row that became pending is
// left, one that became started gets a new seq (R1).
//
// The conditions name state and verification_state as batchTerm does.
//
// It returns how many rows the batch walked, the last id walked ($3 when
// none) and how many rows it changed.
const batchSQL = `
WITH bound AS MATERIALIZED (
  SELECT count(*) AS n, max(model_id) AS hi FROM (
    SELECT model_id FROM geo_registry WHERE replicable = $1 AND model_id > $3
    ORDER BY model_id LIMIT $4) w
), upd AS (
  UPDATE geo_registry SET %[2]s
  WHERE replicable = $1 AND model_id > $3 AND model_id <= (SELECT hi FROM bound) AND %[1]s
  RETURNING 1
)
SELECT n, coalesce(hi, $3), (SELECT count(*) FROM upd) FROM bound`

// batchPlansSQL makes a batch's statement walk the primary key whatever
// the table's size and statistics: without a sequential or bitmap scan
// (which visit rows in physical order) the only path to a range of
// model_id is geo_registry_pkey. SET LOCAL ends with the batch's
// transaction.
const batchPlansSQL = `SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off`

// batchTerm is how the condition of a batch's statement names column col:
// as col + 0, not the bare column, which would let the planner walk a
// partial index whose predicate the condition implies
// (geo_registry_failed_due for state = 3, say), in another order than
// model_id. Outside a batch (the dry-run counts) the bare column is
// named, so those partial indexes can answer.
func batchTerm(col string, inBatch bool) string {
	if inBatch {
		return col + " + 0"
	}
	return col
}

// batchAction is one batched admin action: its name in errors and the
// statement of one batch.
type batchAction struct {
	op    string
	query string
}

// runBatches walks replicable's rows in batches of opts.Size from
// opts.After, each batch its own transaction, until a batch walks fewer
// rows than the size.
func (s *Store) runBatches(ctx context.Context, a batchAction, replicable string, opts BatchOptions) (BatchProgress, error) {
	p := BatchProgress{After: opts.After}
	size, err := batchSize(a.op, replicable, opts)
	if err != nil {
		return p, err
	}
	for !p.Done {
		walked, last, changed, err := s.runBatch(ctx, a, replicable, p.After, size, opts.BatchTimeout)
		if err != nil {
			return p, fmt.Errorf("registry: %s %s: batch after id %d: %w", a.op, replicable, p.After, err)
		}
		p.Batches++
		p.Walked += walked
		p.Changed += changed
		p.After = last
		p.Done = walked < int64(size)
		if opts.Progress != nil {
			if err := opts.Progress(p); err != nil {
				return p, fmt.Errorf("registry: %s %s: stopped after id %d: %w", a.op, replicable, p.After, err)
			}
		}
	}
	return p, nil
}

// runBatch runs one batch after id after, bounded by timeout (0: by ctx
// alone). When the batch's context ends, the error matches its cause
// (context.DeadlineExceeded or context.Canceled) besides lib/pq's
// "canceling statement".
func (s *Store) runBatch(ctx context.Context, a batchAction, replicable string, after int64, size int, timeout time.Duration) (walked, last, changed int64, err error) {
	bctx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		bctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	err = s.inTxSet(bctx, batchPlansSQL, func(tx *sqlx.Tx) error {
		return tx.QueryRowContext(bctx, a.query, replicable, s.now(), after, size).Scan(&walked, &last, &changed)
	})
	if err != nil {
		switch {
		case ctx.Err() != nil:
			if !errors.Is(err, ctx.Err()) {
				err = fmt.Errorf("%w: %w", ctx.Err(), err)
			}
		case errors.Is(err, bctx.Err()):
			err = fmt.Errorf("timed out after %v (the batch timeout): %w", timeout, err)
		case bctx.Err() != nil:
			err = fmt.Errorf("timed out after %v (the batch timeout): %w: %w", timeout, bctx.Err(), err)
		}
		return 0, 0, 0, err
	}
	return walked, last, changed, nil
}

// batchSize validates opts for operation op and returns the batch size.
func batchSize(op, replicable string, opts BatchOptions) (int, error) {
	if opts.Size < 0 || opts.BatchTimeout < 0 {
		return 0, fmt.Errorf("registry: %s %s: BatchOptions.Size = %d, BatchTimeout = %v: want >= 0",
			op, replicable, opts.Size, opts.BatchTimeout)
	}
	if opts.Size == 0 {
		return BatchSizeDefault, nil
	}
	return opts.Size, nil
}

// countAfter counts the rows of replicable after id after that cond
// selects (the dry run of a batched action).
func (s *Store) countAfter(ctx context.Context, op, replicable, cond string, after int64) (int64, error) {
	var n int64
	err := s.db.GetContext(ctx, &n,
		`SELECT count(*) FROM geo_registry WHERE replicable = $1 AND model_id > $2 AND `+cond, replicable, after)
	if err != nil {
		return 0, fmt.Errorf("registry: count %s %s: %w", op, replicable, err)
	}
	return n, nil
}
