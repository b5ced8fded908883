package lfs

// This file is the application's own code, not part of the adapter: the
// lfs_objects table and the code paths that store, re-point and delete an
// object. Each changes its row and publishes the geo event in the same
// transaction (the outbox).
//
// Objects are content-addressed, so several rows may name one file, and
// the application's own rule is the one geo keeps on every secondary:
// bytes are removed only when no row references them. The reference check
// and the removal must be atomic against a concurrent store of the same
// object, or a store that found the file present (and so did not write
// it) commits a row naming bytes that are then removed. Here a
// transaction-level advisory lock on the oid does it:
//
//   - Store and Repoint take the lock before they look for the file, hold
//     it while they write it if absent, and keep it until the row naming
//     the oid has committed.
//   - Collect, run after a delete or a re-point has committed, takes the
//     lock, then checks that no row names the oid, then removes the file,
//     and only then lets the lock go.
//
// So a row naming the oid either committed before Collect took the lock
// (Collect sees it and keeps the file) or is made after Collect released
// it (its Store finds the file gone and writes it again). Collect's check
// must read a snapshot taken after the lock was granted: READ COMMITTED
// (PostgreSQL's default) takes one per statement; under REPEATABLE READ
// the transaction's snapshot would be the lock statement's own, older than
// a store that committed while Collect waited.
//
// A crash between a delete's commit and its Collect leaves an
// unreferenced file behind: garbage, never a loss. A periodic sweep
// calling Collect for every oid on storage clears it (not shown).

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"regexp"

	"github.com/jmoiron/sqlx"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/events"
)

const schema = `
CREATE TABLE IF NOT EXISTS lfs_objects (
	id         bigserial PRIMARY KEY,
	project_id bigint NOT NULL,
	oid        text   NOT NULL CHECK (oid ~ '^[0-9a-f]{64}$'),
	size       bigint NOT NULL CHECK (size >= 0)
);
CREATE INDEX IF NOT EXISTS lfs_objects_oid ON lfs_objects (oid);
`

// CreateSchema creates the lfs_objects table. One row is one project's
// reference to an object; rows of equal content share an oid.
func CreateSchema(ctx context.Context, db *sqlx.DB) error {
	_, err := db.ExecContext(ctx, schema)
	return err
}

// ErrInvalidOID is returned (wrapped) for an oid that is not 64 lowercase
// hex digits.
var ErrInvalidOID = errors.New("lfs: invalid oid")

// ErrContentMismatch is returned (wrapped) when uploaded bytes do not
// hash to the oid or size the client announced, or a stored object has
// another size than announced.
var ErrContentMismatch = errors.New("lfs: content does not match its oid")

var oidRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// lockOID takes the transaction-level advisory lock of an oid (released
// at commit or rollback). A hash collision between two oids only makes
// them wait for each other.
const lockOID = `SELECT pg_advisory_xact_lock(hashtextextended('lfs_object:' || $1, 0))`

// Objects is the application's LFS object service on the primary.
type Objects struct {
	DB        *sqlx.DB
	Storage   *blob.Bucket
	Publisher *events.Publisher
}

// Store records that project holds the object oid of size bytes, reading
// its content from body unless the object is already stored (then body is
// not read: content-addressed bytes at the oid's key are the same bytes),
// and returns the new row's id. The content must hash to oid and have
// size bytes, or nothing is recorded and the error matches
// ErrContentMismatch.
func (o Objects) Store(ctx context.Context, project int64, oid string, size int64, body io.Reader) (int64, error) {
	if !oidRE.MatchString(oid) {
		return 0, fmt.Errorf("%w %q", ErrInvalidOID, oid)
	}
	var id int64
	wrote, err := o.inTx(ctx, func(tx *sqlx.Tx) (bool, error) {
		wrote, err := o.ensure(ctx, tx, oid, size, body)
		if err != nil {
			return wrote, err
		}
		if err := tx.GetContext(ctx, &id, `INSERT INTO lfs_objects (project_id, oid, size) VALUES ($1, $2, $3) RETURNING id`,
			project, oid, size); err != nil {
			return wrote, fmt.Errorf("lfs: insert: %w", err)
		}
		if _, err := o.Publisher.Publish(ctx, tx, Name, events.OpCreated, id, Key(oid)); err != nil {
			return wrote, fmt.Errorf("lfs: publish: %w", err)
		}
		return wrote, nil
	})
	if err != nil && wrote {
		// The bytes this call wrote may now be named by nothing.
		_ = o.Collect(context.WithoutCancel(ctx), oid)
	}
	return id, err
}

// Repoint makes record id name the object oid of size bytes instead of
// the one it named (storing the new content from body as Store does),
// then collects the old object if no row names it any more.
func (o Objects) Repoint(ctx context.Context, id int64, oid string, size int64, body io.Reader) error {
	if !oidRE.MatchString(oid) {
		return fmt.Errorf("%w %q", ErrInvalidOID, oid)
	}
	var old string
	wrote, err := o.inTx(ctx, func(tx *sqlx.Tx) (bool, error) {
		// The row lock first, then the oid's: no path takes them the
		// other way round, so the two never deadlock.
		err := tx.GetContext(ctx, &old, `SELECT oid FROM lfs_objects WHERE id = $1 FOR UPDATE`, id)
		if errors.Is(err, sql.ErrNoRows) {
			return false, fmt.Errorf("lfs object %d: %w", id, err)
		}
		if err != nil {
			return false, fmt.Errorf("lfs object %d: %w", id, err)
		}
		wrote, err := o.ensure(ctx, tx, oid, size, body)
		if err != nil {
			return wrote, err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE lfs_objects SET oid = $2, size = $3 WHERE id = $1`, id, oid, size); err != nil {
			return wrote, fmt.Errorf("lfs object %d: update: %w", id, err)
		}
		if _, err := o.Publisher.Publish(ctx, tx, Name, events.OpUpdated, id, Key(oid)); err != nil {
			return wrote, fmt.Errorf("lfs object %d: publish: %w", id, err)
		}
		return wrote, nil
	})
	if err != nil {
		if wrote {
			_ = o.Collect(context.WithoutCancel(ctx), oid)
		}
		return err
	}
	if old == oid {
		return nil
	}
	return o.Collect(ctx, old)
}

// Delete removes record id, publishing its deleted event, then collects
// its object if no other row names it.
func (o Objects) Delete(ctx context.Context, id int64) error {
	var oid string
	_, err := o.inTx(ctx, func(tx *sqlx.Tx) (bool, error) {
		err := tx.GetContext(ctx, &oid, `DELETE FROM lfs_objects WHERE id = $1 RETURNING oid`, id)
		if errors.Is(err, sql.ErrNoRows) {
			return false, fmt.Errorf("lfs object %d: %w", id, err)
		}
		if err != nil {
			return false, fmt.Errorf("lfs object %d: delete: %w", id, err)
		}
		if _, err := o.Publisher.Publish(ctx, tx, Name, events.OpDeleted, id, Key(oid)); err != nil {
			return false, fmt.Errorf("lfs object %d: publish: %w", id, err)
		}
		return false, nil
	})
	if err != nil {
		return err
	}
	return o.Collect(ctx, oid)
}

// Collect removes the bytes of object oid from storage if no row names
// it, atomically against a concurrent Store or Repoint of the same object
// (see the top of this file). It is safe to call at any time and for any
// oid.
func (o Objects) Collect(ctx context.Context, oid string) error {
	if !oidRE.MatchString(oid) {
		return fmt.Errorf("%w %q", ErrInvalidOID, oid)
	}
	_, err := o.inTx(ctx, func(tx *sqlx.Tx) (bool, error) {
		if _, err := tx.ExecContext(ctx, lockOID, oid); err != nil {
			return false, fmt.Errorf("lfs: lock %s: %w", oid, err)
		}
		var named bool
		if err := tx.GetContext(ctx, &named, `SELECT EXISTS (SELECT 1 FROM lfs_objects WHERE oid = $1)`, oid); err != nil {
			return false, fmt.Errorf("lfs: references of %s: %w", oid, err)
		}
		if named {
			return false, nil
		}
		// Removed while the lock is held: no store of this oid can have
		// found the file present and be about to commit a row naming it.
		if err := o.Storage.Remove(ctx, Key(oid)); err != nil {
			return false, fmt.Errorf("lfs: remove %s: %w", oid, err)
		}
		return false, nil
	})
	return err
}

// ensure takes oid's lock in tx and makes sure its bytes are stored,
// writing them from body if absent. It reports whether it wrote them.
func (o Objects) ensure(ctx context.Context, tx *sqlx.Tx, oid string, size int64, body io.Reader) (bool, error) {
	if _, err := tx.ExecContext(ctx, lockOID, oid); err != nil {
		return false, fmt.Errorf("lfs: lock %s: %w", oid, err)
	}
	key := Key(oid)
	info, err := o.Storage.Stat(ctx, key)
	if err == nil {
		if info.Size != size {
			return false, fmt.Errorf("%w: %s is stored with %d bytes, announced %d", ErrContentMismatch, oid, info.Size, size)
		}
		return false, nil
	}
	if !errors.Is(err, blob.ErrNotExist) {
		return false, fmt.Errorf("lfs: stat %s: %w", oid, err)
	}
	w, err := o.Storage.Create(ctx, key, nil)
	if err != nil {
		return false, fmt.Errorf("lfs: write %s: %w", oid, err)
	}
	if _, err := io.Copy(w, body); err != nil {
		_ = w.Abort()
		return false, fmt.Errorf("lfs: write %s: %w", oid, err)
	}
	if n, sum := w.Written(); n != size || sum != oid {
		_ = w.Abort()
		return false, fmt.Errorf("%w: got %d bytes sha256 %s, announced %d bytes %s", ErrContentMismatch, n, sum, size, oid)
	}
	if err := w.Commit(ctx); err != nil {
		_ = w.Abort()
		return false, fmt.Errorf("lfs: write %s: %w", oid, err)
	}
	return true, nil
}

// inTx runs f in a READ COMMITTED transaction (see the top of this file)
// and commits it if f succeeds. It returns f's first result whatever
// happens, so callers learn whether bytes were written.
func (o Objects) inTx(ctx context.Context, f func(tx *sqlx.Tx) (bool, error)) (bool, error) {
	tx, err := o.DB.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return false, err
	}
	defer func() { _ = tx.Rollback() }()
	wrote, err := f(tx)
	if err != nil {
		return wrote, err
	}
	return wrote, tx.Commit()
}
