package regstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// TypeLimit is how many rows of one replicable type a Claim may take.
type TypeLimit struct {
	Replicable string
	Limit      int
}

// Claim is a row claimed by Claim: state started, leased to an owner until
// LeaseExpiresAt. Seq is the generation the settle must still match.
type Claim struct {
	Replicable string
	ModelID    int64
	// Seq is the row's generation when claimed. MarkPending (an event, a
	// resync) changes it; a settle with a stale Seq changes nothing (R1).
	Seq int64
	// PrevState is the state the row was claimed from: pending, failed (a
	// due retry) or started (a dead worker's expired lease).
	PrevState State
	// RetryCount is the number of consecutive failures so far; claiming
	// does not reset it (R4).
	RetryCount int
	// BlobKey and BlobSize are what the last successful sync stored ("" and
	// 0 if none).
	BlobKey  string
	BlobSize int64
	// StagedKey names bytes that may exist at a key the row does not
	// record as its own ("" if none): an earlier sync recorded it with
	// StageKeys (the sync engine stages a claimed batch's keys while
	// their transfers run) and may have published there without its
	// settle committing, or a deleted record's removal failed and
	// RequeueRemoval kept the event's key. The next sync removes them
	// (ClearStagedKey) unless it stores the record at that same key; a
	// delete removes them. Removing bytes that were never published
	// removes nothing.
	StagedKey string
	// VerificationChecksum is the local SHA-256 (hex) recorded by the last
	// sync or verification, "" if none.
	VerificationChecksum string
	// VerificationFailed is true when the row's last verification failed
	// (a mismatch, a missing or damaged local copy): the sync must not
	// trust the local copy, for example by fetching only what it lacks.
	VerificationFailed bool
	// LastSyncedAt is when the row was last synced; zero if never or since
	// it was last marked pending.
	LastSyncedAt time.Time
	// LeaseExpiresAt is when the lease ends unless renewed.
	LeaseExpiresAt time.Time
}

// Key returns the claimed row's key.
func (c Claim) Key() Key { return Key{Replicable: c.Replicable, ModelID: c.ModelID} }

// claimSQL claims, per type, up to n rows: first started rows whose lease
// expired (a dead worker's, R3: few, and waiting longest), then failed rows
// whose retry is due up to a quarter of n (at least one when n >= 2), then
// pending rows in seq order (FIFO). So however large the pending backlog
// (a backfill of millions), a dead worker's rows and due retries are
// reached by the next claim, and fresh pending work still gets most of
// every claim (R5). When the pending rows do not fill the quota,
// claimMoreDueSQL takes more due retries in a second statement. Each
// branch walks its own partial index and skips rows other claimers hold;
// the outer LIMIT stops the later branches once the earlier ones fill the
// quota. Paused types are skipped.
const claimSQL = `
WITH lim AS (
  SELECT t.replicable, t.n, CASE WHEN t.n >= 2 THEN greatest(1, t.n / 4) ELSE 0 END AS due
  FROM unnest($1::text[], $2::int[]) AS t(replicable, n)
  WHERE t.n > 0
    AND NOT EXISTS (SELECT 1 FROM geo_paused p WHERE p.replicable = t.replicable)
), picked AS (
  SELECT c.replicable, c.model_id, c.state
  FROM lim CROSS JOIN LATERAL (
    -- FOR UPDATE is not allowed directly in a UNION branch, but is inside
    -- a sub-select; Append pulls the branches lazily, so the outer LIMIT
    -- stops them (and their locking) once the quota is met.
    SELECT * FROM (SELECT r.replicable, r.model_id, r.state FROM geo_registry r
      WHERE r.replicable = lim.replicable AND r.state = 1 AND r.lease_expires_at < $3
      ORDER BY r.lease_expires_at LIMIT lim.n FOR UPDATE SKIP LOCKED) expired
    UNION ALL
    SELECT * FROM (SELECT r.replicable, r.model_id, r.state FROM geo_registry r
      WHERE r.replicable = lim.replicable AND r.state = 3 AND r.retry_at <= $3
      ORDER BY r.retry_at LIMIT lim.due FOR UPDATE SKIP LOCKED) due
    UNION ALL
    SELECT * FROM (SELECT r.replicable, r.model_id, r.state FROM geo_registry r
      WHERE r.replicable = lim.replicable AND r.state = 0
      ORDER BY r.seq LIMIT lim.n FOR UPDATE SKIP LOCKED) pending
    LIMIT lim.n
  ) c
)` + claimUpdateSQL

// claimMoreDueSQL claims, per type, up to n more failed rows whose retry
// is due (oldest first), after claimSQL left room: rows claimSQL took are
// started now and not seen again.
const claimMoreDueSQL = `
WITH picked AS (
  SELECT c.replicable, c.model_id, c.state
  FROM unnest($1::text[], $2::int[]) AS lim(replicable, n) CROSS JOIN LATERAL (
    SELECT r.replicable, r.model_id, r.state FROM geo_registry r
    WHERE r.replicable = lim.replicable AND r.state = 3 AND r.retry_at <= $3
    ORDER BY r.retry_at LIMIT lim.n FOR UPDATE SKIP LOCKED
  ) c
  WHERE lim.n > 0
)` + claimUpdateSQL

// claimUpdateSQL leases the picked rows to owner $4 until $5 and returns
// them, with the state each was claimed from.
const claimUpdateSQL = `
UPDATE geo_registry r
SET state = 1, lease_owner = $4, lease_expires_at = $5, updated_at = $3
FROM picked p
WHERE r.replicable = p.replicable AND r.model_id = p.model_id
RETURNING r.replicable, r.model_id, r.seq, p.state AS prev_state, r.retry_count,
  coalesce(r.blob_key, '') AS blob_key, coalesce(r.staged_key, '') AS staged_key, coalesce(r.blob_size, 0) AS blob_size,
  coalesce(r.verification_checksum, '') AS verification_checksum,
  r.verification_state = 3 AS verification_failed, r.last_synced_at, r.lease_expires_at`

// Claim claims due rows for owner in one statement and leases them for
// lease: for each type in limits, up to Limit rows, taking started rows
// whose lease expired first (a dead worker's, R3), then failed rows whose
// retry_at has passed (oldest first) up to a quarter of Limit (at least
// one when Limit is 2 or more), then pending rows (FIFO by seq), then
// more due retries. Whatever the pending backlog, a dead worker's rows and
// due retries are claimed by the next claim.
// Claimed rows become started, owned by owner until now+lease; retry_count
// and the failure fields are left as they are (R4).
//
// Concurrent claimers (goroutines or processes) never get the same row.
// Paused types, and limits of 0 or less, yield nothing. Entries naming the
// same type are added together. owner must be unique among live workers
// (for example host, pid and a random suffix) and lease positive. The
// returned claims are in no particular order. A row another transaction
// holds locked at that moment (a settle, an event) is skipped and left for
// a later call, so an empty result does not prove there is no due work.
func (s *Store) Claim(ctx context.Context, p ClaimParams) ([]Claim, error) {
	args, err := s.claimArgs(p)
	if err != nil || args == nil {
		return nil, err
	}
	var rows []claimScan
	if err := s.leaseTx(ctx, func(tx *sqlx.Tx) error {
		st, err := s.prepared(ctx, tx, claimSQL)
		if err != nil {
			return err
		}
		if err := s.stmts.Check(claimSQL, st.SelectContext(ctx, &rows, args...)); err != nil {
			return err
		}
		// Room left (no pending backlog): more due retries.
		more, ok := moreDueArgs(args, rows)
		if !ok {
			return nil
		}
		st, err = s.prepared(ctx, tx, claimMoreDueSQL)
		if err != nil {
			return err
		}
		var extra []claimScan
		if err := s.stmts.Check(claimMoreDueSQL, st.SelectContext(ctx, &extra, more...)); err != nil {
			return err
		}
		rows = append(rows, extra...)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("registry: claim: %w", err)
	}
	claims := make([]Claim, len(rows))
	for i, r := range rows {
		claims[i] = Claim{
			Replicable:           r.Replicable,
			ModelID:              r.ModelID,
			Seq:                  r.Seq,
			PrevState:            State(r.PrevState),
			RetryCount:           r.RetryCount,
			BlobKey:              r.BlobKey,
			StagedKey:            r.StagedKey,
			BlobSize:             r.BlobSize,
			VerificationChecksum: r.VerificationChecksum,
			VerificationFailed:   r.VerificationFailed,
			LastSyncedAt:         r.LastSyncedAt.Time,
			LeaseExpiresAt:       r.LeaseExpiresAt,
		}
	}
	return claims, nil
}

// claimArgs validates Claim's arguments and returns claimSQL's arguments,
// or nil when there is nothing to claim.
func (s *Store) claimArgs(p ClaimParams) ([]any, error) {
	if err := p.Lease.validate("claim"); err != nil {
		return nil, err
	}
	limits := p.Limits
	var types []string
	var ns []int64
	index := map[string]int{}
	for _, l := range limits {
		if l.Limit <= 0 {
			continue
		}
		if i, ok := index[l.Replicable]; ok {
			ns[i] += int64(l.Limit)
			continue
		}
		index[l.Replicable] = len(types)
		types = append(types, l.Replicable)
		ns = append(ns, int64(l.Limit))
	}
	if len(types) == 0 {
		return nil, nil
	}
	now := s.now()
	return []any{pq.StringArray(types), pq.Int64Array(ns), now, p.Lease.Owner, now.Add(p.Lease.Duration)}, nil
}

// moreDueArgs returns claimMoreDueSQL's arguments for the room claimSQL
// (run with args) left per type, and false when it left none.
func moreDueArgs(args []any, got []claimScan) ([]any, bool) {
	types := args[0].(pq.StringArray)
	ns := args[1].(pq.Int64Array)
	left := make(pq.Int64Array, len(ns))
	copy(left, ns)
	for _, r := range got {
		for i, t := range types {
			if t == r.Replicable {
				left[i]--
			}
		}
	}
	room := false
	for _, n := range left {
		room = room || n > 0
	}
	if !room {
		return nil, false
	}
	return []any{types, left, args[2], args[3], args[4]}, true
}

type claimScan struct {
	Replicable           string       `db:"replicable"`
	ModelID              int64        `db:"model_id"`
	Seq                  int64        `db:"seq"`
	PrevState            int16        `db:"prev_state"`
	RetryCount           int          `db:"retry_count"`
	BlobKey              string       `db:"blob_key"`
	StagedKey            string       `db:"staged_key"`
	BlobSize             int64        `db:"blob_size"`
	VerificationChecksum string       `db:"verification_checksum"`
	VerificationFailed   bool         `db:"verification_failed"`
	LastSyncedAt         sql.NullTime `db:"last_synced_at"`
	LeaseExpiresAt       time.Time    `db:"lease_expires_at"`
}

// claimArrays splits claims into the parallel arrays the statements below
// unnest.
func claimArrays(claims []Claim) (types []string, ids, seqs, prev []int64) {
	for _, c := range claims {
		types = append(types, c.Replicable)
		ids = append(ids, c.ModelID)
		seqs = append(seqs, c.Seq)
		prev = append(prev, int64(c.PrevState))
	}
	return types, ids, seqs, prev
}

// lockHeldSQL selects and locks, in key order, the rows of the claims
// ($2 replicables, $3 model ids, $4 seqs) that owner $1 still holds. Every
// statement that locks several registry rows takes them in this order
// (MarkPending and Resync too), so two of them can wait for each other
// but never deadlock; a row changed while this waited for its lock is
// re-checked on its new version and dropped if the claim is gone.
const lockHeldSQL = `SELECT h.replicable, h.model_id, h.seq FROM geo_registry h
  JOIN unnest($2::text[], $3::bigint[], $4::bigint[]) AS hk(replicable, model_id, seq)
    ON h.replicable = hk.replicable AND h.model_id = hk.model_id
  WHERE h.seq = hk.seq AND h.state = 1 AND h.lease_owner = $1
  ORDER BY h.replicable, h.model_id
  FOR UPDATE OF h`

// renewLeasesSQL extends the leases of the held claims among the arrays.
const renewLeasesSQL = `
UPDATE geo_registry r SET lease_expires_at = $5, updated_at = $6
FROM (` + lockHeldSQL + `) sel
WHERE r.replicable = sel.replicable AND r.model_id = sel.model_id
RETURNING r.replicable, r.model_id, r.seq`

// RenewLeases extends to now+lease, in one statement, the leases of the
// claims that owner still holds (row started, owned by owner, same seq),
// and returns the keys of those it no longer holds (same order as claims):
// marked pending again (a claim of an older generation of a row is lost
// even if a newer one is held), deleted, or reclaimed by another owner
// after expiry. The caller should
// abandon work on a lost key; its settle would return false anyway.
func (s *Store) RenewLeases(ctx context.Context, lease Lease, claims []Claim) ([]Key, error) {
	if len(claims) == 0 {
		return nil, nil
	}
	if err := lease.validate("renew leases"); err != nil {
		return nil, err
	}
	owner := lease.Owner
	types, ids, seqs, _ := claimArrays(claims)
	now := s.now()
	var renewed []struct {
		Replicable string `db:"replicable"`
		ModelID    int64  `db:"model_id"`
		Seq        int64  `db:"seq"`
	}
	if err := s.leaseTx(ctx, func(tx *sqlx.Tx) error {
		st, err := s.prepared(ctx, tx, renewLeasesSQL)
		if err != nil {
			return err
		}
		return s.stmts.Check(renewLeasesSQL, st.SelectContext(ctx, &renewed, owner, pq.Array(types), pq.Array(ids), pq.Array(seqs), now.Add(lease.Duration), now))
	}); err != nil {
		return nil, fmt.Errorf("registry: renew leases: %w", err)
	}
	type generation struct {
		key Key
		seq int64
	}
	held := make(map[generation]bool, len(renewed))
	for _, r := range renewed {
		held[generation{Key{Replicable: r.Replicable, ModelID: r.ModelID}, r.Seq}] = true
	}
	var lost []Key
	for _, c := range claims {
		if !held[generation{c.Key(), c.Seq}] {
			lost = append(lost, c.Key())
		}
	}
	return lost, nil
}

// Release gives back claims owner still holds (graceful shutdown): each
// such row returns to the state it was claimed from, failed rows to
// failed (their retry_at, already due, and retry_count unchanged), others
// to pending keeping their seq (and so their FIFO place) and retry_count;
// the lease is cleared. Claims no longer held are ignored.
func (s *Store) Release(ctx context.Context, owner string, claims []Claim) error {
	if len(claims) == 0 {
		return nil
	}
	types, ids, seqs, prev := claimArrays(claims)
	if _, err := s.db.ExecContext(ctx, `
UPDATE geo_registry r
SET state = CASE WHEN k.prev = 3 THEN 3 ELSE 0 END,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = $6
FROM (`+lockHeldSQL+`) sel
JOIN unnest($2::text[], $3::bigint[], $4::bigint[], $5::int[]) AS k(replicable, model_id, seq, prev)
  ON k.replicable = sel.replicable AND k.model_id = sel.model_id AND k.seq = sel.seq
WHERE r.replicable = sel.replicable AND r.model_id = sel.model_id`,
		owner, pq.Array(types), pq.Array(ids), pq.Array(seqs), pq.Array(prev), s.now()); err != nil {
		return fmt.Errorf("registry: release: %w", err)
	}
	return nil
}

// SyncedResult describes a successful sync for SettleSynced.
type SyncedResult struct {
	// BlobKey is the storage key the bytes were published at.
	BlobKey string
	// Size is the number of bytes.
	Size int64
	// Checksum is the lowercase hex SHA-256 of the local bytes, "" if not
	// computed.
	Checksum string
	// PrimaryChecksum is the primary's SHA-256 of the record's bytes, ""
	// when the primary has none yet. When known it must equal Checksum.
	PrimaryChecksum string
	// Skipped says the download was skipped because the bytes were already
	// present and matched. It is informational: the row is settled the
	// same way.
	Skipped bool
}

// SettleSynced is SettleSyncedBatch for one claim, without removing the
// bytes at keys the row stops naming (tests use it; the sync engine
// settles in batches). It returns (false, nil) when the claim is no
// longer current (publish is not called), an error matching
// ErrChecksumMismatch for a known primary checksum that differs from
// r.Checksum (publish is not called), and publish's error, wrapped, when
// publish fails (the row stays started).
func (s *Store) SettleSynced(ctx context.Context, owner string, c Claim, r SyncedResult, publish func(ctx context.Context) error) (bool, error) {
	out := s.SettleSyncedBatch(ctx, owner, []SettleItem{{Claim: c, Result: r, Publish: publish}})
	return out[0].Settled, out[0].Err
}

// errStale rolls back a transaction whose claim is no longer current.
var errStale = errors.New("registry: claim no longer current")

// SettleFailed records that claim c's sync failed, if the claim is still
// current (row started, owned by owner, seq c.Seq); otherwise it changes
// nothing and returns false. The row becomes failed with retry_count one
// more than the row's current count (read under the row lock, so a stale
// c.RetryCount does not matter), retry_at = now + Retry.NextRetry(that
// count, missingOnPrimary), last_sync_failure = reason cut to
// MaxFailureLen bytes, the given missing_on_primary, and no lease.
// retry_count keeps growing across consecutive failures and is reset only
// by SettleSynced or a MarkPending/Resync (R4).
func (s *Store) SettleFailed(ctx context.Context, owner string, c Claim, reason string, missingOnPrimary bool) (bool, error) {
	reason = truncate(reason, s.maxFailureLen)
	now := s.now()
	settled := false
	err := s.inTx(ctx, func(tx *sqlx.Tx) error {
		var count int
		err := tx.GetContext(ctx, &count, `
SELECT retry_count FROM geo_registry
WHERE replicable = $1 AND model_id = $2 AND seq = $3 AND state = 1 AND lease_owner = $4
FOR UPDATE`, c.Replicable, c.ModelID, c.Seq, owner)
		if errors.Is(err, sql.ErrNoRows) {
			return errStale
		}
		if err != nil {
			return err
		}
		count++
		retryAt := now.Add(s.retry.NextRetry(count, missingOnPrimary))
		if _, err := tx.ExecContext(ctx, `
UPDATE geo_registry SET state = 3, retry_count = $3, retry_at = $4, last_sync_failure = $5,
  missing_on_primary = $6, lease_owner = NULL, lease_expires_at = NULL, updated_at = $7
WHERE replicable = $1 AND model_id = $2`,
			c.Replicable, c.ModelID, count, retryAt, reason, missingOnPrimary, now); err != nil {
			return err
		}
		settled = true
		return nil
	})
	if errors.Is(err, errStale) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("registry: settle failed %s/%d: %w", c.Replicable, c.ModelID, err)
	}
	return settled, nil
}

// Delete removes the row of record id of replicable and its bytes, for a
// deleted event or an orphan (R2). In one transaction it deletes the row,
// waiting for a settle in progress on it, then removes the bytes at each
// of the keys the row recorded (blob_key), staged (staged_key) and key
// (the one a deleted event carries; "" for none) that no other registry
// row still names (R7: keys may be shared), calling remove(ctx, key) once
// per such key while holding the key's lock, then commits. If remove
// fails the transaction is rolled back, the row is kept and the error is
// returned wrapped. It reports whether a row existed. key's bytes are
// removed even when there was no row, since bytes may exist without one.
func (s *Store) Delete(ctx context.Context, replicable string, id int64, key string, remove func(ctx context.Context, key string) error) (bool, error) {
	existed, err := s.deleteRow(ctx, key, true, remove, `
DELETE FROM geo_registry WHERE replicable = $1 AND model_id = $2
RETURNING coalesce(blob_key, ''), coalesce(staged_key, '')`, replicable, id)
	if err != nil {
		return false, fmt.Errorf("registry: delete %s/%d: %w", replicable, id, err)
	}
	return existed, nil
}

// DeleteIfClaim is Delete for a claimed row, used when the primary says the
// record no longer exists: it deletes the row and removes the bytes at its
// recorded and staged keys that no other row names, only if the claim is
// still current (row started, owned by owner, seq c.Seq); otherwise it
// changes nothing and returns false without calling remove.
func (s *Store) DeleteIfClaim(ctx context.Context, owner string, c Claim, remove func(ctx context.Context, key string) error) (bool, error) {
	deleted, err := s.deleteRow(ctx, "", false, remove, `
DELETE FROM geo_registry
WHERE replicable = $1 AND model_id = $2 AND seq = $3 AND state = 1 AND lease_owner = $4
RETURNING coalesce(blob_key, ''), coalesce(staged_key, '')`, c.Replicable, c.ModelID, c.Seq, owner)
	if err != nil {
		return false, fmt.Errorf("registry: delete claimed %s/%d: %w", c.Replicable, c.ModelID, err)
	}
	return deleted, nil
}

// deleteRow runs a DELETE ... RETURNING blob_key, staged_key of one row
// (args start with its replicable and model id), then removes, under their
// key locks, the bytes at those keys and at extra that no other row
// names, in one transaction. removeIfNone says whether extra's bytes are
// removed when nothing was deleted.
func (s *Store) deleteRow(ctx context.Context, extra string, removeIfNone bool, remove func(context.Context, string) error, query string, args ...any) (bool, error) {
	existed := false
	row := Key{Replicable: args[0].(string), ModelID: args[1].(int64)}
	err := s.inTx(ctx, func(tx *sqlx.Tx) error {
		var key, staged string
		err := tx.QueryRowContext(ctx, query, args...).Scan(&key, &staged)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			if !removeIfNone {
				return errStale
			}
		case err != nil:
			return err
		default:
			existed = true
		}
		if remove == nil {
			return nil
		}
		return s.removeReleased(ctx, tx, row, releasedKeys("", key, staged, extra), remove)
	})
	if errors.Is(err, errStale) {
		return false, nil
	}
	return existed, err
}

// removeReleased removes, in tx and under their key locks, the bytes at
// each of keys (released by row) that no other registry row names.
func (s *Store) removeReleased(ctx context.Context, tx *sqlx.Tx, row Key, keys []string, remove func(context.Context, string) error) error {
	rels := make([]release, len(keys))
	for i, k := range keys {
		rels[i] = release{key: k, rowKey: row}
	}
	free, err := s.unreferenced(ctx, tx, rels)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if !free.has(row.Replicable, k) {
			continue
		}
		if err := remove(ctx, k); err != nil {
			return fmt.Errorf("remove %q: %w", k, err)
		}
	}
	return nil
}

// leaseTx runs fn, which only takes or extends leases, in a transaction
// committed without waiting for its WAL flush (synchronous_commit off for
// this transaction alone). A lease is not data: if the tracking database
// crashes before the commit reaches disk, the rows simply return to the
// state they had (claimable again), and every settle re-checks its claim
// under the row lock, so the worker that believed it held them finds its
// claim gone and discards its work. Any later durable commit flushes the
// lease with it. Settles, failures, deletes and staged keys stay durable.
// Claims are on every sync's critical path; their flush was the
// largest single wait of a small blob's sync (docs/performance.md).
func (s *Store) leaseTx(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	return s.inTxSet(ctx, `SET LOCAL synchronous_commit = off; `+rowPlansSQL, fn)
}

// rowPlansSQL makes a transaction's statements reach registry rows through
// the indexes, whatever the table's size, with one plan per connection.
// The claim, renewal, stage and settle statements join a few keys (an
// unnest, a claimed batch) to geo_registry; the planner's estimate for
// those keys is a default (50 to 100 rows), and below about 25,000
// registry rows it then prefers a hash join over a sequential scan of the
// whole registry, on every call: 8 ms per claim at 20,000 rows against
// 0.1 ms through the primary key (docs/performance.md). Custom plans do
// not help (the estimates come from LIMITs and unnests of parameters) and
// cost more to make than to run, so the generic plan, made once under
// these settings, is kept. SET LOCAL ends with the transaction: other
// statements on the connection, the caller's included, are not affected.
const rowPlansSQL = `SET LOCAL enable_seqscan = off; SET LOCAL plan_cache_mode = force_generic_plan`

// rowTx is inTx for transactions that run the key-joined statements
// above (rowPlansSQL).
func (s *Store) rowTx(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	return s.inTxSet(ctx, rowPlansSQL, fn)
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

// deleteRowsSQL deletes the rows of replicable $1 among model ids $2 and
// returns their keys. Run with deleteRowsPlanSQL: the primary key's index
// scan visits (and so locks) the rows in model_id order, as every
// statement locking several rows does, without a locking pass of its own
// (a FOR UPDATE sub-select first cost 27 ms per 1,000 rows here, the
// plain index scan 6 ms).
const deleteRowsSQL = `
DELETE FROM geo_registry
WHERE replicable = $1 AND model_id = ANY($2::bigint[])
RETURNING model_id, coalesce(blob_key, '') AS blob_key, coalesce(staged_key, '') AS staged_key`

// deleteRowsPlanSQL makes deleteRowsSQL walk the primary key's index (a
// bitmap scan would lock the rows in their physical order).
const deleteRowsPlanSQL = `SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off`

// DeleteRows is Delete for many rows of one type at once (the consistency
// pass's orphans): in one transaction it deletes the rows of ids that
// exist, waiting for settles in progress on them (R2), then calls remove
// once with the keys those rows recorded or staged that no other registry
// row names (R7), under the keys' locks, and commits. If remove fails the
// transaction is rolled back, no row is deleted and the error is returned
// wrapped. It returns the ids whose rows it deleted. It takes the bulk
// lock (keyref.go) rather than a lock per key: meant for chunks of a few
// hundred to a few thousand rows.
func (s *Store) DeleteRows(ctx context.Context, replicable string, ids []int64, remove func(ctx context.Context, keys []string) error) ([]int64, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	sorted := slices.Clone(ids)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	var deleted []int64
	err := s.inTxSet(ctx, deleteRowsPlanSQL, func(tx *sqlx.Tx) error {
		var rows []struct {
			ModelID int64  `db:"model_id"`
			BlobKey string `db:"blob_key"`
			Staged  string `db:"staged_key"`
		}
		if err := tx.SelectContext(ctx, &rows, deleteRowsSQL, replicable, pq.Array(sorted)); err != nil {
			return err
		}
		var rels []release
		var keys []string
		for _, r := range rows {
			deleted = append(deleted, r.ModelID)
			for _, k := range releasedKeys("", r.BlobKey, r.Staged) {
				rels = append(rels, release{key: k, rowKey: Key{Replicable: replicable, ModelID: r.ModelID}})
				keys = append(keys, k)
			}
		}
		free, err := s.checkReleased(ctx, tx, rels, true)
		if err != nil {
			return err
		}
		var gone []string
		for _, k := range keys {
			if free.take(replicable, k) { // a key two rows released is removed once
				gone = append(gone, k)
			}
		}
		if len(gone) == 0 || remove == nil {
			return nil
		}
		if err := remove(ctx, gone); err != nil {
			return fmt.Errorf("remove: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("registry: delete rows %s: %w", replicable, err)
	}
	return deleted, nil
}
