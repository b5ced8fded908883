package registry

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
// Every transaction takes its row locks before its key locks, and key
// locks in one statement in the order of their lock ids, so row and key
// locks never wait for each other in a cycle.

// lockKeysSQL takes the transaction-level advisory locks of the keys in
// $1, in lock id order. The lock's first half names the schema, so two
// tracking schemas in one database (two sites' storages) do not share
// locks; the second is the key's hash (a collision only serialises two
// keys' removals).
const lockKeysSQL = `
SELECT count(pg_advisory_xact_lock(hashtext('geo_registry_key:' || current_schema()), h))
FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest($1::text[]) AS t(k) ORDER BY 1) s`

// referencedSQL returns the keys among $1 that some registry row names
// (blob_key or staged_key), not counting the rows releasing that key: row
// ($2[i], $3[i]) releases key $1[i]. Both columns are answered by their
// own index (migration 0009).
const referencedSQL = `
SELECT DISTINCT k.key FROM unnest($1::text[]) AS k(key)
WHERE EXISTS (
  SELECT 1 FROM geo_registry r
  WHERE (r.blob_key COLLATE "C" = k.key OR r.staged_key COLLATE "C" = k.key)
    AND NOT EXISTS (
      SELECT 1 FROM unnest($1::text[], $2::text[], $3::bigint[]) AS x(key, replicable, model_id)
      WHERE x.key = k.key AND x.replicable = r.replicable AND x.model_id = r.model_id))`

// release is a key that a registry row stops naming (its old blob key
// after an update, its staged key, its keys when it is deleted).
type release struct {
	key    string
	rowKey Key
}

// lockKeys takes the advisory locks of keys in tx (see lockKeysSQL).
func lockKeys(ctx context.Context, tx *sqlx.Tx, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, lockKeysSQL, pq.Array(keys)); err != nil {
		return fmt.Errorf("lock keys: %w", err)
	}
	return nil
}

// unreferenced locks the keys of rels and returns those that no registry
// row names any more, apart from the rows releasing them: their bytes may
// be removed in tx, before it commits. The lock is held until tx ends.
func unreferenced(ctx context.Context, tx *sqlx.Tx, rels []release) (map[string]bool, error) {
	if len(rels) == 0 {
		return nil, nil
	}
	keys, types := make([]string, len(rels)), make([]string, len(rels))
	ids := make([]int64, len(rels))
	for i, r := range rels {
		keys[i], types[i], ids[i] = r.key, r.rowKey.Replicable, r.rowKey.ModelID
	}
	if err := lockKeys(ctx, tx, keys); err != nil {
		return nil, err
	}
	var named []string
	if err := tx.SelectContext(ctx, &named, referencedSQL, pq.Array(keys), pq.Array(types), pq.Array(ids)); err != nil {
		return nil, fmt.Errorf("check key references: %w", err)
	}
	free := make(map[string]bool, len(keys))
	for _, k := range keys {
		if !slices.Contains(named, k) {
			free[k] = true
		}
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
