// Package packagefile replicates package files, the first blob type: the
// whole adapter is this file. See [Adding a blob type].
//
// [Adding a blob type]: https://github.com/geoframework/geo/blob/main/docs/adding-a-blob-type.md
package packagefile

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/geoframework/geo/strategy"
)

// Strategy is the "package_file" blob type over the packages and
// package_files tables.
type Strategy struct {
	DB *sqlx.DB
	// ProjectIDs narrows a secondary to these projects' packages (selective
	// sync); nil means every project.
	ProjectIDs []int64
}

// Name implements strategy.BlobStrategy.
func (s *Strategy) Name() string { return "package_file" }

// IDs implements strategy.BlobStrategy.
func (s *Strategy) IDs(ctx context.Context, after int64, limit int) ([]int64, error) {
	var ids []int64
	err := s.DB.SelectContext(ctx, &ids, `
		SELECT f.id FROM package_files f JOIN packages p ON p.id = f.package_id
		WHERE f.id > $1 AND ($3::bigint[] IS NULL OR p.project_id = ANY($3))
		ORDER BY f.id LIMIT $2`, after, limit, pq.Array(s.ProjectIDs))
	return ids, err
}

// BlobKey implements strategy.BlobStrategy.
func (s *Strategy) BlobKey(ctx context.Context, id int64) (string, error) {
	var f struct {
		PackageID int64  `db:"package_id"`
		FileName  string `db:"file_name"`
	}
	err := s.DB.GetContext(ctx, &f, `
		SELECT f.package_id, f.file_name FROM package_files f JOIN packages p ON p.id = f.package_id
		WHERE f.id = $1 AND ($2::bigint[] IS NULL OR p.project_id = ANY($2))`, id, pq.Array(s.ProjectIDs))
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("package_file %d: %w", id, strategy.ErrNotFound)
	}
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("packages/%d/files/%d/%s", f.PackageID, id, f.FileName), nil
}
