package registry

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// ReasonScanRows is how many failed rows FailedWithReason examines at
// most in one call: a reason's rows may be spread thinly among a type's
// failures, so a page stops there and tells where to go on
// (ReasonPage.After), keeping every call a bounded read.
const ReasonScanRows = 10_000

// reasonChunk is how many failed rows FailedWithReason reads per
// statement.
const reasonChunk = 1_000

// ReasonQuery selects a page of one type's rows whose failure message
// normalizes to one reason (a FailureReason.Reason of TopFailures).
type ReasonQuery struct {
	// Replicable is the type (required).
	Replicable string
	// Verification selects verification failures of synced rows (the
	// Verification reasons of Failures); false selects sync failures of
	// failed rows (the Sync reasons).
	Verification bool
	// Reason is the normalized reason, as TopFailures reports it.
	Reason string
	// After is the last model id of the previous page (ReasonPage.After);
	// 0 starts at the beginning. Rows are ordered by model id.
	After int64
	// Limit is the page size; it must be positive.
	Limit int
}

// ReasonPage is a page of FailedWithReason.
type ReasonPage struct {
	// Rows are the matching rows, ordered by model id: at most
	// ReasonQuery.Limit of them.
	Rows []Row
	// After is where the next page starts: pass it as ReasonQuery.After.
	// Every failed row up to it was examined.
	After int64
	// Done says that no failed row after After exists: this page is the
	// last. A page may be short, even empty, and not Done, when it stopped
	// after ReasonScanRows rows.
	Done bool
}

// FailedWithReason returns a page of q.Replicable's failed rows (sync or
// verification failures, as q.Verification says) whose failure message
// normalizes to q.Reason, ordered by model id after q.After. It reads the
// type's failed rows in model id order, through the partial indexes of
// the failed states, and examines at most ReasonScanRows of them per
// call, whatever the registry's size.
func (s *Store) FailedWithReason(ctx context.Context, q ReasonQuery) (ReasonPage, error) {
	if q.Limit <= 0 {
		return ReasonPage{}, fmt.Errorf("registry: failed with reason: limit = %d, want > 0", q.Limit)
	}
	if q.Replicable == "" {
		return ReasonPage{}, fmt.Errorf("registry: failed with reason: no replicable")
	}
	where := `state = 3`
	if q.Verification {
		where = `state = 2 AND verification_state = 3`
	}
	page := ReasonPage{After: q.After}
	for scanned := 0; scanned < ReasonScanRows; {
		n := min(reasonChunk, ReasonScanRows-scanned)
		var got []rowScan
		err := s.db.SelectContext(ctx, &got, `SELECT `+rowColumns+` FROM geo_registry
WHERE replicable = $1 AND `+where+` AND model_id > $2
ORDER BY model_id LIMIT $3`, q.Replicable, page.After, n)
		if err != nil {
			return ReasonPage{}, fmt.Errorf("registry: failed with reason %s: %w", q.Replicable, err)
		}
		for _, g := range got {
			r := g.row()
			page.After = r.ModelID
			text := r.LastSyncFailure
			if q.Verification {
				text = r.VerificationFailure
			}
			if normalizeReason(text) != q.Reason {
				continue
			}
			page.Rows = append(page.Rows, r)
			if len(page.Rows) == q.Limit {
				return page, nil
			}
		}
		scanned += len(got)
		if len(got) < n {
			page.Done = true
			return page, nil
		}
	}
	return page, nil
}

// Failed returns a page of the primary's checksum rows whose last
// verification failed (state failed: a missing or unreadable file, bytes
// changed at rest), ordered by (replicable, model id) after q.After. A
// short page is the last one.
func (s *Checksums) Failed(ctx context.Context, q FailedQuery) ([]ChecksumRow, error) {
	if q.Limit <= 0 {
		return nil, fmt.Errorf("registry: failed checksums: limit = %d, want > 0", q.Limit)
	}
	var got []checksumScan
	err := s.db.SelectContext(ctx, &got, `SELECT `+checksumColumns+` FROM geo_checksums
WHERE state = 3 AND ($1 = '' OR replicable = $1) AND (replicable, model_id) > ($2, $3)
ORDER BY replicable, model_id
LIMIT $4`, q.Replicable, q.After.Replicable, q.After.ModelID, q.Limit)
	if err != nil {
		return nil, fmt.Errorf("registry: failed checksums: %w", err)
	}
	out := make([]ChecksumRow, len(got))
	for i, r := range got {
		out[i] = r.row()
	}
	return out, nil
}

// checksumColumns are the columns of geo_checksums that checksumScan
// receives.
const checksumColumns = `replicable, model_id, state, gen, checksum, size, verified_at, failure, retry_count,
  retry_at, lease_owner, lease_expires_at, created_at, updated_at`

// checksumScan receives a geo_checksums row; ChecksumRow is its NULL-free
// view.
type checksumScan struct {
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

func (r checksumScan) row() ChecksumRow {
	return ChecksumRow{
		Replicable: r.Replicable, ModelID: r.ModelID, State: ChecksumState(r.State), Gen: r.Gen,
		Checksum: r.Checksum.String, Size: r.Size.Int64, VerifiedAt: r.VerifiedAt.Time,
		Failure: r.Failure.String, RetryCount: r.RetryCount, RetryAt: r.RetryAt.Time,
		LeaseOwner: r.LeaseOwner.String, LeaseExpiresAt: r.LeaseExpiresAt.Time,
		CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
	}
}
