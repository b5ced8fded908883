package regstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/geoframework/geo/internal/stmtcache"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/strategy"
)

// DefaultMaxFailureLen is the default Options.MaxFailureLen.
const DefaultMaxFailureLen = 255

// MaxFailureLenMax is the largest Options.MaxFailureLen accepted: the
// failure indexes carry the reason (migration 0011), and an index entry
// holds at most about 2,700 bytes, so a longer reason would make the
// failure's settle fail.
const MaxFailureLenMax = 2000

// Options configures a Store. The zero value gives the defaults.
type Options struct {
	// Now is the clock. Every time the store writes or compares (retry_at,
	// lease expiry, last_synced_at...) comes from it, never from the
	// database's now(), so tests can use a fake clock. nil means time.Now.
	Now func() time.Time
	// Retry decides when a failed sync is tried again. nil means
	// strategy.DefaultBackoff().
	Retry strategy.RetryPolicy
	// MaxFailureLen is the most bytes of a failure reason stored in
	// last_sync_failure (and verification_failure, geo_checksums.failure);
	// longer reasons are cut on a rune boundary and end with "…" within
	// the bound (below 3 bytes, without it). 0 means DefaultMaxFailureLen;
	// negative or above MaxFailureLenMax is an error.
	MaxFailureLen int
	// KeySpaces maps each registered type to the key space its keys live
	// in: the kind's storage ("blob" for the site's blob storage,
	// "repository" for its repository root). R7 holds per space: bytes at a
	// key are kept while a row of a type in the same space (or of a type
	// the map does not list) names the key, and rows of other spaces do not
	// keep them. Nil means one space for every type. Only Store reads it.
	KeySpaces map[string]string
}

// Store is the PostgreSQL store of the secondary's registry rows: the sync
// state machine, claims with leases, and settles that enforce R1 (no lost
// update) and R2 (no resurrection). It expects the tracking migrations
// (MigrateTracking) to have been applied in the connection's schema.
//
// A Store is safe for concurrent use, and several processes may share one
// tracking database: work is claimed with FOR UPDATE SKIP LOCKED.
//
// Connections: lib/pq's binary_parameters=yes connection parameter sends
// each parameterized statement in one round trip instead of two; it is
// recommended for the tracking database and changes no behaviour here.
type Store struct {
	base
	// spaces is Options.KeySpaces; spaceTypes and spaceNames are it as
	// parallel arrays for referencedSQL.
	spaces                 map[string]string
	spaceTypes, spaceNames []string
	// Store gives the engines the registry's public reads and admin
	// actions (counts, folds, resync...) on the same database.
	*registry.Store
	copies atomic.Int64 // InsertMissing batches written by COPY (for tests)
}

// base is what Store and ChecksumStore share: the handle, the clock, the
// retry policy and the failure-reason cut, validated and defaulted once.
type base struct {
	db            *sqlx.DB
	stmts         *stmtcache.Cache
	now           func() time.Time
	retry         strategy.RetryPolicy
	maxFailureLen int
}

// newBase validates opts for the constructor named who and applies the
// documented defaults.
func newBase(who string, db *sqlx.DB, opts Options) (base, error) {
	if db == nil {
		return base{}, fmt.Errorf("registry: %s: db is nil", who)
	}
	if opts.MaxFailureLen < 0 || opts.MaxFailureLen > MaxFailureLenMax {
		return base{}, fmt.Errorf("registry: %s: Options.MaxFailureLen = %d, want 0 to %d", who, opts.MaxFailureLen, MaxFailureLenMax)
	}
	b := base{db: db, stmts: stmtcache.New(db), now: opts.Now, retry: opts.Retry, maxFailureLen: opts.MaxFailureLen}
	if b.now == nil {
		b.now = time.Now
	}
	if b.retry == nil {
		b.retry = strategy.DefaultBackoff()
	}
	if b.maxFailureLen == 0 {
		b.maxFailureLen = DefaultMaxFailureLen
	}
	return b, nil
}

// NewStore returns a Store over db. db must be a lib/pq ("postgres")
// handle. It returns an error naming the field for an invalid option.
func NewStore(db *sqlx.DB, opts Options) (*Store, error) {
	b, err := newBase("NewStore", db, opts)
	if err != nil {
		return nil, err
	}
	pub, err := registry.NewStore(db, registry.Options{Now: b.now})
	if err != nil {
		return nil, err
	}
	st := &Store{base: b, Store: pub, spaces: map[string]string{}}
	for typ, space := range opts.KeySpaces {
		if space == "" {
			return nil, fmt.Errorf("registry: NewStore: Options.KeySpaces[%q] is empty", typ)
		}
		st.spaces[typ] = space
		st.spaceTypes = append(st.spaceTypes, typ)
		st.spaceNames = append(st.spaceNames, space)
	}
	return st, nil
}

// DB returns the handle the store uses.
func (s *Store) DB() *sqlx.DB { return s.db }

// markPendingSQL inserts new rows as pending and moves existing non-pending
// rows (any of started, synced, failed) to pending with a new seq. Rows
// already pending keep their seq, so a record updated over and over keeps
// its place in the FIFO instead of starving. Ids are deduplicated and
// sorted so that concurrent calls lock rows in the same order.
const markPendingSQL = `
INSERT INTO geo_registry AS r (replicable, model_id, created_at, updated_at)
SELECT $1, u.id, $3, $3 FROM (SELECT DISTINCT id FROM unnest($2::bigint[]) AS t(id) ORDER BY id) u
ON CONFLICT (replicable, model_id) DO UPDATE SET` + toPendingSQL + `
WHERE r.state <> 0`

// toPendingSQL is what makes an existing row pending again (after ON
// CONFLICT ... DO UPDATE SET; $3 is the time): a new seq, no retry, no
// lease, last_synced_at cleared (GitLab #427792).
const toPendingSQL = `
  state = 0,
  seq = DEFAULT,
  retry_count = 0,
  retry_at = NULL,
  last_synced_at = NULL,
  missing_on_primary = false,
  lease_owner = NULL,
  lease_expires_at = NULL,
  updated_at = $3`

// MarkPending makes records ids of replicable pending, in one statement
// for any number of ids: missing rows are inserted; existing rows in any
// other state (started, synced, failed) become pending with a new seq,
// retry_count 0, no retry_at, last_synced_at cleared (GitLab #427792),
// missing_on_primary false and no lease. Rows already pending are left as
// they are and keep their place in the FIFO. last_sync_failure and the
// verification fields are kept until the next settle.
//
// This is what created and updated events do. R1: a started row gets a new
// seq, so the in-flight sync's SettleSynced returns false and the row is
// synced again. It returns the number of rows inserted or moved to pending.
func (s *Store) MarkPending(ctx context.Context, replicable string, ids []int64) (int64, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	res, err := s.db.ExecContext(ctx, markPendingSQL, replicable, pq.Array(ids), s.now())
	if err != nil {
		return 0, fmt.Errorf("registry: mark pending %s: %w", replicable, err)
	}
	return rowsAffected(res)
}

// requeueRemovalSQL makes a deleted record's row due for the sync engine:
// inserted pending if missing; a started or synced row becomes pending
// with a new seq (as markPendingSQL); a pending or failed row keeps its
// place and its backoff.
const requeueRemovalSQL = `
INSERT INTO geo_registry AS r (replicable, model_id, created_at, updated_at)
VALUES ($1, $2, $3, $3)
ON CONFLICT (replicable, model_id) DO UPDATE SET` + toPendingSQL + `
WHERE r.state IN (1, 2)`

// requeueRemovalKeySQL records key as a row's staged key when the row
// names no staged key and does not record key as its blob key; it returns
// whether the row names key now (as blob key or staged key).
const requeueRemovalKeySQL = `
WITH upd AS (
  UPDATE geo_registry SET staged_key = $3
  WHERE replicable = $1 AND model_id = $2 AND staged_key IS NULL AND blob_key IS DISTINCT FROM $3
  RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM upd) OR EXISTS (
  SELECT 1 FROM geo_registry WHERE replicable = $1 AND model_id = $2 AND (blob_key = $3 OR staged_key = $3))`

// RequeueRemoval hands the removal of deleted record id's bytes to the
// sync engine when it could not be done at once (the storage failed), so
// that one failing removal does not hold back the events after it, or
// stop a consistency pass. In one transaction it makes the row due: a
// missing row is inserted pending; a started or synced row becomes
// pending with a new seq (a sync in flight is discarded); a pending or
// failed row is left as it is, keeping its backoff. When key is not empty
// and the row records neither key (blob_key) nor another staged key, key
// becomes the row's staged key.
//
// The engine's next claim of the row then finds the record gone on the
// primary (ErrGone), removes the recorded and staged bytes and deletes
// the row, or records the failure on the row and retries with backoff.
// If the id was meanwhile given to a new record, the engine syncs that
// record and removes the staged key first (ClearStagedKey) unless the new
// record uses the same key. Keys are never reused by another record
// (strategy.BlobStrategy), so the delayed removal cannot take another
// record's bytes.
//
// It reports whether the row names key afterwards. false (key not empty)
// means the row already named a different staged key: nothing records
// key, and bytes there, if any, are the caller's to report.
func (s *Store) RequeueRemoval(ctx context.Context, replicable string, id int64, key string) (bool, error) {
	named := key == ""
	err := s.inTx(ctx, func(tx *sqlx.Tx) error {
		if _, err := tx.ExecContext(ctx, requeueRemovalSQL, replicable, id, s.now()); err != nil {
			return err
		}
		if key == "" {
			return nil
		}
		return tx.QueryRowContext(ctx, requeueRemovalKeySQL, replicable, id, key).Scan(&named)
	})
	if err != nil {
		return false, fmt.Errorf("registry: requeue removal %s/%d: %w", replicable, id, err)
	}
	return named, nil
}

const insertMissingSQL = `
INSERT INTO geo_registry (replicable, model_id, created_at, updated_at)
SELECT $1, unnest($2::bigint[]), $3, $3
ON CONFLICT DO NOTHING`

// copyMinIDs is the fewest ids InsertMissing writes with COPY; fewer go
// straight to insertMissingSQL.
const copyMinIDs = 256

// InsertMissing inserts a pending row for each of ids that has none and
// leaves existing rows untouched (the consistency engine's backfill).
// Duplicate ids are allowed. It returns the number of rows inserted.
// Batches of 10,000 ids or more are expected.
//
// A batch of at least 256 strictly ascending ids is first written with
// COPY in its own transaction: PostgreSQL then fills each heap page in
// one step, about 1.5 times as fast as INSERT ... SELECT. COPY has no ON
// CONFLICT, so if any of the ids has a row by then (the event consumer
// may have made one since the caller compared), the COPY fails whole, is
// rolled back and the batch is inserted again with ON CONFLICT DO
// NOTHING; so is a batch whose COPY fails for any other reason (a driver
// without COPY, say), and the INSERT's error, if any, is returned. Either
// way the same rows result.
func (s *Store) InsertMissing(ctx context.Context, replicable string, ids []int64) (int64, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	if len(ids) >= copyMinIDs && strictlyAscending(ids) {
		n, err := s.copyMissing(ctx, replicable, ids)
		if err == nil {
			s.copies.Add(1)
			return n, nil
		}
		if ctx.Err() != nil {
			return 0, fmt.Errorf("registry: insert missing %s: copy: %w", replicable, err)
		}
	}
	res, err := s.db.ExecContext(ctx, insertMissingSQL, replicable, pq.Array(ids), s.now())
	if err != nil {
		return 0, fmt.Errorf("registry: insert missing %s: %w", replicable, err)
	}
	return rowsAffected(res)
}

// copyMissing writes a pending row for each of ids with COPY in one
// transaction, all or nothing; it fails with a unique violation (see
// isUniqueViolation) when any of them already has a row. ids must be
// distinct.
func (s *Store) copyMissing(ctx context.Context, replicable string, ids []int64) (int64, error) {
	// The store's clock, formatted once, in the very text lib/pq sends
	// for insertMissingSQL's $3 (so the server rounds it the same way).
	now := string(pq.FormatTimestamp(s.now()))
	err := s.inTx(ctx, func(tx *sqlx.Tx) (err error) {
		stmt, err := tx.PrepareContext(ctx, `COPY geo_registry (replicable, model_id, created_at, updated_at) FROM STDIN`)
		if err != nil {
			return err
		}
		defer func() {
			if cerr := stmt.Close(); err == nil {
				err = cerr
			}
		}()
		for _, id := range ids {
			if _, err := stmt.ExecContext(ctx, replicable, id, now, now); err != nil {
				return err
			}
		}
		_, err = stmt.ExecContext(ctx) // ends the COPY; reports its error
		return err
	})
	if err != nil {
		return 0, err
	}
	return int64(len(ids)), nil
}

func strictlyAscending(ids []int64) bool {
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			return false
		}
	}
	return true
}

// IDsInRange returns up to limit model ids of replicable's rows with
// afterID < id <= upToID, ascending. The consistency engine compares such a
// range with the primary's ids in the same range (both sides bounded).
// limit must be positive.
func (s *Store) IDsInRange(ctx context.Context, replicable string, afterID, upToID int64, limit int) ([]int64, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("registry: ids in range %s: limit = %d, want > 0", replicable, limit)
	}
	ids := []int64{}
	err := s.db.SelectContext(ctx, &ids, `
SELECT model_id FROM geo_registry
WHERE replicable = $1 AND model_id > $2 AND model_id <= $3
ORDER BY model_id LIMIT $4`, replicable, afterID, upToID, limit)
	if err != nil {
		return nil, fmt.Errorf("registry: ids in range %s: %w", replicable, err)
	}
	return ids, nil
}

func rowsAffected(res sql.Result) (int64, error) {
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("registry: rows affected: %w", err)
	}
	return n, nil
}

// failureCutMarker ends a failure reason cut to MaxFailureLen, so an
// operator can tell the text goes on.
const failureCutMarker = "…"

// truncate cuts reason to at most max bytes on a rune boundary, after
// making it valid UTF-8 without NUL bytes (which PostgreSQL text rejects).
// A cut reason ends with failureCutMarker within the max bytes (a bound
// shorter than the marker cuts without it); a reason that fits is
// unchanged.
func truncate(reason string, max int) string {
	reason = strings.ToValidUTF8(reason, "\uFFFD")
	reason = strings.ReplaceAll(reason, "\x00", "")
	if len(reason) <= max {
		return reason
	}
	marker := failureCutMarker
	if max < len(marker) {
		marker = ""
	}
	cut := max - len(marker)
	for cut > 0 && !utf8.RuneStart(reason[cut]) {
		cut--
	}
	return reason[:cut] + marker
}

// Copies returns how many InsertMissing batches were written by COPY (for
// tests: it is the one way to tell which path a batch took).
func (s *Store) Copies() int64 { return s.copies.Load() }
