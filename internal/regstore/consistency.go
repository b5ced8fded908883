package regstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// ConsistencyCursor returns the last primary id the consistency engine
// reconciled for replicable in its current pass, or 0 when the next pass
// starts at the beginning.
func (s *Store) ConsistencyCursor(ctx context.Context, replicable string) (int64, error) {
	var after int64
	err := s.db.GetContext(ctx, &after, `SELECT after_id FROM geo_consistency WHERE replicable = $1`, replicable)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("registry: consistency cursor %s: %w", replicable, err)
	}
	return after, nil
}

// SaveConsistencyCursor records the consistency engine's position for
// replicable (0 when a pass completed), so a restart resumes there.
func (s *Store) SaveConsistencyCursor(ctx context.Context, replicable string, after int64) error {
	_, err := s.db.ExecContext(ctx, `
INSERT INTO geo_consistency (replicable, after_id, updated_at) VALUES ($1, $2, $3)
ON CONFLICT (replicable) DO UPDATE SET after_id = EXCLUDED.after_id, updated_at = EXCLUDED.updated_at`,
		replicable, after, s.now())
	if err != nil {
		return fmt.Errorf("registry: save consistency cursor %s: %w", replicable, err)
	}
	return nil
}
