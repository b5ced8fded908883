package registry

import (
	"context"
	"fmt"

	"github.com/lib/pq"
)

// CountReverify returns how many rows Reverify(ctx, replicable, ids)
// would change now: the synced ones among ids (a dry run).
func (s *Store) CountReverify(ctx context.Context, replicable string, ids []int64) (int64, error) {
	var n int64
	err := s.db.GetContext(ctx, &n,
		`SELECT count(*) FROM geo_registry WHERE replicable = $1 AND state = 2 AND model_id = ANY($2::bigint[])`,
		replicable, pq.Array(ids))
	if err != nil {
		return 0, fmt.Errorf("registry: count reverify %s: %w", replicable, err)
	}
	return n, nil
}

// CountReverifyBatches returns how many rows ReverifyBatches(ctx,
// replicable, opts) would change now (those after opts.After that it
// selects), without changing any (a dry run), in one statement.
// opts.Size, BatchTimeout and Progress are ignored.
func (s *Store) CountReverifyBatches(ctx context.Context, replicable string, opts BatchOptions) (int64, error) {
	return s.countAfter(ctx, "reverify", replicable, reverifyAllWhere(opts.OnlyFailed, false), opts.After)
}
