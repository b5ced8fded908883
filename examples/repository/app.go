package repository

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	"github.com/jmoiron/sqlx"

	"github.com/geoframework/geo/events"
)

// CreateSchema creates the projects table in the primary's database.
func CreateSchema(ctx context.Context, db *sqlx.DB) error {
	_, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS projects (
		id bigserial PRIMARY KEY,
		group_id bigint NOT NULL,
		name text NOT NULL,
		disk_path text NOT NULL DEFAULT ''
	)`)
	return err
}

// App is the primary application's side: it keeps bare repositories under
// Root and publishes geo's events.
type App struct {
	DB        *sqlx.DB
	Root      string
	Publisher *events.Publisher
}

// DiskPath is where project id's repository lives, hashed-storage style
// (GitLab's @hashed layout): stable across renames of the project.
func DiskPath(id int64) string {
	h := sha256.Sum256([]byte(strconv.FormatInt(id, 10)))
	x := hex.EncodeToString(h[:])
	return "@hashed/" + x[:2] + "/" + x[2:4] + "/" + x + ".git"
}

// CreateProject inserts a project, creates its empty bare repository and
// publishes "created" in the insert's transaction.
func (a *App) CreateProject(ctx context.Context, groupID int64, name string) (int64, error) {
	tx, err := a.DB.BeginTxx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	var id int64
	if err := tx.GetContext(ctx, &id, `INSERT INTO projects (group_id, name) VALUES ($1, $2) RETURNING id`, groupID, name); err != nil {
		return 0, fmt.Errorf("create project: %w", err)
	}
	p := DiskPath(id)
	if _, err := tx.ExecContext(ctx, `UPDATE projects SET disk_path = $2 WHERE id = $1`, id, p); err != nil {
		return 0, fmt.Errorf("create project: %w", err)
	}
	dir := filepath.Join(a.Root, filepath.FromSlash(p))
	if out, err := exec.CommandContext(ctx, "git", "init", "--bare", "--quiet", dir).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("create project: git init: %v: %s", err, out)
	}
	if _, err := a.Publisher.Publish(ctx, tx, Name, events.OpCreated, id, p); err != nil {
		os.RemoveAll(dir)
		return 0, fmt.Errorf("create project: %w", err)
	}
	if err := tx.Commit(); err != nil {
		os.RemoveAll(dir)
		return 0, fmt.Errorf("create project: %w", err)
	}
	return id, nil
}

// Pushed is what the git server's post-receive hook calls after a push:
// it publishes "updated" for the project.
func (a *App) Pushed(ctx context.Context, id int64) error {
	tx, err := a.DB.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var p string
	if err := tx.GetContext(ctx, &p, `SELECT disk_path FROM projects WHERE id = $1`, id); err != nil {
		return fmt.Errorf("pushed %d: %w", id, err)
	}
	if _, err := a.Publisher.Publish(ctx, tx, Name, events.OpUpdated, id, p); err != nil {
		return fmt.Errorf("pushed %d: %w", id, err)
	}
	return tx.Commit()
}

// DeleteProject deletes a project and publishes "deleted" with its path in
// one transaction, then removes the repository.
func (a *App) DeleteProject(ctx context.Context, id int64) error {
	tx, err := a.DB.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var p string
	if err := tx.GetContext(ctx, &p, `DELETE FROM projects WHERE id = $1 RETURNING disk_path`, id); err != nil {
		return fmt.Errorf("delete project %d: %w", id, err)
	}
	if _, err := a.Publisher.Publish(ctx, tx, Name, events.OpDeleted, id, p); err != nil {
		return fmt.Errorf("delete project %d: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("delete project %d: %w", id, err)
	}
	return os.RemoveAll(filepath.Join(a.Root, filepath.FromSlash(p)))
}
