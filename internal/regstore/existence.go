package regstore

import (
	"context"
	"fmt"

	"github.com/lib/pq"
)

// KeyedRow is a synced registry row with the key its bytes are recorded
// at, as the existence scan reads them.
type KeyedRow struct {
	BlobKey    string `db:"blob_key"`
	Replicable string `db:"replicable"`
	ModelID    int64  `db:"model_id"`
	Seq        int64  `db:"seq"`
}

// SyncedKeys returns up to limit synced rows that record a blob key, in
// ascending byte order of (blob_key, replicable, model_id), starting after
// the row after (the zero KeyedRow for the first page). It reads the
// geo_registry_key index (migration 0009), so a scan of the whole registry
// costs one index walk whatever its size; byte order is the order of a
// storage's key listing (blob.Lister), so the two can be merged.
func (s *Store) SyncedKeys(ctx context.Context, after KeyedRow, limit int) ([]KeyedRow, error) {
	return s.SyncedKeysOf(ctx, nil, after, limit)
}

// SyncedKeysOf is SyncedKeys for the rows of types only (nil: every
// type): the existence scan of one kind's storage reads the rows of that
// kind's types.
func (s *Store) SyncedKeysOf(ctx context.Context, types []string, after KeyedRow, limit int) ([]KeyedRow, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("registry: synced keys: limit = %d, want > 0", limit)
	}
	rows := []KeyedRow{}
	err := s.db.SelectContext(ctx, &rows, `
SELECT blob_key, replicable, model_id, seq FROM geo_registry
WHERE blob_key IS NOT NULL AND (blob_key COLLATE "C", replicable COLLATE "C", model_id) > ($1 COLLATE "C", $2 COLLATE "C", $3)
  AND state = 2 AND ($5::text[] IS NULL OR replicable = ANY($5::text[]))
ORDER BY blob_key COLLATE "C", replicable COLLATE "C", model_id
LIMIT $4`, after.BlobKey, after.Replicable, after.ModelID, limit, pq.Array(types))
	if err != nil {
		return nil, fmt.Errorf("registry: synced keys: %w", err)
	}
	return rows, nil
}

// MarkLocalMissing makes rows pending again, with a new seq, when they are
// still synced at the same generation and key as read (a row synced,
// changed or removed since is left alone), and records reason as their
// last failure: their bytes were found missing from the site's storage
// (an operator's rm, a disk replaced, a lost file) by the existence scan.
// The next sync downloads them again. It returns the rows it changed.
func (s *Store) MarkLocalMissing(ctx context.Context, rows []KeyedRow, reason string) ([]KeyedRow, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	types, keys := make([]string, len(rows)), make([]string, len(rows))
	ids, seqs := make([]int64, len(rows)), make([]int64, len(rows))
	for i, r := range rows {
		types[i], keys[i], ids[i], seqs[i] = r.Replicable, r.BlobKey, r.ModelID, r.Seq
	}
	marked := []KeyedRow{}
	err := s.db.SelectContext(ctx, &marked, `
UPDATE geo_registry r SET `+toPendingSQL+`, last_sync_failure = $6
FROM (SELECT g.replicable, g.model_id FROM geo_registry g
      JOIN unnest($1::text[], $2::bigint[], $4::bigint[], $5::text[]) AS k(replicable, model_id, seq, key)
        ON g.replicable = k.replicable AND g.model_id = k.model_id
      WHERE g.seq = k.seq AND g.state = 2 AND g.blob_key = k.key
      ORDER BY g.replicable, g.model_id FOR UPDATE OF g) sel
WHERE r.replicable = sel.replicable AND r.model_id = sel.model_id
RETURNING r.blob_key, r.replicable, r.model_id, r.seq`,
		pq.Array(types), pq.Array(ids), s.now(), pq.Array(seqs), pq.Array(keys), truncate(reason, s.maxFailureLen))
	if err != nil {
		return nil, fmt.Errorf("registry: mark local missing: %w", err)
	}
	return marked, nil
}
