package regstore

import (
	"context"
	"fmt"
	"strings"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/geoframework/geo/registry"
)

// ChecksumClaim is a geo_checksums row claimed by ClaimChecksums: state
// started, leased to an owner. Gen is the generation a settle must match.
type ChecksumClaim struct {
	Replicable string
	ModelID    int64
	Gen        int64
	// PrevState is the state the row was claimed from: pending, failed (a
	// due retry), succeeded (a due re-verification) or started (an expired
	// lease).
	PrevState ChecksumState
	// Checksum is the stored good checksum, "" when none.
	Checksum string
	// RetryCount is the number of consecutive failures so far.
	RetryCount int
}

// ChecksumStore is the primary's checksum table, geo_checksums (migrated by
// MigratePrimary): backfill, claims with leases, and settles that store a
// checksum only if the record's bytes did not change meanwhile. Checksum
// and Checksums only read, so they may run against a read-only replica of
// the primary (that is how secondaries use them). A ChecksumStore is safe
// for concurrent use, also from several processes.
type ChecksumStore struct {
	base
	// Checksums gives the engines the public reads of the table.
	*registry.Checksums
}

// NewChecksumStore returns a ChecksumStore over db (a lib/pq handle to the
// primary's database or a replica of it). opts is as for NewStore: Now is
// the clock for every time written or compared, Retry the backoff of
// failed verifications, MaxFailureLen the cut of failure reasons.
func NewChecksumStore(db *sqlx.DB, opts Options) (*ChecksumStore, error) {
	b, err := newBase("NewChecksumStore", db, opts)
	if err != nil {
		return nil, err
	}
	pub, err := registry.NewChecksums(db)
	if err != nil {
		return nil, err
	}
	return &ChecksumStore{base: b, Checksums: pub}, nil
}

// checksumsSQL reads stored checksums (prepared).
const checksumsSQL = `
SELECT model_id, checksum FROM geo_checksums
WHERE replicable = $1 AND model_id = ANY($2::bigint[]) AND checksum IS NOT NULL`

// ChecksumsOf is Checksum for many ids in one statement: the map holds the
// ids with a known checksum only.
func (s *ChecksumStore) ChecksumsOf(ctx context.Context, replicable string, ids []int64) (map[int64]string, error) {
	out := make(map[int64]string, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	st, err := s.prepared(ctx, nil, checksumsSQL)
	if err != nil {
		return nil, fmt.Errorf("registry: checksums %s: %w", replicable, err)
	}
	rows, err := st.QueryContext(ctx, replicable, pq.Array(ids))
	if err = s.stmts.Check(checksumsSQL, err); err != nil {
		return nil, fmt.Errorf("registry: checksums %s: %w", replicable, err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var sum string
		if err := rows.Scan(&id, &sum); err != nil {
			return nil, fmt.Errorf("registry: checksums %s: %w", replicable, err)
		}
		out[id] = sum
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("registry: checksums %s: %w", replicable, err)
	}
	return out, nil
}

// InsertMissingChecksums inserts a pending row for each of ids that has
// none, in one statement, leaving existing rows untouched (backfill).
// Duplicate ids are allowed. It returns the number of rows inserted.
func (s *ChecksumStore) InsertMissingChecksums(ctx context.Context, replicable string, ids []int64) (int64, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	res, err := s.db.ExecContext(ctx, `
INSERT INTO geo_checksums (replicable, model_id, created_at, updated_at)
SELECT $1, unnest($2::bigint[]), $3, $3
ON CONFLICT DO NOTHING`, replicable, pq.Array(ids), s.now())
	if err != nil {
		return 0, fmt.Errorf("registry: insert missing checksums %s: %w", replicable, err)
	}
	return rowsAffected(res)
}

// ChecksumIDsNotIn returns the model ids of replicable's checksum rows with
// afterID < id <= upToID that are not in listed (ascending), bounded on
// both sides by the range: candidates for removal once confirmed gone.
func (s *ChecksumStore) ChecksumIDsNotIn(ctx context.Context, replicable string, afterID, upToID int64, listed []int64) ([]int64, error) {
	ids := []int64{}
	err := s.db.SelectContext(ctx, &ids, `
SELECT model_id FROM geo_checksums
WHERE replicable = $1 AND model_id > $2 AND model_id <= $3 AND NOT (model_id = ANY($4::bigint[]))
ORDER BY model_id`, replicable, afterID, upToID, pq.Array(listed))
	if err != nil {
		return nil, fmt.Errorf("registry: checksum ids %s: %w", replicable, err)
	}
	return ids, nil
}

// DeleteChecksums removes the checksum rows of ids (records gone from the
// primary). It returns the number of rows removed.
func (s *ChecksumStore) DeleteChecksums(ctx context.Context, replicable string, ids []int64) (int64, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	res, err := s.db.ExecContext(ctx,
		`DELETE FROM geo_checksums WHERE replicable = $1 AND model_id = ANY($2::bigint[])`, replicable, pq.Array(ids))
	if err != nil {
		return 0, fmt.Errorf("registry: delete checksums %s: %w", replicable, err)
	}
	return rowsAffected(res)
}

// claimChecksumsSQL claims up to $2 rows of one type: pending (oldest gen
// first), failed with a due retry, succeeded rows verified before the
// re-verification cutoff, then started rows whose lease expired. Each branch
// walks its own partial index and skips rows others hold.
const claimChecksumsSQL = `
WITH picked AS (
  SELECT * FROM (
    SELECT * FROM (SELECT model_id, state FROM geo_checksums
      WHERE replicable = $1 AND state = 0 ORDER BY gen LIMIT $2 FOR UPDATE SKIP LOCKED) pending
    UNION ALL
    SELECT * FROM (SELECT model_id, state FROM geo_checksums
      WHERE replicable = $1 AND state = 3 AND retry_at <= $3 ORDER BY retry_at LIMIT $2 FOR UPDATE SKIP LOCKED) due
    UNION ALL
    SELECT * FROM (SELECT model_id, state FROM geo_checksums
      WHERE replicable = $1 AND state = 2 AND verified_at < $4 ORDER BY verified_at LIMIT $2 FOR UPDATE SKIP LOCKED) reverify
    UNION ALL
    SELECT * FROM (SELECT model_id, state FROM geo_checksums
      WHERE replicable = $1 AND state = 1 AND lease_expires_at < $3 ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED) expired
    LIMIT $2
  ) u
)
UPDATE geo_checksums c
SET state = 1, lease_owner = $5, lease_expires_at = $6, updated_at = $3
FROM picked p
WHERE c.replicable = $1 AND c.model_id = p.model_id
RETURNING c.model_id, c.gen, p.state AS prev_state, coalesce(c.checksum, '') AS checksum, c.retry_count`

// ClaimChecksums claims up to limit due rows of replicable for owner in one
// statement and leases them until now+lease: pending rows, failed rows
// whose retry_at passed, succeeded rows verified before
// now-reverifyInterval, and started rows whose lease expired (a dead
// worker's). Concurrent claimers never get the same row.
func (s *ChecksumStore) ClaimChecksums(ctx context.Context, p ChecksumClaimParams) ([]ChecksumClaim, error) {
	if err := p.Lease.validate("claim checksums"); err != nil {
		return nil, err
	}
	if p.Limit <= 0 || p.ReverifyInterval <= 0 {
		return nil, fmt.Errorf("registry: claim checksums: limit %d, reverify interval %v: want both > 0", p.Limit, p.ReverifyInterval)
	}
	replicable := p.Replicable
	now := s.now()
	var rows []struct {
		ModelID    int64  `db:"model_id"`
		Gen        int64  `db:"gen"`
		PrevState  int16  `db:"prev_state"`
		Checksum   string `db:"checksum"`
		RetryCount int    `db:"retry_count"`
	}
	if err := s.db.SelectContext(ctx, &rows, claimChecksumsSQL,
		replicable, p.Limit, now, now.Add(-p.ReverifyInterval), p.Lease.Owner, now.Add(p.Lease.Duration)); err != nil {
		return nil, fmt.Errorf("registry: claim checksums %s: %w", replicable, err)
	}
	out := make([]ChecksumClaim, len(rows))
	for i, r := range rows {
		out[i] = ChecksumClaim{Replicable: replicable, ModelID: r.ModelID, Gen: r.Gen,
			PrevState: ChecksumState(r.PrevState), Checksum: r.Checksum, RetryCount: r.RetryCount}
	}
	return out, nil
}

// RenewChecksums extends to now + lease.Duration every lease lease.Owner holds on
// started checksum rows, in one statement.
func (s *ChecksumStore) RenewChecksums(ctx context.Context, lease Lease) error {
	if err := lease.validate("renew checksums"); err != nil {
		return err
	}
	owner, now := lease.Owner, s.now()
	if _, err := s.db.ExecContext(ctx, `
UPDATE geo_checksums SET lease_expires_at = $2, updated_at = $3
WHERE state = 1 AND lease_owner = $1`, owner, now.Add(lease.Duration), now); err != nil {
		return fmt.Errorf("registry: renew checksum leases: %w", err)
	}
	return nil
}

// ReleaseChecksums gives back claims owner still holds (shutdown): each row
// returns to the state it was claimed from (an expired lease's to pending),
// without a lease. Claims no longer held are ignored.
func (s *ChecksumStore) ReleaseChecksums(ctx context.Context, owner string, claims []ChecksumClaim) error {
	if len(claims) == 0 {
		return nil
	}
	var types []string
	var ids, gens, prev []int64
	for _, c := range claims {
		types = append(types, c.Replicable)
		ids = append(ids, c.ModelID)
		gens = append(gens, c.Gen)
		prev = append(prev, int64(c.PrevState))
	}
	if _, err := s.db.ExecContext(ctx, `
UPDATE geo_checksums c
SET state = CASE WHEN k.prev = 1 THEN 0 ELSE k.prev END, lease_owner = NULL, lease_expires_at = NULL, updated_at = $2
FROM unnest($3::text[], $4::bigint[], $5::bigint[], $6::int[]) AS k(replicable, model_id, gen, prev)
WHERE c.replicable = k.replicable AND c.model_id = k.model_id AND c.gen = k.gen
  AND c.state = 1 AND c.lease_owner = $1`,
		owner, s.now(), pq.Array(types), pq.Array(ids), pq.Array(gens), pq.Array(prev)); err != nil {
		return fmt.Errorf("registry: release checksums: %w", err)
	}
	return nil
}

// ChecksumOutcome is what SettleChecksum did.
type ChecksumOutcome int

// Outcomes of SettleChecksum.
const (
	// ChecksumStale: the claim was no longer current (the record's bytes
	// changed, so the row is pending again with a new gen; or it was
	// deleted; or the lease was lost). Nothing was stored.
	ChecksumStale ChecksumOutcome = iota
	// ChecksumStored: the row succeeded with the computed checksum.
	ChecksumStored
	// ChecksumChanged: a re-verification computed a checksum different from
	// the stored good one while the record's bytes were not changed through
	// the application: the primary's copy is corrupted. The row failed; the
	// good checksum was kept.
	ChecksumChanged
)

// SettleChecksum records the checksum sum (lowercase hex SHA-256) and size
// (-1 when unknown: stored as NULL) computed for claim c, if the claim is
// still current (row started, owned by owner, same gen); otherwise it
// changes nothing and returns
// ChecksumStale: the bytes changed during the computation, and the row,
// pending again, is computed anew (no stale checksum).
//
// When c carries no stored checksum, or the same one, the row succeeds:
// checksum and size stored, verified_at now, no failure, retry_count 0.
// When it carries a different one, the primary's bytes changed at rest:
// the row fails with failure "checksum changed on the primary: stored X,
// now Y", retry_count one more, retry_at by backoff, and keeps X.
func (s *ChecksumStore) SettleChecksum(ctx context.Context, owner string, c ChecksumClaim, sum string, size int64) (ChecksumOutcome, error) {
	sum = strings.ToLower(sum)
	if c.Checksum != "" && !strings.EqualFold(c.Checksum, sum) {
		reason := fmt.Sprintf("checksum changed on the primary: stored %s, now %s", c.Checksum, sum)
		ok, err := s.fail(ctx, owner, c, reason, false)
		if err != nil || !ok {
			return ChecksumStale, err
		}
		return ChecksumChanged, nil
	}
	now := s.now()
	res, err := s.db.ExecContext(ctx, `
UPDATE geo_checksums SET state = 2, checksum = $5, size = NULLIF($6::bigint, -1), verified_at = $7, failure = NULL,
  retry_count = 0, retry_at = NULL, lease_owner = NULL, lease_expires_at = NULL, updated_at = $7
WHERE replicable = $1 AND model_id = $2 AND gen = $3 AND state = 1 AND lease_owner = $4`,
		c.Replicable, c.ModelID, c.Gen, owner, sum, size, now)
	if err != nil {
		return ChecksumStale, fmt.Errorf("registry: settle checksum %s/%d: %w", c.Replicable, c.ModelID, err)
	}
	n, err := rowsAffected(res)
	if err != nil || n == 0 {
		return ChecksumStale, err
	}
	return ChecksumStored, nil
}

// FailChecksum records that computing claim c's checksum failed (the file
// is missing or unreadable), if the claim is still current; otherwise it
// changes nothing and returns false. The row fails with failure = reason
// (cut to MaxFailureLen), retry_count one more than the claimed count (it
// grows across consecutive failures and only a success resets it, GitLab
// #607991), retry_at = now + Retry.NextRetry(count, missing). The stored
// good checksum, if any, is kept.
func (s *ChecksumStore) FailChecksum(ctx context.Context, owner string, c ChecksumClaim, reason string, missing bool) (bool, error) {
	return s.fail(ctx, owner, c, reason, missing)
}

func (s *ChecksumStore) fail(ctx context.Context, owner string, c ChecksumClaim, reason string, missing bool) (bool, error) {
	now := s.now()
	count := c.RetryCount + 1
	res, err := s.db.ExecContext(ctx, `
UPDATE geo_checksums SET state = 3, failure = $5, retry_count = retry_count + 1, retry_at = $6,
  lease_owner = NULL, lease_expires_at = NULL, updated_at = $7
WHERE replicable = $1 AND model_id = $2 AND gen = $3 AND state = 1 AND lease_owner = $4`,
		c.Replicable, c.ModelID, c.Gen, owner, truncate(reason, s.maxFailureLen),
		now.Add(s.retry.NextRetry(count, missing)), now)
	if err != nil {
		return false, fmt.Errorf("registry: fail checksum %s/%d: %w", c.Replicable, c.ModelID, err)
	}
	n, err := rowsAffected(res)
	return n > 0, err
}

// DeleteChecksumIfClaim removes claim c's row when the record turned out to
// be gone, if the claim is still current. It reports whether it did.
func (s *ChecksumStore) DeleteChecksumIfClaim(ctx context.Context, owner string, c ChecksumClaim) (bool, error) {
	res, err := s.db.ExecContext(ctx, `
DELETE FROM geo_checksums
WHERE replicable = $1 AND model_id = $2 AND gen = $3 AND state = 1 AND lease_owner = $4`,
		c.Replicable, c.ModelID, c.Gen, owner)
	if err != nil {
		return false, fmt.Errorf("registry: delete checksum %s/%d: %w", c.Replicable, c.ModelID, err)
	}
	n, err := rowsAffected(res)
	return n > 0, err
}
