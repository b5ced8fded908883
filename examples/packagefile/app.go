package packagefile

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/events"
)

// Schema is the application's tables on the primary: a package registry
// whose files live on disk. It stands for the adopter's own schema; geo
// adds nothing to it.
const Schema = `
CREATE TABLE IF NOT EXISTS packages (
	id bigserial PRIMARY KEY,
	project_id bigint NOT NULL,
	name text NOT NULL,
	version text NOT NULL
);
CREATE TABLE IF NOT EXISTS package_files (
	id bigserial PRIMARY KEY,
	package_id bigint NOT NULL REFERENCES packages (id) ON DELETE CASCADE,
	file_name text NOT NULL,
	size bigint NOT NULL,
	revision int NOT NULL DEFAULT 1
);`

// CreateSchema creates the application's tables.
func CreateSchema(ctx context.Context, db *sqlx.DB) error {
	_, err := db.ExecContext(ctx, Schema)
	return err
}

// App is the primary application's package code: it writes rows and files
// and publishes replication events in the same transaction. This is the
// part of an application that geo asks adopters to touch: one Publish call
// per change, inside the change's transaction.
type App struct {
	DB        *sqlx.DB
	Storage   *blob.Bucket
	Publisher *events.Publisher
	// Adapter gives the keys; its ProjectIDs must be nil (the primary sees all).
	Adapter *Strategy
}

// AddFile stores a new file of package name@version in project, creating
// the package if needed, and returns the file's id.
func (a *App) AddFile(ctx context.Context, project int64, name, version, fileName string, data []byte) (int64, error) {
	tx, err := a.DB.BeginTxx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	var pkg int64
	err = tx.GetContext(ctx, &pkg, `SELECT id FROM packages WHERE project_id = $1 AND name = $2 AND version = $3`, project, name, version)
	if err != nil {
		if err := tx.GetContext(ctx, &pkg, `INSERT INTO packages (project_id, name, version) VALUES ($1, $2, $3) RETURNING id`, project, name, version); err != nil {
			return 0, fmt.Errorf("packagefile: add package: %w", err)
		}
	}
	var id int64
	if err := tx.GetContext(ctx, &id, `INSERT INTO package_files (package_id, file_name, size) VALUES ($1, $2, $3) RETURNING id`, pkg, fileName, len(data)); err != nil {
		return 0, fmt.Errorf("packagefile: add file: %w", err)
	}
	key := fmt.Sprintf("packages/%d/files/%d/%s", pkg, id, fileName)
	if err := a.write(ctx, key, data); err != nil {
		return 0, err
	}
	if _, err := a.Publisher.Publish(ctx, tx, "package_file", events.OpCreated, id, key); err != nil {
		return 0, err
	}
	return id, tx.Commit()
}

// ReplaceFile replaces a file's bytes in place.
func (a *App) ReplaceFile(ctx context.Context, id int64, data []byte) error {
	key, err := a.Adapter.BlobKey(ctx, id)
	if err != nil {
		return err
	}
	tx, err := a.DB.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `UPDATE package_files SET size = $2, revision = revision + 1 WHERE id = $1`, id, len(data)); err != nil {
		return fmt.Errorf("packagefile: replace file: %w", err)
	}
	if err := a.write(ctx, key, data); err != nil {
		return err
	}
	if _, err := a.Publisher.Publish(ctx, tx, "package_file", events.OpUpdated, id, key); err != nil {
		return err
	}
	return tx.Commit()
}

// DeleteFile deletes a file's row and bytes.
func (a *App) DeleteFile(ctx context.Context, id int64) error {
	key, err := a.Adapter.BlobKey(ctx, id)
	if err != nil {
		return err
	}
	tx, err := a.DB.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM package_files WHERE id = $1`, id); err != nil {
		return fmt.Errorf("packagefile: delete file: %w", err)
	}
	if _, err := a.Publisher.Publish(ctx, tx, "package_file", events.OpDeleted, id, key); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	return a.Storage.Remove(ctx, key)
}

func (a *App) write(ctx context.Context, key string, data []byte) error {
	w, err := a.Storage.Create(ctx, key, nil)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		w.Abort()
		return err
	}
	return w.Commit(ctx)
}
