// Package upload is the adapter that replicates user uploads (attachments)
// with geo, plus the application code that owns the uploads table (app.go).
package upload

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/geoframework/geo/strategy"
)

// Name is the replicable name of uploads. Never change or reuse it.
const Name = "upload"

// Strategy is the geo adapter for uploads.
type Strategy struct {
	DB *sqlx.DB // the primary's DB (on a secondary: the read-only replica)
	// ModelTypes is an optional scope: only uploads owned by these model
	// types (e.g. "Project") are replicated. nil means everything.
	ModelTypes []string

	mu      sync.Mutex
	rowStmt *sqlx.Stmt // rowQuery, prepared on first use
}

var (
	_ strategy.BlobStrategy = (*Strategy)(nil)
	_ strategy.Checksummer  = (*Strategy)(nil)
	_ strategy.BatchKeyer   = (*Strategy)(nil)
)

func (s *Strategy) Name() string { return Name }

// scope renders the scope as a SQL array parameter; NULL means no scope.
func (s *Strategy) scope() any {
	if s.ModelTypes == nil {
		return nil
	}
	return pq.StringArray(s.ModelTypes)
}

const inScope = `($2::text[] IS NULL OR model_type = ANY($2::text[]))`

func (s *Strategy) IDs(ctx context.Context, after int64, limit int) ([]int64, error) {
	var ids []int64
	err := s.DB.SelectContext(ctx, &ids,
		`SELECT id FROM uploads WHERE id > $1 AND `+inScope+` ORDER BY id LIMIT $3`,
		after, s.scope(), limit)
	if err != nil {
		return nil, fmt.Errorf("upload ids after %d: %w", after, err)
	}
	return ids, nil
}

const rowQuery = `SELECT ` + uploadColumns + ` FROM uploads WHERE id = $1 AND ` + inScope

// row reads one upload in scope. BlobKey runs once per blob the primary
// serves, so its query is prepared once instead of planned on every call
// (database/sql prepares it again on each pooled connection by itself).
func (s *Strategy) row(ctx context.Context, id int64) (Upload, error) {
	var u Upload
	st, err := s.rowStatement(ctx)
	if err == nil {
		err = st.GetContext(ctx, &u, id, s.scope())
	}
	if errors.Is(err, sql.ErrNoRows) {
		return u, fmt.Errorf("upload %d: %w", id, strategy.ErrNotFound)
	}
	if err != nil {
		return u, fmt.Errorf("upload %d: %w", id, err)
	}
	return u, nil
}

// rowStatement returns rowQuery prepared, preparing it on first use (not
// under the lock: a slow primary holds up only the callers that need it).
func (s *Strategy) rowStatement(ctx context.Context) (*sqlx.Stmt, error) {
	s.mu.Lock()
	st := s.rowStmt
	s.mu.Unlock()
	if st != nil {
		return st, nil
	}
	st, err := s.DB.PreparexContext(ctx, rowQuery)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rowStmt != nil { // another caller prepared it meanwhile
		_ = st.Close()
		return s.rowStmt, nil
	}
	s.rowStmt = st
	return st, nil
}

func (s *Strategy) BlobKey(ctx context.Context, id int64) (string, error) {
	u, err := s.row(ctx, id)
	if err != nil {
		return "", err
	}
	return u.Key(), nil
}

// BlobKeys returns the keys of the uploads among ids that exist in scope,
// in one query (strategy.BatchKeyer).
func (s *Strategy) BlobKeys(ctx context.Context, ids []int64) (map[int64]string, error) {
	var us []Upload
	err := s.DB.SelectContext(ctx, &us,
		`SELECT `+uploadColumns+` FROM uploads WHERE id = ANY($1::bigint[]) AND `+inScope, pq.Array(ids), s.scope())
	if err != nil {
		return nil, fmt.Errorf("upload keys: %w", err)
	}
	keys := make(map[int64]string, len(us))
	for _, u := range us {
		keys[u.ID] = u.Key()
	}
	return keys, nil
}

// BlobChecksum returns the SHA-256 recorded when the file was written.
func (s *Strategy) BlobChecksum(ctx context.Context, id int64) (string, error) {
	u, err := s.row(ctx, id)
	if err != nil {
		return "", err
	}
	return u.SHA256, nil
}
