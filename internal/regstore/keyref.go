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
// ($2[i], $3[i]) releases key $1[i]; with each, the key space of the row
// naming it ($4[j] is the space of type $5[j]; "" for a type not listed:
// its references count in every space). Each column is probed through its
// own index (migration 0009) for all the keys at once; a key many rows
// share reads all their index entries.
const referencedSQL = `
SELECT DISTINCT x.key, coalesce(sp.space, '') AS space FROM (
  SELECT r.blob_key AS key, r.replicable, r.model_id FROM geo_registry r
  WHERE r.blob_key COLLATE "C" = ANY($1::text[])
  UNION ALL
  SELECT r.staged_key, r.replicable, r.model_id FROM geo_registry r
  WHERE r.staged_key COLLATE "C" = ANY($1::text[])
) x
LEFT JOIN unnest($5::text[], $4::text[]) AS sp(replicable, space) ON sp.replicable = x.replicable
WHERE NOT EXISTS (
  SELECT 1 FROM unnest($1::text[], $2::text[], $3::bigint[]) AS e(key, replicable, model_id)
  WHERE e.key = x.key AND e.replicable = x.replicable AND e.model_id = x.model_id)`

// release is a key that a registry row stops naming (its old blob key
// after an update, its staged key, its keys when it is deleted).
type release struct {
	key    string
	rowKey Key
	// typ is the type whose key space key is in, when rowKey is zero (a
	// check that counts the row's own references too); else rowKey's.
	typ string
}

// typeOf returns the type whose key space r's key is in.
func (r release) typeOf() string {
	if r.typ != "" {
		return r.typ
	}
	return r.rowKey.Replicable
}

// Key spaces. Each kind of replicable keeps its data in a storage of its
// own (blobs in the site's blob storage, git repositories under the
// repository root), so a key names bytes only within its kind's storage:
// R7 holds per key space. Options.KeySpaces maps each type to its space;
// a row of a type in another space never keeps a key's bytes, and a type
// the map does not list (or a store without the map) shares every space,
// the safe side. Locks stay per key string: two spaces using one string
// only serialise their removals.

// spaceKey is a key within its key space.
type spaceKey struct{ space, key string }

// keyFree is the set of released keys that no row of their space names:
// their bytes may be removed.
type keyFree struct {
	set    map[spaceKey]bool
	spaces map[string]string
}

// has reports whether key, released by a row of type typ, is free.
func (f keyFree) has(typ, key string) bool { return f.set[spaceKey{f.spaces[typ], key}] }

// take is has, and forgets key so that a second release of it in the same
// space is not removed twice.
func (f keyFree) take(typ, key string) bool {
	k := spaceKey{f.spaces[typ], key}
	ok := f.set[k]
	delete(f.set, k)
	return ok
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
// row of their key space names any more, apart from the rows releasing
// them: their bytes may be removed in tx, before it commits. The locks
// are held until tx ends.
func (s *Store) unreferenced(ctx context.Context, tx *sqlx.Tx, rels []release) (keyFree, error) {
	return s.checkReleased(ctx, tx, rels, false)
}

// checkReleased is unreferenced; bulk takes the bulk lock instead of one
// lock per key.
func (s *Store) checkReleased(ctx context.Context, tx *sqlx.Tx, rels []release, bulk bool) (keyFree, error) {
	free := keyFree{set: make(map[spaceKey]bool, len(rels)), spaces: s.spaces}
	if len(rels) == 0 {
		return free, nil
	}
	keys, types := make([]string, len(rels)), make([]string, len(rels))
	ids := make([]int64, len(rels))
	for i, r := range rels {
		keys[i], types[i], ids[i] = r.key, r.rowKey.Replicable, r.rowKey.ModelID
	}
	if bulk {
		if _, err := tx.ExecContext(ctx, lockBulkSQL); err != nil {
			return free, fmt.Errorf("lock keys: %w", err)
		}
	} else if err := lockKeys(ctx, tx, keys, false); err != nil {
		return free, err
	}
	var named []struct {
		Key   string `db:"key"`
		Space string `db:"space"`
	}
	if err := tx.SelectContext(ctx, &named, referencedSQL, pq.Array(keys), pq.Array(types), pq.Array(ids),
		pq.Array(s.spaceNames), pq.Array(s.spaceTypes)); err != nil {
		return free, fmt.Errorf("check key references: %w", err)
	}
	// A reference of an unlisted type ("") counts in every space; a key
	// released by an unlisted type is referenced by a row of any space.
	inAll := map[string]bool{}
	bySpace := map[spaceKey]bool{}
	for _, n := range named {
		if n.Space == "" {
			inAll[n.Key] = true
		}
		bySpace[spaceKey{n.Space, n.Key}] = true
		bySpace[spaceKey{"", n.Key}] = true
	}
	for _, r := range rels {
		k := spaceKey{s.spaces[r.typeOf()], r.key}
		if !inAll[r.key] && !bySpace[k] {
			free.set[k] = true
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
