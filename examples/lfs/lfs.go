// Package lfs replicates Git LFS objects with geo: a content-addressed
// blob type, the layout of LFS servers, container registries and
// deduplicating artifact stores. An object's bytes live at a key made
// from their SHA-256 (the oid), so every record with the same content
// names the same key, and a key comes back when its content does.
//
// The whole adapter is this file; app.go is the application's own code
// (the lfs_objects table and the paths that store, re-point and delete an
// object), and lfs_test.go the one-call conformance test. See [Adding a
// blob type], "Content-addressed storage".
//
// [Adding a blob type]: https://github.com/geoframework/geo/blob/main/docs/adding-a-blob-type.md
package lfs

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/geoframework/geo/strategy"
)

// Name is the replicable name of LFS objects. Never change or reuse it.
const Name = "lfs_object"

// Key is where the bytes of object oid live, on the primary and on every
// secondary: lfs/<oid[0:2]>/<oid[2:4]>/<oid>. oid is 64 lowercase hex
// digits (the table's CHECK constraint holds every stored one to that).
func Key(oid string) string { return "lfs/" + oid[0:2] + "/" + oid[2:4] + "/" + oid }

// Strategy is the geo adapter for LFS objects. Records with equal content
// share a key, which geo allows: records naming one key at the same time
// name the same bytes, since the key is the bytes' SHA-256.
type Strategy struct {
	DB *sqlx.DB // the primary's DB (on a secondary: the read-only replica)
	// ProjectIDs narrows a secondary to these projects' objects (selective
	// sync); nil means every project.
	ProjectIDs []int64
}

var (
	_ strategy.BlobStrategy = (*Strategy)(nil)
	_ strategy.BatchKeyer   = (*Strategy)(nil)
	_ strategy.Checksummer  = (*Strategy)(nil)
)

// Name implements strategy.BlobStrategy.
func (s *Strategy) Name() string { return Name }

const inScope = `($2::bigint[] IS NULL OR project_id = ANY($2::bigint[]))`

// IDs implements strategy.BlobStrategy.
func (s *Strategy) IDs(ctx context.Context, after int64, limit int) ([]int64, error) {
	var ids []int64
	err := s.DB.SelectContext(ctx, &ids, `SELECT id FROM lfs_objects WHERE id > $1 AND `+inScope+` ORDER BY id LIMIT $3`,
		after, pq.Array(s.ProjectIDs), limit)
	if err != nil {
		return nil, fmt.Errorf("lfs object ids after %d: %w", after, err)
	}
	return ids, nil
}

// oid returns record id's oid, in scope.
func (s *Strategy) oid(ctx context.Context, id int64) (string, error) {
	var oid string
	err := s.DB.GetContext(ctx, &oid, `SELECT oid FROM lfs_objects WHERE id = $1 AND `+inScope, id, pq.Array(s.ProjectIDs))
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("lfs object %d: %w", id, strategy.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("lfs object %d: %w", id, err)
	}
	return oid, nil
}

// BlobKey implements strategy.BlobStrategy.
func (s *Strategy) BlobKey(ctx context.Context, id int64) (string, error) {
	oid, err := s.oid(ctx, id)
	if err != nil {
		return "", err
	}
	return Key(oid), nil
}

// BlobKeys implements strategy.BatchKeyer: the keys of the objects among
// ids in scope, in one query.
func (s *Strategy) BlobKeys(ctx context.Context, ids []int64) (map[int64]string, error) {
	var rows []struct {
		ID  int64  `db:"id"`
		OID string `db:"oid"`
	}
	err := s.DB.SelectContext(ctx, &rows, `SELECT id, oid FROM lfs_objects WHERE id = ANY($1::bigint[]) AND `+inScope,
		pq.Array(ids), pq.Array(s.ProjectIDs))
	if err != nil {
		return nil, fmt.Errorf("lfs object keys: %w", err)
	}
	keys := make(map[int64]string, len(rows))
	for _, r := range rows {
		keys[r.ID] = Key(r.OID)
	}
	return keys, nil
}

// BlobChecksum implements strategy.Checksummer: an object's oid is the
// SHA-256 of its bytes, so the primary never reads them to checksum them.
func (s *Strategy) BlobChecksum(ctx context.Context, id int64) (string, error) {
	return s.oid(ctx, id)
}
