package regstore

import (
	"context"
	"fmt"
	"slices"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// Storage keys may be shared by several records at once (content-addressed
// types) and reused by a new record after a delete. The bytes at a key are
// removed from the site's storage only when no registry row, of any type,
// records (blob_key) or stages (staged_key) the key: rule R7.
//
// The check and the removal are atomic against a sync that starts naming
// the key, through a transaction-level advisory lock per key:
//   - a transaction that makes a row name a key (StageKeys) takes the
//     key's lock before it commits, so the reference becomes visible only
//     once no removal of that key is under way;
//   - a transaction that removes bytes takes the key's lock, then checks
//     for references in a statement of its own (a snapshot taken after
//     the lock), removes the bytes while holding the lock, and commits.
//
// So a removal either sees the new reference and keeps the bytes, or
// finishes before the reference is committed; bytes are published at a
// key only after its reference is committed, so a removal never takes
// bytes a row has published or is about to publish. A sync that found the
// bytes already present and skipped its download re-checks their presence
// when it settles (its reference is committed by then, so they stay).
//
// A transaction that adds references takes the keys' locks shared (two
// syncs staging keys never wait for each other); one that removes bytes
// takes them exclusive. A bulk removal (a chunk of a consistency pass's
// orphans, up to a thousand keys) takes one exclusive lock instead, the
// bulk lock, which every transaction adding references also takes shared:
// a thousand key locks cost about 5 ms, one lock nothing. Every
// transaction takes its row locks before its key locks, the bulk lock
// before the key locks, and its key locks in one statement in the order of
// their lock ids, so no two of them wait for each other in a cycle. One
// transaction takes at most a few hundred key locks (a settle batch), well
// within PostgreSQL's shared lock table (max_locks_per_transaction ×
// max_connections, 6,400 by default).

// lockKeysSQL takes the transaction-level advisory locks of the keys in
// $1, exclusive, in lock id order. The lock's first half names the schema,
// so two tracking schemas in one database (two sites' storages) do not
// share locks; the second is the key's hash (a collision only serialises
// two keys' removals).
const lockKeysSQL = `
SELECT count(pg_advisory_xact_lock(hashtext('geo_registry_key:' || current_schema()), h))
FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest($1::text[]) AS t(k) ORDER BY 1) s`

// shareKeysSQL takes the bulk lock and the keys' locks shared, for
// transactions that add references.
const shareKeysSQL = `
SELECT pg_advisory_xact_lock_shared(hashtext('geo_registry_bulk:' || current_schema()), 0),
  (SELECT count(pg_advisory_xact_lock_shared(hashtext('geo_registry_key:' || current_schema()), h))
   FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest($1::text[]) AS t(k) ORDER BY 1) s)`

// lockBulkSQL takes the bulk lock exclusive.
const lockBulkSQL = `SELECT pg_advisory_xact_lock(hashtext('geo_registry_bulk:' || current_schema()), 0)`

// referencedSQL returns the keys among $1 that some registry row names
// (blob_key or staged_key), not counting the rows releasing that key: row
// ($2[i], $3[i]) releases key $1[i]. Each column is probed through its
// own index (migration 0009) for all the keys at once; a key many rows
// share reads all their index entries.
const referencedSQL = `
SELECT DISTINCT x.key FROM (
  SELECT r.blob_key AS key, r.replicable, r.model_id FROM geo_registry r
  WHERE r.blob_key COLLATE "C" = ANY($1::text[])
  UNION ALL
  SELECT r.staged_key, r.replicable, r.model_id FROM geo_registry r
  WHERE r.staged_key COLLATE "C" = ANY($1::text[])
) x
WHERE NOT EXISTS (
  SELECT 1 FROM unnest($1::text[], $2::text[], $3::bigint[]) AS e(key, replicable, model_id)
  WHERE e.key = x.key AND e.replicable = x.replicable AND e.model_id = x.model_id)`

// release is a key that a registry row stops naming (its old blob key
// after an update, its staged key, its keys when it is deleted).
type release struct {
	key    string
	rowKey Key
}

// lockKeys takes the advisory locks of keys in tx, exclusive (a removal)
// or shared (new references).
func lockKeys(ctx context.Context, tx *sqlx.Tx, keys []string, shared bool) error {
	if len(keys) == 0 {
		return nil
	}
	q := lockKeysSQL
	if shared {
		q = shareKeysSQL
	}
	if _, err := tx.ExecContext(ctx, q, pq.Array(keys)); err != nil {
		return fmt.Errorf("lock keys: %w", err)
	}
	return nil
}

// unreferenced locks the keys of rels and returns those that no registry
// row names any more, apart from the rows releasing them: their bytes may
// be removed in tx, before it commits. The locks are held until tx ends.
func unreferenced(ctx context.Context, tx *sqlx.Tx, rels []release) (map[string]bool, error) {
	return checkReleased(ctx, tx, rels, false)
}

// checkReleased is unreferenced; bulk takes the bulk lock instead of one
// lock per key.
func checkReleased(ctx context.Context, tx *sqlx.Tx, rels []release, bulk bool) (map[string]bool, error) {
	if len(rels) == 0 {
		return nil, nil
	}
	keys, types := make([]string, len(rels)), make([]string, len(rels))
	ids := make([]int64, len(rels))
	for i, r := range rels {
		keys[i], types[i], ids[i] = r.key, r.rowKey.Replicable, r.rowKey.ModelID
	}
	if bulk {
		if _, err := tx.ExecContext(ctx, lockBulkSQL); err != nil {
			return nil, fmt.Errorf("lock keys: %w", err)
		}
	} else if err := lockKeys(ctx, tx, keys, false); err != nil {
		return nil, err
	}
	var named []string
	if err := tx.SelectContext(ctx, &named, referencedSQL, pq.Array(keys), pq.Array(types), pq.Array(ids)); err != nil {
		return nil, fmt.Errorf("check key references: %w", err)
	}
	free := make(map[string]bool, len(keys))
	for _, k := range keys {
		free[k] = true
	}
	for _, k := range named {
		delete(free, k)
	}
	return free, nil
}

// releasedKeys returns the keys among candidates (a row's previous blob
// key, its staged key, a key an event named) that are not empty and not
// keep, without repeats.
func releasedKeys(keep string, candidates ...string) []string {
	var out []string
	for _, k := range candidates {
		if k != "" && k != keep && !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}
