package regstore

import (
	"context"
	"fmt"
	"time"

	"github.com/lib/pq"
)

// OldestPending returns, for each of types that has pending rows, when
// the first row of its FIFO (the lowest seq, the next to be claimed) was
// marked pending. It reads one index entry and one row per type.
func (s *Store) OldestPending(ctx context.Context, types []string) (map[string]time.Time, error) {
	var got []struct {
		Replicable string    `db:"replicable"`
		Since      time.Time `db:"since"`
	}
	err := s.db.SelectContext(ctx, &got, `
SELECT t.replicable, p.updated_at AS since
FROM unnest($1::text[]) AS t(replicable)
CROSS JOIN LATERAL (SELECT r.updated_at FROM geo_registry r
  WHERE r.replicable = t.replicable AND r.state = 0 ORDER BY r.seq LIMIT 1) p`, pq.Array(types))
	if err != nil {
		return nil, fmt.Errorf("registry: oldest pending: %w", err)
	}
	out := make(map[string]time.Time, len(got))
	for _, g := range got {
		out[g.Replicable] = g.Since
	}
	return out, nil
}

// newFailuresSQL counts, per type ($1), up to $3 rows on their first
// failure since $2: one range of geo_registry_new_failures each.
const newFailuresSQL = `
SELECT t.replicable, f.n
FROM unnest($1::text[]) AS t(replicable)
CROSS JOIN LATERAL (SELECT count(*) AS n FROM (SELECT 1 FROM geo_registry r
  WHERE r.replicable = t.replicable AND r.state = 3 AND r.retry_count = 1 AND r.updated_at >= $2
  LIMIT $3) x) f
WHERE f.n > 0`

// NewFailures counts, per type, rows that failed for the first time at or
// after since (state failed, retry_count 1, updated since): the set of
// failing records grew by that many. At most limit rows are counted per
// type (limit must be positive), so the cost stays bounded when very
// many rows fail. The count is exact up to limit: it reads one range of
// geo_registry_new_failures (migration 0011), which holds only rows on
// their first failure, without touching the table once vacuum marked
// their pages all-visible.
func (s *Store) NewFailures(ctx context.Context, types []string, since time.Time, limit int) (map[string]int64, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("registry: new failures: limit = %d, want > 0", limit)
	}
	var got []struct {
		Replicable string `db:"replicable"`
		N          int64  `db:"n"`
	}
	err := s.db.SelectContext(ctx, &got, newFailuresSQL, pq.Array(types), since, limit)
	if err != nil {
		return nil, fmt.Errorf("registry: new failures: %w", err)
	}
	out := make(map[string]int64, len(got))
	for _, g := range got {
		out[g.Replicable] = g.N
	}
	return out, nil
}
