package regstore

import (
	"context"
	"database/sql/driver"
	"fmt"
	"strings"
	"time"

	"github.com/lib/pq"
)

// ExplainClaim returns the plan of the statement Claim would run (EXPLAIN
// without ANALYZE: nothing is claimed). For tests.
func (s *Store) ExplainClaim(ctx context.Context, owner string, lease time.Duration, limits []TypeLimit) (string, error) {
	args, err := s.claimArgs(ClaimParams{Lease: Lease{Owner: owner, Duration: lease}, Limits: limits})
	if err != nil {
		return "", err
	}
	var lines []string
	if err := s.db.SelectContext(ctx, &lines, `EXPLAIN (COSTS OFF) `+claimSQL, args...); err != nil {
		return "", err
	}
	return strings.Join(lines, "\n"), nil
}

// ExplainAnalyzeNewFailures runs NewFailures' statement under EXPLAIN
// ANALYZE and returns its plan with the row counts and heap fetches. For
// tests.
func (s *Store) ExplainAnalyzeNewFailures(ctx context.Context, types []string, since time.Time, limit int) (string, error) {
	var lines []string
	if err := s.db.SelectContext(ctx, &lines, `EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) `+newFailuresSQL,
		pq.Array(types), since, limit); err != nil {
		return "", err
	}
	return strings.Join(lines, "\n"), nil
}

// The key-joined statements of claim and settle transactions, for plan
// tests.
const (
	ClaimSQL       = claimSQL
	LockHeldSQL    = lockHeldSQL
	StageKeysSQL   = stageKeysSQL
	SettleBatchSQL = settleBatchSQL
	RenewLeasesSQL = renewLeasesSQL
	ClearStagedSQL = clearStagedSQL
)

// ExplainPrepared returns the plan PostgreSQL uses for query when it is
// prepared and executed with args in a transaction that first ran set
// (rowPlansSQL, or "" for none): EXPLAIN EXECUTE, so the plan cache
// chooses between generic and custom plans as it does for the Store's
// prepared statements. Nothing is changed: the transaction rolls back.
func (s *Store) ExplainPrepared(ctx context.Context, set, query string, args ...any) (string, error) {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return "", err
	}
	defer tx.Rollback()
	if set != "" {
		if _, err := tx.ExecContext(ctx, set); err != nil {
			return "", err
		}
	}
	if _, err := tx.ExecContext(ctx, `PREPARE geo_explain AS `+query); err != nil {
		return "", err
	}
	defer tx.ExecContext(context.WithoutCancel(ctx), `DEALLOCATE geo_explain`)
	// EXECUTE takes no bound parameters: pass literals.
	params := make([]string, len(args))
	for i, a := range args {
		if v, ok := a.(driver.Valuer); ok {
			var err error
			if a, err = v.Value(); err != nil {
				return "", err
			}
		}
		switch v := a.(type) {
		case time.Time:
			a = v.Format(time.RFC3339Nano)
		case []byte:
			a = string(v)
		}
		params[i] = pq.QuoteLiteral(fmt.Sprint(a))
	}
	var lines []string
	// Several executions: the plan cache tries custom plans first.
	for range 6 {
		lines = lines[:0]
		if err := tx.SelectContext(ctx, &lines, `EXPLAIN (COSTS OFF) EXECUTE geo_explain(`+strings.Join(params, ", ")+`)`); err != nil {
			return "", err
		}
	}
	return strings.Join(lines, "\n"), nil
}

// RowPlansSQL is rowPlansSQL, for plan tests.
const RowPlansSQL = rowPlansSQL

// CopyMissing writes ids with InsertMissing's COPY path only (no
// fallback), for tests.
func (s *Store) CopyMissing(ctx context.Context, replicable string, ids []int64) (int64, error) {
	return s.copyMissing(ctx, replicable, ids)
}

// LockKeysSQL is lockKeysSQL, for tests that hold a key's lock the way
// StageKeys does.
const LockKeysSQL = lockKeysSQL
