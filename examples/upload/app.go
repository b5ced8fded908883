package upload

// This file is the application's own code, not part of the adapter: the
// uploads table and the code paths that create, replace and delete an
// upload. Each writes the file to storage, changes its row and publishes the
// geo event in the same transaction.

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/events"
)

const schema = `
CREATE TABLE IF NOT EXISTS uploads (
	id         bigserial   PRIMARY KEY,
	model_type text        NOT NULL CHECK (model_type ~ '^[A-Z][A-Za-z]{0,62}$'),
	model_id   bigint      NOT NULL CHECK (model_id > 0),
	secret     text        NOT NULL CHECK (secret ~ '^[0-9a-f]{32}$'),
	filename   text        NOT NULL,
	size       bigint      NOT NULL CHECK (size >= 0),
	sha256     text        NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS uploads_model ON uploads (model_type, model_id);
`

// CreateSchema creates the uploads table.
func CreateSchema(ctx context.Context, db *sqlx.DB) error {
	_, err := db.ExecContext(ctx, schema)
	return err
}

// Upload is one row of the uploads table.
type Upload struct {
	ID        int64  `db:"id"`
	ModelType string `db:"model_type"` // owner's type, e.g. "Project"
	ModelID   int64  `db:"model_id"`
	Secret    string `db:"secret"` // random path segment; new on every replace
	Filename  string `db:"filename"`
	Size      int64  `db:"size"`
	SHA256    string `db:"sha256"`
}

const uploadColumns = `id, model_type, model_id, secret, filename, size, sha256`

// Key is where the upload's bytes live in storage:
// uploads/<model type>/<model id>/<secret>/<filename>.
func (u Upload) Key() string {
	return "uploads/" + strings.ToLower(u.ModelType) + "/" +
		strconv.FormatInt(u.ModelID, 10) + "/" + u.Secret + "/" + u.Filename
}

var (
	modelTypeRE = regexp.MustCompile(`^[A-Z][A-Za-z]{0,62}$`)
	unsafeRE    = regexp.MustCompile(`[^A-Za-z0-9._-]`)
)

// cleanFilename makes a user-supplied name one safe key segment.
func cleanFilename(name string) string {
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	name = unsafeRE.ReplaceAllString(name, "_")
	if len(name) > 200 {
		name = name[len(name)-200:]
	}
	if name == "" || strings.Trim(name, ".") == "" {
		name = "file"
	}
	return name
}

func newSecret() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Uploads is the application's upload service on the primary.
type Uploads struct {
	DB        *sqlx.DB
	Storage   *blob.Bucket
	Publisher *events.Publisher
}

// writeFile stores body at u.Key() and fills in u's size and checksum.
func (s Uploads) writeFile(ctx context.Context, u *Upload, body io.Reader) error {
	w, err := s.Storage.Create(ctx, u.Key(), nil)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, body); err != nil {
		_ = w.Abort()
		return err
	}
	u.Size, u.SHA256 = w.Written()
	if err := w.Commit(ctx); err != nil {
		_ = w.Abort()
		return err
	}
	return nil
}

// Create stores a new upload owned by (modelType, modelID).
func (s Uploads) Create(ctx context.Context, modelType string, modelID int64, filename string, body io.Reader) (u Upload, err error) {
	if !modelTypeRE.MatchString(modelType) || modelID <= 0 {
		return u, fmt.Errorf("upload: invalid owner %q %d", modelType, modelID)
	}
	u = Upload{ModelType: modelType, ModelID: modelID, Secret: newSecret(), Filename: cleanFilename(filename)}
	if err := s.writeFile(ctx, &u, body); err != nil {
		return u, fmt.Errorf("upload: write file: %w", err)
	}
	defer func() { // the row did not commit: the file is garbage
		if err != nil {
			_ = s.Storage.Remove(context.WithoutCancel(ctx), u.Key())
		}
	}()
	tx, err := s.DB.BeginTxx(ctx, nil)
	if err != nil {
		return u, err
	}
	defer func() { _ = tx.Rollback() }()
	err = tx.GetContext(ctx, &u.ID, `INSERT INTO uploads (model_type, model_id, secret, filename, size, sha256)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`, u.ModelType, u.ModelID, u.Secret, u.Filename, u.Size, u.SHA256)
	if err != nil {
		return u, fmt.Errorf("upload: insert: %w", err)
	}
	if _, err = s.Publisher.Publish(ctx, tx, Name, events.OpCreated, u.ID, u.Key()); err != nil {
		return u, fmt.Errorf("upload: publish: %w", err)
	}
	return u, tx.Commit()
}

// Replace swaps upload id's bytes. The new bytes get a new secret, so the
// key changes and a cached URL to the old file stops working.
func (s Uploads) Replace(ctx context.Context, id int64, body io.Reader) (u Upload, err error) {
	tx, err := s.DB.BeginTxx(ctx, nil)
	if err != nil {
		return u, err
	}
	defer func() { _ = tx.Rollback() }()
	if err = tx.GetContext(ctx, &u, `SELECT `+uploadColumns+` FROM uploads WHERE id = $1 FOR UPDATE`, id); err != nil {
		return u, fmt.Errorf("upload %d: %w", id, err)
	}
	oldKey := u.Key()
	u.Secret = newSecret()
	if err = s.writeFile(ctx, &u, body); err != nil {
		return u, fmt.Errorf("upload %d: write file: %w", id, err)
	}
	defer func() {
		if err != nil {
			_ = s.Storage.Remove(context.WithoutCancel(ctx), u.Key())
		}
	}()
	if _, err = tx.ExecContext(ctx, `UPDATE uploads SET secret = $2, size = $3, sha256 = $4 WHERE id = $1`,
		id, u.Secret, u.Size, u.SHA256); err != nil {
		return u, fmt.Errorf("upload %d: update: %w", id, err)
	}
	if _, err = s.Publisher.Publish(ctx, tx, Name, events.OpUpdated, id, u.Key()); err != nil {
		return u, fmt.Errorf("upload %d: publish: %w", id, err)
	}
	if err = tx.Commit(); err != nil {
		return u, err
	}
	_ = s.Storage.Remove(ctx, oldKey) // best effort: an orphan file is harmless
	return u, nil
}

// Delete removes upload id and, after the commit, its file.
func (s Uploads) Delete(ctx context.Context, id int64) error {
	tx, err := s.DB.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	var u Upload
	err = tx.GetContext(ctx, &u, `DELETE FROM uploads WHERE id = $1 RETURNING `+uploadColumns, id)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("upload %d: %w", id, err)
	}
	if err != nil {
		return fmt.Errorf("upload %d: delete: %w", id, err)
	}
	if _, err := s.Publisher.Publish(ctx, tx, Name, events.OpDeleted, id, u.Key()); err != nil {
		return fmt.Errorf("upload %d: publish: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	return s.Storage.Remove(ctx, u.Key())
}
