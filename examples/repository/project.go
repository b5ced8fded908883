// Package repository is the worked example of a repository type: projects
// whose git repositories geo replicates beside files. project.go is the
// whole adapter ("Adding a repository type",
// https://github.com/geoframework/geo/blob/main/docs/adding-a-repository-type.md);
// app.go is the application side that creates projects, reports pushes
// and deletes projects, publishing geo's events in its own transactions.
package repository

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/geoframework/geo/strategy"
)

// Name is the type's stable name, stored in registry rows and events.
const Name = "project_repository"

// Strategy is the adapter: project ids and each project's repository path.
type Strategy struct {
	DB *sqlx.DB
	// GroupIDs narrows the scope to projects of these groups; nil means
	// every project.
	GroupIDs []int64
}

// Name implements strategy.RepositoryStrategy.
func (s *Strategy) Name() string { return Name }

// IDs implements strategy.RepositoryStrategy: ascending ids in scope.
func (s *Strategy) IDs(ctx context.Context, after int64, limit int) ([]int64, error) {
	var ids []int64
	err := s.DB.SelectContext(ctx, &ids, `SELECT id FROM projects
		WHERE id > $1 AND ($3::bigint[] IS NULL OR group_id = ANY($3))
		ORDER BY id LIMIT $2`, after, limit, pq.Array(s.GroupIDs))
	if err != nil {
		return nil, fmt.Errorf("project ids: %w", err)
	}
	return ids, nil
}

// RepositoryPath implements strategy.RepositoryStrategy: the project's
// disk path, or strategy.ErrNotFound when it is gone or out of scope.
func (s *Strategy) RepositoryPath(ctx context.Context, id int64) (string, error) {
	var p string
	err := s.DB.GetContext(ctx, &p, `SELECT disk_path FROM projects
		WHERE id = $1 AND ($2::bigint[] IS NULL OR group_id = ANY($2))`, id, pq.Array(s.GroupIDs))
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("project %d: %w", id, strategy.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("project %d: %w", id, err)
	}
	return p, nil
}
