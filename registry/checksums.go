package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// ChecksumState is a geo_checksums row's state on the primary, stored as a
// smallint. The numbers are those of VerificationState and never change.
type ChecksumState = VerificationState

// ChecksumRow is a geo_checksums row: the primary's verification state of
// one record. Nullable columns map to their zero value when NULL.
type ChecksumRow struct {
	Replicable string
	ModelID    int64
	State      ChecksumState
	// Gen changes whenever the record's bytes change (a created or updated
	// event): a checksum computed under another Gen is never stored.
	Gen int64
	// Checksum is the last good lowercase hex SHA-256 of the bytes, kept
	// when a later re-verification fails; "" when none is known.
	Checksum       string
	Size           int64
	VerifiedAt     time.Time
	Failure        string
	RetryCount     int
	RetryAt        time.Time
	LeaseOwner     string
	LeaseExpiresAt time.Time
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// Checksums reads the primary's checksum table, geo_checksums (migrated by
// MigratePrimary): what the primary's verification knows of each record's
// bytes. It only reads, so it may run against a read-only replica of the
// primary. The primary's verification engine writes the table; it is not
// here. Safe for concurrent use.
type Checksums struct{ db *sqlx.DB }

// NewChecksums returns a reader of the checksum table in db, the primary's
// database or a replica of it. It returns an error for a nil db.
func NewChecksums(db *sqlx.DB) (*Checksums, error) {
	if db == nil {
		return nil, errors.New("registry: NewChecksums: db is nil")
	}
	return &Checksums{db: db}, nil
}

// Checksum returns the stored good checksum of record id of replicable, ""
// when none is known (no row, never computed, or invalidated by an update).
// A checksum kept after a failed re-verification is returned: it describes
// the bytes as they were when last good.
func (s *Checksums) Checksum(ctx context.Context, replicable string, id int64) (string, error) {
	var sum sql.NullString
	err := s.db.GetContext(ctx, &sum, `SELECT checksum FROM geo_checksums WHERE replicable = $1 AND model_id = $2`, replicable, id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("registry: checksum %s/%d: %w", replicable, id, err)
	}
	return sum.String, nil
}

// Get returns the geo_checksums row of record id of replicable, or an
// error matching ErrNotFound.
func (s *Checksums) Get(ctx context.Context, replicable string, id int64) (ChecksumRow, error) {
	var r struct {
		Replicable     string         `db:"replicable"`
		ModelID        int64          `db:"model_id"`
		State          int16          `db:"state"`
		Gen            int64          `db:"gen"`
		Checksum       sql.NullString `db:"checksum"`
		Size           sql.NullInt64  `db:"size"`
		VerifiedAt     sql.NullTime   `db:"verified_at"`
		Failure        sql.NullString `db:"failure"`
		RetryCount     int            `db:"retry_count"`
		RetryAt        sql.NullTime   `db:"retry_at"`
		LeaseOwner     sql.NullString `db:"lease_owner"`
		LeaseExpiresAt sql.NullTime   `db:"lease_expires_at"`
		CreatedAt      time.Time      `db:"created_at"`
		UpdatedAt      time.Time      `db:"updated_at"`
	}
	err := s.db.GetContext(ctx, &r, `
SELECT replicable, model_id, state, gen, checksum, size, verified_at, failure, retry_count, retry_at,
  lease_owner, lease_expires_at, created_at, updated_at
FROM geo_checksums WHERE replicable = $1 AND model_id = $2`, replicable, id)
	if errors.Is(err, sql.ErrNoRows) {
		return ChecksumRow{}, fmt.Errorf("registry: get checksum %s/%d: %w", replicable, id, ErrNotFound)
	}
	if err != nil {
		return ChecksumRow{}, fmt.Errorf("registry: get checksum %s/%d: %w", replicable, id, err)
	}
	return ChecksumRow{
		Replicable: r.Replicable, ModelID: r.ModelID, State: ChecksumState(r.State), Gen: r.Gen,
		Checksum: r.Checksum.String, Size: r.Size.Int64, VerifiedAt: r.VerifiedAt.Time,
		Failure: r.Failure.String, RetryCount: r.RetryCount, RetryAt: r.RetryAt.Time,
		LeaseOwner: r.LeaseOwner.String, LeaseExpiresAt: r.LeaseExpiresAt.Time,
		CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
	}, nil
}

// ChecksumCounts summarizes one type's primary verification.
type ChecksumCounts struct {
	Total, Pending, Started, Succeeded, Failed, Disabled int64
}

// Counts returns per-type counts of geo_checksums rows by state, in one
// grouped pass.
func (s *Checksums) Counts(ctx context.Context) (map[string]ChecksumCounts, error) {
	var groups []struct {
		Replicable string `db:"replicable"`
		State      int16  `db:"state"`
		N          int64  `db:"n"`
	}
	if err := s.db.SelectContext(ctx, &groups,
		`SELECT replicable, state, count(*) AS n FROM geo_checksums GROUP BY replicable, state`); err != nil {
		return nil, fmt.Errorf("registry: checksum counts: %w", err)
	}
	out := map[string]ChecksumCounts{}
	for _, g := range groups {
		c := out[g.Replicable]
		c.Total += g.N
		switch ChecksumState(g.State) {
		case VerificationPending:
			c.Pending += g.N
		case VerificationStarted:
			c.Started += g.N
		case VerificationSucceeded:
			c.Succeeded += g.N
		case VerificationFailed:
			c.Failed += g.N
		case VerificationDisabled:
			c.Disabled += g.N
		}
		out[g.Replicable] = c
	}
	return out, nil
}
