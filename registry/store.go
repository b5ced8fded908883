package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// ErrNotFound is returned (wrapped) by Get when no registry row exists for
// the key.
var ErrNotFound = errors.New("row not found")

// Options configures a Store. The zero value gives the defaults.
type Options struct {
	// Now is the clock of the admin actions (the time they record on the
	// rows they change). nil means time.Now.
	Now func() time.Time
}

// Store reads a secondary's registry (its tracking database) and runs the
// operator's actions on it: row lookups, counts, failures, the processes'
// heartbeats, and resync, reverify, pause and resume. It is what admin
// tools and the status page use; the engines' claims, leases and settles
// are not here (they are geo's own, and keep rules R1–R7). It expects the
// tracking migrations (MigrateTracking) in the connection's schema.
//
// A Store is safe for concurrent use, beside running secondaries.
type Store struct {
	db  *sqlx.DB
	now func() time.Time
}

// NewStore returns a Store over db, a lib/pq ("postgres") handle to the
// tracking database. It returns an error for a nil db.
func NewStore(db *sqlx.DB, opts Options) (*Store, error) {
	if db == nil {
		return nil, errors.New("registry: NewStore: db is nil")
	}
	s := &Store{db: db, now: opts.Now}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

// resyncSetSQL is what a resync sets ($2 is the time): pending with a new
// seq, so the settle of a sync in flight matches no row (R1), no retry,
// no lease, last_synced_at cleared.
const resyncSetSQL = `
  state = 0, seq = DEFAULT, retry_count = 0, retry_at = NULL, last_synced_at = NULL,
  missing_on_primary = false, lease_owner = NULL, lease_expires_at = NULL, updated_at = $2`

// resyncSQL moves rows selected by the WHERE clause that follows to
// pending with a new seq, locking them in model_id order (as MarkPending
// does) to avoid deadlocks.
const resyncSQL = `
UPDATE geo_registry r SET` + resyncSetSQL + `
FROM (SELECT replicable, model_id FROM geo_registry WHERE replicable = $1 AND %s
      ORDER BY model_id FOR UPDATE) sel
WHERE r.replicable = sel.replicable AND r.model_id = sel.model_id`

// Resync makes the existing rows ids of replicable pending with a new seq,
// whatever their state (an operator's explicit request), without
// inserting rows for untracked ids: each is downloaded again. It returns
// the number of rows changed.
func (s *Store) Resync(ctx context.Context, replicable string, ids []int64) (int64, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	res, err := s.db.ExecContext(ctx, fmt.Sprintf(resyncSQL, `model_id = ANY($3::bigint[])`),
		replicable, s.now(), pq.Array(ids))
	if err != nil {
		return 0, fmt.Errorf("registry: resync %s: %w", replicable, err)
	}
	return rowsAffected(res)
}

// resyncAllWhere selects the rows of a resync of all rows: every row not
// pending, or only the failed ones; in a batch's statement with the
// columns as batchTerm names them.
func resyncAllWhere(onlyFailed, inBatch bool) string {
	if onlyFailed {
		return batchTerm("state", inBatch) + ` = 3`
	}
	return batchTerm("state", inBatch) + ` <> 0`
}

// resyncBatch is the batch of ResyncBatches: every row not pending, or
// only the failed ones.
func resyncBatch(onlyFailed bool) batchAction {
	op := "resync all"
	if onlyFailed {
		op = "resync failed"
	}
	return batchAction{op: op, query: fmt.Sprintf(batchSQL, resyncAllWhere(onlyFailed, true), resyncSetSQL)}
}

// ResyncBatches makes the rows of replicable that are not pending (only
// the failed ones with opts.OnlyFailed) pending with a new seq, as Resync
// does, walking the type's rows in model_id order after opts.After, in
// batches of opts.Size rows, each batch its own short transaction that
// locks the rows it changes in model_id order. A row started when its
// batch runs gets a new seq like any other, so the settle of the sync in
// flight is refused and the row is synced again (R1).
//
// The walk is not one snapshot: each batch sees the rows as they are when
// it runs. A row whose id range a committed batch has passed is not
// visited again, so a row that fails after that is not resynced by this
// walk (nor is a row inserted there, which is pending anyway); run it
// again for those. That is what an operator's "resync everything" needs,
// and it keeps every transaction short at any registry size.
//
// It returns how far it got, with the rows changed by committed batches:
// on an error (a batch failed or timed out, the context ended, or
// opts.Progress returned an error), BatchOptions{After: p.After} resumes
// exactly after the last committed batch.
func (s *Store) ResyncBatches(ctx context.Context, replicable string, opts BatchOptions) (BatchProgress, error) {
	return s.runBatches(ctx, resyncBatch(opts.OnlyFailed), replicable, opts)
}

// CountResyncBatches returns how many rows ResyncBatches(ctx, replicable,
// opts) would change now (those after opts.After that it selects),
// without changing any (a dry run), in one statement. opts.Size,
// BatchTimeout and Progress are ignored.
func (s *Store) CountResyncBatches(ctx context.Context, replicable string, opts BatchOptions) (int64, error) {
	return s.countAfter(ctx, "resync", replicable, resyncAllWhere(opts.OnlyFailed, false), opts.After)
}

// CountResync returns how many of ids Resync(ctx, replicable, ids) would
// change now: the tracked ones (a dry run).
func (s *Store) CountResync(ctx context.Context, replicable string, ids []int64) (int64, error) {
	var n int64
	err := s.db.GetContext(ctx, &n,
		`SELECT count(*) FROM geo_registry WHERE replicable = $1 AND model_id = ANY($2::bigint[])`,
		replicable, pq.Array(ids))
	if err != nil {
		return 0, fmt.Errorf("registry: count resync %s: %w", replicable, err)
	}
	return n, nil
}

// Pause stops claims of replicable's rows until Resume, in every secondary
// process sharing the tracking database: the sync engine claims no row of
// a paused type. Work already claimed is not affected. Pausing a paused
// type is a no-op.
func (s *Store) Pause(ctx context.Context, replicable string) error {
	if _, err := s.db.ExecContext(ctx,
		`INSERT INTO geo_paused (replicable, paused_at) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
		replicable, s.now()); err != nil {
		return fmt.Errorf("registry: pause %s: %w", replicable, err)
	}
	return nil
}

// Resume undoes Pause. Resuming a type that is not paused is a no-op.
func (s *Store) Resume(ctx context.Context, replicable string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM geo_paused WHERE replicable = $1`, replicable); err != nil {
		return fmt.Errorf("registry: resume %s: %w", replicable, err)
	}
	return nil
}

// rowColumns lists the columns rowScan receives, so that columns added by
// later migrations do not break Get.
const rowColumns = `replicable, model_id, state, seq, retry_count, retry_at, last_synced_at,
  last_sync_failure, missing_on_primary, blob_key, blob_size, lease_owner, lease_expires_at,
  verification_state, verification_checksum, verification_checksum_mismatched, checksum_mismatch,
  verified_at, verification_retry_count, verification_retry_at, verification_failure,
  verification_started_at, created_at, updated_at`

// rowScan receives a geo_registry row; Row is its NULL-free view.
type rowScan struct {
	Replicable                     string         `db:"replicable"`
	ModelID                        int64          `db:"model_id"`
	State                          int16          `db:"state"`
	Seq                            int64          `db:"seq"`
	RetryCount                     int            `db:"retry_count"`
	RetryAt                        sql.NullTime   `db:"retry_at"`
	LastSyncedAt                   sql.NullTime   `db:"last_synced_at"`
	LastSyncFailure                sql.NullString `db:"last_sync_failure"`
	MissingOnPrimary               bool           `db:"missing_on_primary"`
	BlobKey                        sql.NullString `db:"blob_key"`
	BlobSize                       sql.NullInt64  `db:"blob_size"`
	LeaseOwner                     sql.NullString `db:"lease_owner"`
	LeaseExpiresAt                 sql.NullTime   `db:"lease_expires_at"`
	VerificationState              int16          `db:"verification_state"`
	VerificationChecksum           sql.NullString `db:"verification_checksum"`
	VerificationChecksumMismatched sql.NullString `db:"verification_checksum_mismatched"`
	ChecksumMismatch               bool           `db:"checksum_mismatch"`
	VerifiedAt                     sql.NullTime   `db:"verified_at"`
	VerificationRetryCount         int            `db:"verification_retry_count"`
	VerificationRetryAt            sql.NullTime   `db:"verification_retry_at"`
	VerificationFailure            sql.NullString `db:"verification_failure"`
	VerificationStartedAt          sql.NullTime   `db:"verification_started_at"`
	CreatedAt                      time.Time      `db:"created_at"`
	UpdatedAt                      time.Time      `db:"updated_at"`
}

func (r rowScan) row() Row {
	return Row{
		Replicable:                     r.Replicable,
		ModelID:                        r.ModelID,
		State:                          State(r.State),
		Seq:                            r.Seq,
		RetryCount:                     r.RetryCount,
		RetryAt:                        r.RetryAt.Time,
		LastSyncedAt:                   r.LastSyncedAt.Time,
		LastSyncFailure:                r.LastSyncFailure.String,
		MissingOnPrimary:               r.MissingOnPrimary,
		BlobKey:                        r.BlobKey.String,
		BlobSize:                       r.BlobSize.Int64,
		LeaseOwner:                     r.LeaseOwner.String,
		LeaseExpiresAt:                 r.LeaseExpiresAt.Time,
		VerificationState:              VerificationState(r.VerificationState),
		VerificationChecksum:           r.VerificationChecksum.String,
		VerificationChecksumMismatched: r.VerificationChecksumMismatched.String,
		ChecksumMismatch:               r.ChecksumMismatch,
		VerifiedAt:                     r.VerifiedAt.Time,
		VerificationRetryCount:         r.VerificationRetryCount,
		VerificationRetryAt:            r.VerificationRetryAt.Time,
		VerificationFailure:            r.VerificationFailure.String,
		VerificationStartedAt:          r.VerificationStartedAt.Time,
		CreatedAt:                      r.CreatedAt,
		UpdatedAt:                      r.UpdatedAt,
	}
}

// Get returns the row of record id of replicable, or an error matching
// ErrNotFound when there is none.
func (s *Store) Get(ctx context.Context, replicable string, id int64) (Row, error) {
	var r rowScan
	err := s.db.GetContext(ctx, &r, `SELECT `+rowColumns+` FROM geo_registry WHERE replicable = $1 AND model_id = $2`, replicable, id)
	if errors.Is(err, sql.ErrNoRows) {
		return Row{}, fmt.Errorf("registry: get %s/%d: %w", replicable, id, ErrNotFound)
	}
	if err != nil {
		return Row{}, fmt.Errorf("registry: get %s/%d: %w", replicable, id, err)
	}
	return r.row(), nil
}

func rowsAffected(res sql.Result) (int64, error) {
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("registry: rows affected: %w", err)
	}
	return n, nil
}

// inTxSet is inTx with settings applied first (one round trip).
func (s *Store) inTxSet(ctx context.Context, set string, fn func(tx *sqlx.Tx) error) error {
	return s.inTx(ctx, func(tx *sqlx.Tx) error {
		if _, err := tx.ExecContext(ctx, set); err != nil {
			return err
		}
		return fn(tx)
	})
}

// inTx runs fn in a transaction, committing if fn returns nil and rolling
// back otherwise.
func (s *Store) inTx(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}
