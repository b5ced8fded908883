package regstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// VerifyClaim is a synced registry row claimed by ClaimVerification: its
// verification state is started and the row is leased to an owner (the
// lease columns are free while a row is synced). Seq is the generation a
// verification settle must still match: an event that marks the row
// pending meanwhile wins.
type VerifyClaim struct {
	Replicable string
	ModelID    int64
	Seq        int64
	// PrevState is the verification state the row was claimed from.
	PrevState VerificationState
	// BlobKey is where the last sync stored the bytes.
	BlobKey string
	// VerificationChecksum is the local checksum recorded last, "" if none.
	VerificationChecksum string
	// VerificationRetryCount is the number of consecutive verification
	// failures so far.
	VerificationRetryCount int
}

// Key returns the claimed row's key.
func (c VerifyClaim) Key() Key { return Key{Replicable: c.Replicable, ModelID: c.ModelID} }

// claimVerificationSQL claims up to $2 synced rows of one type: pending or
// failed verifications whose verification_retry_at is due (NULL is due),
// succeeded ones verified before the cutoff, and started ones whose lease
// expired. Each branch walks a partial index of migration 0004.
const claimVerificationSQL = `
WITH picked AS (
  SELECT * FROM (
    SELECT * FROM (SELECT model_id, verification_state FROM geo_registry
      WHERE replicable = $1 AND state = 2 AND verification_state IN (0, 3)
        AND coalesce(verification_retry_at, '-infinity'::timestamptz) <= $3
      ORDER BY coalesce(verification_retry_at, '-infinity'::timestamptz) LIMIT $2 FOR UPDATE SKIP LOCKED) due
    UNION ALL
    SELECT * FROM (SELECT model_id, verification_state FROM geo_registry
      WHERE replicable = $1 AND state = 2 AND verification_state = 2 AND verified_at < $4
      ORDER BY verified_at LIMIT $2 FOR UPDATE SKIP LOCKED) reverify
    UNION ALL
    SELECT * FROM (SELECT model_id, verification_state FROM geo_registry
      WHERE replicable = $1 AND state = 2 AND verification_state = 1 AND lease_expires_at < $3
      ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED) expired
    LIMIT $2
  ) u
)
UPDATE geo_registry r
SET verification_state = 1, verification_started_at = $3, lease_owner = $5, lease_expires_at = $6
FROM picked p
WHERE r.replicable = $1 AND r.model_id = p.model_id
RETURNING r.model_id, r.seq, p.verification_state AS prev_state, coalesce(r.blob_key, '') AS blob_key,
  coalesce(r.verification_checksum, '') AS verification_checksum, r.verification_retry_count`

// ClaimVerification claims up to limit synced rows of replicable that need
// verification, in one statement, for owner until now+lease: verification
// pending or failed with verification_retry_at due (or unset), succeeded
// with verified_at before now-reverifyInterval, or started with an expired
// lease (a dead verifier's). Claimed rows get verification state started
// and verification_started_at now; the sync state stays synced.
// Concurrent claimers never get the same row.
func (s *Store) ClaimVerification(ctx context.Context, p VerifyClaimParams) ([]VerifyClaim, error) {
	if err := p.Lease.validate("claim verification"); err != nil {
		return nil, err
	}
	if p.Limit <= 0 || p.ReverifyInterval <= 0 {
		return nil, fmt.Errorf("registry: claim verification: limit %d, reverify interval %v: want both > 0", p.Limit, p.ReverifyInterval)
	}
	replicable := p.Replicable
	now := s.now()
	var rows []struct {
		ModelID                int64  `db:"model_id"`
		Seq                    int64  `db:"seq"`
		PrevState              int16  `db:"prev_state"`
		BlobKey                string `db:"blob_key"`
		VerificationChecksum   string `db:"verification_checksum"`
		VerificationRetryCount int    `db:"verification_retry_count"`
	}
	if err := s.db.SelectContext(ctx, &rows, claimVerificationSQL,
		replicable, p.Limit, now, now.Add(-p.ReverifyInterval), p.Lease.Owner, now.Add(p.Lease.Duration)); err != nil {
		return nil, fmt.Errorf("registry: claim verification %s: %w", replicable, err)
	}
	out := make([]VerifyClaim, len(rows))
	for i, r := range rows {
		out[i] = VerifyClaim{Replicable: replicable, ModelID: r.ModelID, Seq: r.Seq,
			PrevState: VerificationState(r.PrevState), BlobKey: r.BlobKey,
			VerificationChecksum: r.VerificationChecksum, VerificationRetryCount: r.VerificationRetryCount}
	}
	return out, nil
}

// verifyCurrent is the WHERE clause of a verification settle: the row is
// still synced with the claimed seq, and its verification still started
// and owned by the claimer.
const verifyCurrent = `replicable = $1 AND model_id = $2 AND seq = $3 AND state = 2
  AND verification_state = 1 AND lease_owner = $4`

// RenewVerification extends to now + lease.Duration every verification
// lease lease.Owner holds, in one statement.
func (s *Store) RenewVerification(ctx context.Context, lease Lease) error {
	if err := lease.validate("renew verification"); err != nil {
		return err
	}
	owner, now := lease.Owner, s.now()
	if _, err := s.db.ExecContext(ctx, `
UPDATE geo_registry SET lease_expires_at = $2
WHERE state = 2 AND verification_state = 1 AND lease_owner = $1`, owner, now.Add(lease.Duration)); err != nil {
		return fmt.Errorf("registry: renew verification leases: %w", err)
	}
	return nil
}

// SettleVerified records that claim c's local bytes match the primary's
// checksum, if the claim is still current (otherwise nothing changes and it
// returns false): verification succeeded, verified_at now, the local
// checksum, no mismatch or failure, and verification_retry_count 0 (the
// only place it is reset).
func (s *Store) SettleVerified(ctx context.Context, owner string, c VerifyClaim, localChecksum string) (bool, error) {
	now := s.now()
	res, err := s.db.ExecContext(ctx, `
UPDATE geo_registry SET verification_state = 2, verified_at = $5, verification_checksum = $6,
  verification_checksum_mismatched = NULL, checksum_mismatch = false, verification_failure = NULL,
  verification_retry_count = 0, verification_retry_at = NULL, verification_started_at = NULL,
  lease_owner = NULL, lease_expires_at = NULL, updated_at = $5
WHERE `+verifyCurrent, c.Replicable, c.ModelID, c.Seq, owner, now, strings.ToLower(localChecksum))
	if err != nil {
		return false, fmt.Errorf("registry: settle verified %s/%d: %w", c.Replicable, c.ModelID, err)
	}
	n, err := rowsAffected(res)
	return n > 0, err
}

// SettleVerifyPending puts the claims in cs that owner still holds back to
// verification pending until retryAt, in one statement: the primary has no
// checksum yet to compare them with. verification_retry_count is
// unchanged. It returns how many rows it changed. The rows are locked in
// key order, as by every statement changing several registry rows.
func (s *Store) SettleVerifyPending(ctx context.Context, owner string, cs []VerifyClaim, retryAt time.Time) (int64, error) {
	if len(cs) == 0 {
		return 0, nil
	}
	types, ids, seqs := make([]string, len(cs)), make([]int64, len(cs)), make([]int64, len(cs))
	for i, c := range cs {
		types[i], ids[i], seqs[i] = c.Replicable, c.ModelID, c.Seq
	}
	res, err := s.db.ExecContext(ctx, `
UPDATE geo_registry r SET verification_state = 0, verification_retry_at = $5, verification_started_at = NULL,
  lease_owner = NULL, lease_expires_at = NULL, updated_at = $6
FROM (SELECT h.replicable, h.model_id FROM geo_registry h
  JOIN unnest($1::text[], $2::bigint[], $3::bigint[]) AS k(replicable, model_id, seq)
    ON h.replicable = k.replicable AND h.model_id = k.model_id
  WHERE h.seq = k.seq AND h.state = 2 AND h.verification_state = 1 AND h.lease_owner = $4
  ORDER BY h.replicable, h.model_id
  FOR UPDATE OF h) sel
WHERE r.replicable = sel.replicable AND r.model_id = sel.model_id`,
		pq.Array(types), pq.Array(ids), pq.Array(seqs), owner, retryAt, s.now())
	if err != nil {
		return 0, fmt.Errorf("registry: settle verification pending of %d: %w", len(cs), err)
	}
	return rowsAffected(res)
}

// VerifyFailure describes a failed verification for SettleVerifyFailed.
type VerifyFailure struct {
	// Reason is stored in verification_failure (and, with Resync, in
	// last_sync_failure), cut to MaxFailureLen bytes.
	Reason string
	// LocalChecksum is the checksum of the local bytes, "" when they could
	// not be read (stored in verification_checksum when not "").
	LocalChecksum string
	// PrimaryChecksum is the primary's checksum the bytes were compared
	// with (stored in verification_checksum_mismatched when Mismatch).
	PrimaryChecksum string
	// Mismatch says the bytes differ from the primary's: checksum_mismatch
	// becomes true.
	Mismatch bool
	// Resync says the local copy is bad or missing and must be downloaded
	// again: the sync state becomes failed, so the sync engine re-downloads
	// it with backoff (GitLab: verification failure → sync failure).
	Resync bool
}

// SettleVerifyFailed records a failed verification of claim c, if the claim
// is still current (otherwise nothing changes and it returns false). In one
// transaction, under the row lock: verification_retry_count becomes one
// more than the row's (it grows across consecutive verify-fail → resync →
// verify-fail cycles, since SettleSynced does not reset it: GitLab
// #607991), verification failed with verification_retry_at = now +
// Retry.NextRetry(that count), the failure reason and checksums. With
// f.Resync the sync state becomes failed too, with retry_at at the same
// time and last_sync_failure "verification failed: reason", without a
// lease; retry_count is left as it is.
func (s *Store) SettleVerifyFailed(ctx context.Context, owner string, c VerifyClaim, f VerifyFailure) (bool, error) {
	reason := truncate(f.Reason, s.maxFailureLen)
	syncReason := truncate("verification failed: "+f.Reason, s.maxFailureLen)
	now := s.now()
	settled := false
	err := s.inTx(ctx, func(tx *sqlx.Tx) error {
		var count int
		err := tx.GetContext(ctx, &count, `SELECT verification_retry_count FROM geo_registry WHERE `+verifyCurrent+` FOR UPDATE`,
			c.Replicable, c.ModelID, c.Seq, owner)
		if errors.Is(err, sql.ErrNoRows) {
			return errStale
		}
		if err != nil {
			return err
		}
		count++
		retryAt := now.Add(s.retry.NextRetry(count, false))
		state := StateSynced
		var syncRetryAt sql.NullTime
		var syncFailure sql.NullString
		if f.Resync {
			state = StateFailed
			syncRetryAt = sql.NullTime{Time: retryAt, Valid: true}
			syncFailure = sql.NullString{String: syncReason, Valid: true}
		}
		var mismatched sql.NullString
		if f.Mismatch && f.PrimaryChecksum != "" {
			mismatched = sql.NullString{String: strings.ToLower(f.PrimaryChecksum), Valid: true}
		}
		_, err = tx.ExecContext(ctx, `
UPDATE geo_registry SET verification_state = 3, verification_retry_count = $3, verification_retry_at = $4,
  verification_failure = $5, verification_checksum = coalesce(NULLIF($6, ''), verification_checksum),
  verification_checksum_mismatched = $7, checksum_mismatch = $8, verification_started_at = NULL,
  state = $9::smallint, retry_at = CASE WHEN $9::smallint = 3 THEN $10 ELSE retry_at END,
  last_sync_failure = coalesce($11, last_sync_failure),
  lease_owner = NULL, lease_expires_at = NULL, updated_at = $12
WHERE replicable = $1 AND model_id = $2`,
			c.Replicable, c.ModelID, count, retryAt, reason, strings.ToLower(f.LocalChecksum),
			mismatched, f.Mismatch, int16(state), syncRetryAt, syncFailure, now)
		if err != nil {
			return err
		}
		settled = true
		return nil
	})
	if errors.Is(err, errStale) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("registry: settle verification failed %s/%d: %w", c.Replicable, c.ModelID, err)
	}
	return settled, nil
}

// ReleaseVerification gives back verification claims owner still holds
// (shutdown): each row returns to the verification state it was claimed
// from (an expired lease's to pending), without a lease.
func (s *Store) ReleaseVerification(ctx context.Context, owner string, claims []VerifyClaim) error {
	if len(claims) == 0 {
		return nil
	}
	var types []string
	var ids, seqs, prev []int64
	for _, c := range claims {
		types = append(types, c.Replicable)
		ids = append(ids, c.ModelID)
		seqs = append(seqs, c.Seq)
		prev = append(prev, int64(c.PrevState))
	}
	if _, err := s.db.ExecContext(ctx, `
UPDATE geo_registry r
SET verification_state = CASE WHEN k.prev = 1 THEN 0 ELSE k.prev END, verification_started_at = NULL,
  lease_owner = NULL, lease_expires_at = NULL, updated_at = $2
FROM unnest($3::text[], $4::bigint[], $5::bigint[], $6::int[]) AS k(replicable, model_id, seq, prev)
WHERE r.replicable = k.replicable AND r.model_id = k.model_id AND r.seq = k.seq
  AND r.state = 2 AND r.verification_state = 1 AND r.lease_owner = $1`,
		owner, s.now(), pq.Array(types), pq.Array(ids), pq.Array(seqs), pq.Array(prev)); err != nil {
		return fmt.Errorf("registry: release verification: %w", err)
	}
	return nil
}
