package registry

import (
	"context"
	"database/sql/driver"
	"fmt"
	"strings"
	"time"

	"github.com/lib/pq"
)

// The key-joined statements of claim and settle transactions, for plan
// tests.

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

// ExplainTopFailures returns the plan of TopFailures' statement (EXPLAIN
// without ANALYZE). For tests.
func (s *Store) ExplainTopFailures(ctx context.Context, types []string, sample int) (string, error) {
	var lines []string
	if err := s.db.SelectContext(ctx, &lines, `EXPLAIN (COSTS OFF) `+topFailuresSQL, pq.Array(types), sample); err != nil {
		return "", err
	}
	return strings.Join(lines, "\n"), nil
}

// ExplainAnalyzeTopFailures runs TopFailures' statement under EXPLAIN
// ANALYZE and returns its plan with the row counts and heap fetches. For
// tests.
func (s *Store) ExplainAnalyzeTopFailures(ctx context.Context, types []string, sample int) (string, error) {
	var lines []string
	if err := s.db.SelectContext(ctx, &lines, `EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) `+topFailuresSQL, pq.Array(types), sample); err != nil {
		return "", err
	}
	return strings.Join(lines, "\n"), nil
}

// BatchPlansSQL is batchPlansSQL, for plan tests.
const BatchPlansSQL = batchPlansSQL

// ResyncBatchSQL returns the statement of one batch of ResyncBatches,
// for plan tests.
func ResyncBatchSQL(onlyFailed bool) string { return resyncBatch(onlyFailed).query }

// ReverifyBatchSQL returns the statement of one batch of
// ReverifyBatches, for plan tests.
func ReverifyBatchSQL(onlyFailed bool) string { return reverifyBatch(onlyFailed).query }

// NormalizeReason is normalizeReason, for tests.
var NormalizeReason = normalizeReason
