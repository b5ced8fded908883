package registry

import (
	"context"
	"strings"
	"time"
)

// ExplainClaim returns the plan of the statement Claim would run (EXPLAIN
// without ANALYZE: nothing is claimed). For tests.
func (s *Store) ExplainClaim(ctx context.Context, owner string, lease time.Duration, limits []TypeLimit) (string, error) {
	args, err := s.claimArgs(owner, lease, limits)
	if err != nil {
		return "", err
	}
	var lines []string
	if err := s.db.SelectContext(ctx, &lines, `EXPLAIN (COSTS OFF) `+claimSQL, args...); err != nil {
		return "", err
	}
	return strings.Join(lines, "\n"), nil
}
