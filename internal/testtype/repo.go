package testtype

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/internal/gitrepo"
	"github.com/geoframework/geo/strategy"
)

// RepoSchema creates the repositories table (named by RepoType.Table) on
// the primary: one row per repository, its path under the repository
// root, and a region a scope can select on.
func RepoSchema(table string) string {
	return fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %[1]s (
	id bigserial PRIMARY KEY,
	path text NOT NULL DEFAULT '',
	region int NOT NULL DEFAULT 0
)`, pq.QuoteIdentifier(table))
}

// RepoType is a RepositoryStrategy over a repositories table.
type RepoType struct {
	TypeName string
	Table    string
	DB       *sqlx.DB
	// Regions narrows the scope: only repositories whose region is
	// listed. Nil means every one.
	Regions []int
}

// Name implements strategy.RepositoryStrategy.
func (t *RepoType) Name() string { return t.TypeName }

func (t *RepoType) scope(arg int) (string, []any) {
	if t.Regions == nil {
		return "", nil
	}
	r := make([]int64, len(t.Regions))
	for i, v := range t.Regions {
		r[i] = int64(v)
	}
	return fmt.Sprintf(" AND region = ANY($%d)", arg), []any{pq.Array(r)}
}

// IDs implements strategy.RepositoryStrategy.
func (t *RepoType) IDs(ctx context.Context, after int64, limit int) ([]int64, error) {
	scope, extra := t.scope(3)
	q := fmt.Sprintf(`SELECT id FROM %s WHERE id > $1%s ORDER BY id LIMIT $2`, pq.QuoteIdentifier(t.Table), scope)
	var ids []int64
	err := t.DB.SelectContext(ctx, &ids, q, append([]any{after, limit}, extra...)...)
	return ids, err
}

// RepositoryPath implements strategy.RepositoryStrategy.
func (t *RepoType) RepositoryPath(ctx context.Context, id int64) (string, error) {
	scope, extra := t.scope(2)
	q := fmt.Sprintf(`SELECT path FROM %s WHERE id = $1%s`, pq.QuoteIdentifier(t.Table), scope)
	var p string
	err := t.DB.GetContext(ctx, &p, q, append([]any{id}, extra...)...)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("%s %d: %w", t.TypeName, id, strategy.ErrNotFound)
	}
	return p, err
}

// RepoApp is the primary application's side of a repository type: it
// creates, pushes to and deletes repositories under Root and publishes
// their events (a push's "updated" after the push, as a git server's
// post-receive hook does).
type RepoApp struct {
	Type      *RepoType // unscoped
	Root      string    // the primary's repository root
	Publisher *events.Publisher
	Git       *gitrepo.Git
	// CommitSize is the size of the file each commit writes; 0 means 256.
	CommitSize int
}

// RepoPathOf is the repository path of record id: hashed-storage style.
func (a *RepoApp) RepoPathOf(id int64) string {
	s := fmt.Sprintf("%04x", id%0x10000)
	return a.Type.Table + "/" + s[:2] + "/" + s[2:] + "/" + strconv.FormatInt(id, 10) + ".git"
}

// Dir is the absolute path of record id's repository on the primary.
func (a *RepoApp) Dir(ctx context.Context, id int64) (string, error) {
	rel, err := a.Type.RepositoryPath(ctx, id)
	if err != nil {
		return "", err
	}
	return filepath.Join(a.Root, rel), nil
}

func (a *RepoApp) size() int {
	if a.CommitSize > 0 {
		return a.CommitSize
	}
	return 256
}

// Create inserts a repository in region with commits commits on main (at
// least one) and publishes "created".
func (a *RepoApp) Create(ctx context.Context, region, commits int) (int64, error) {
	tx, err := a.Type.DB.BeginTxx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	var id int64
	if err := tx.GetContext(ctx, &id, fmt.Sprintf(`INSERT INTO %s (region) VALUES ($1) RETURNING id`, pq.QuoteIdentifier(a.Type.Table)), region); err != nil {
		return 0, err
	}
	rel := a.RepoPathOf(id)
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`UPDATE %s SET path = $2 WHERE id = $1`, pq.QuoteIdentifier(a.Type.Table)), id, rel); err != nil {
		return 0, err
	}
	dir := filepath.Join(a.Root, rel)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return 0, err
	}
	if err := gitrepo.MakeRepo(ctx, a.Git, dir, gitrepo.RepoShape{Commits: max(commits, 1), FileSize: a.size(), Seed: uint64(id)}); err != nil {
		return 0, err
	}
	if _, err := a.Publisher.Publish(ctx, tx, a.Type.TypeName, events.OpCreated, id, rel); err != nil {
		return 0, err
	}
	return id, tx.Commit()
}

// published runs change on record id's repository, then publishes
// "updated".
func (a *RepoApp) published(ctx context.Context, id int64, change func(dir string) error) error {
	dir, err := a.Dir(ctx, id)
	if err != nil {
		return err
	}
	if err := change(dir); err != nil {
		return err
	}
	return a.Updated(ctx, id)
}

// Updated publishes "updated" for record id (after a push).
func (a *RepoApp) Updated(ctx context.Context, id int64) error {
	rel, err := a.Type.RepositoryPath(ctx, id)
	if err != nil {
		return err
	}
	tx, err := a.Type.DB.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := a.Publisher.Publish(ctx, tx, a.Type.TypeName, events.OpUpdated, id, rel); err != nil {
		return err
	}
	return tx.Commit()
}

// Push adds n commits to branch (created from main when missing) and
// publishes "updated".
func (a *RepoApp) Push(ctx context.Context, id int64, branch string, n int) error {
	return a.published(ctx, id, func(dir string) error {
		ref := "refs/heads/" + branch
		if _, err := gitrepo.RunGit(ctx, a.Git, dir, "rev-parse", "--verify", "--quiet", ref); err != nil {
			if _, err := gitrepo.RunGit(ctx, a.Git, dir, "update-ref", ref, "refs/heads/main"); err != nil {
				return err
			}
		}
		for range n {
			if err := gitrepo.AddCommit(ctx, a.Git, dir, ref, a.size()); err != nil {
				return err
			}
		}
		return nil
	})
}

// ForcePush rewrites main's history: main goes back one commit and gets a
// new commit instead (the old tip becomes unreachable), then "updated".
func (a *RepoApp) ForcePush(ctx context.Context, id int64) error {
	return a.published(ctx, id, func(dir string) error {
		parent, err := gitrepo.RunGit(ctx, a.Git, dir, "rev-parse", "refs/heads/main~1")
		if err != nil {
			return err
		}
		if _, err := gitrepo.RunGit(ctx, a.Git, dir, "update-ref", "refs/heads/main", parent); err != nil {
			return err
		}
		return gitrepo.AddCommit(ctx, a.Git, dir, "refs/heads/main", a.size())
	})
}

// DeleteBranch deletes branch and publishes "updated".
func (a *RepoApp) DeleteBranch(ctx context.Context, id int64, branch string) error {
	return a.published(ctx, id, func(dir string) error {
		_, err := gitrepo.RunGit(ctx, a.Git, dir, "update-ref", "-d", "refs/heads/"+branch)
		return err
	})
}

// Delete removes a repository's row and directory and publishes "deleted"
// with its path. With publish false it deletes silently (a missed event).
func (a *RepoApp) Delete(ctx context.Context, id int64, publish bool) error {
	rel, err := a.DeleteRecord(ctx, id, publish)
	if err != nil {
		return err
	}
	return os.RemoveAll(filepath.Join(a.Root, rel))
}

// DeleteRecord is Delete without removing the directory (the caller does,
// later): it returns the repository's path.
func (a *RepoApp) DeleteRecord(ctx context.Context, id int64, publish bool) (string, error) {
	tx, err := a.Type.DB.BeginTxx(ctx, nil)
	if err != nil {
		return "", err
	}
	defer tx.Rollback()
	var rel string
	if err := tx.GetContext(ctx, &rel, fmt.Sprintf(`DELETE FROM %s WHERE id = $1 RETURNING path`, pq.QuoteIdentifier(a.Type.Table)), id); err != nil {
		return "", fmt.Errorf("delete %d: %w", id, err)
	}
	if publish {
		if _, err := a.Publisher.Publish(ctx, tx, a.Type.TypeName, events.OpDeleted, id, rel); err != nil {
			return "", err
		}
	}
	return rel, tx.Commit()
}

// SetRegion moves a repository to another region (in or out of a scope).
func (a *RepoApp) SetRegion(ctx context.Context, id int64, region int) error {
	_, err := a.Type.DB.ExecContext(ctx, fmt.Sprintf(`UPDATE %s SET region = $2 WHERE id = $1`, pq.QuoteIdentifier(a.Type.Table)), id, region)
	return err
}
