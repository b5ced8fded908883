package regstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/lib/pq"
)

// ErrBadProcess is returned (wrapped) by Store.Heartbeat for a Process
// without an Owner or without a positive Interval.
var ErrBadProcess = errors.New("heartbeat needs an owner and a positive interval")

// heartbeatSQL upserts the writer's row and, in the same statement,
// deletes other rows whose heartbeat is older than $14 (none when $14 is
// NULL). Its own row is excluded from the delete, so the statement never
// deletes and upserts the same row.
const heartbeatSQL = `
WITH pruned AS (
  DELETE FROM geo_processes WHERE heartbeat_at < $14 AND owner <> $1 RETURNING 1
)
INSERT INTO geo_processes AS p (owner, host, pid, version, started_at, heartbeat_at, heartbeat_interval_ms,
  types, roles, in_flight, backfill, event_lag_seconds, event_lag_events, event_fell_behind)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $15)
ON CONFLICT (owner) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, version = EXCLUDED.version,
  started_at = EXCLUDED.started_at, heartbeat_at = EXCLUDED.heartbeat_at,
  heartbeat_interval_ms = EXCLUDED.heartbeat_interval_ms, types = EXCLUDED.types, roles = EXCLUDED.roles,
  in_flight = EXCLUDED.in_flight, backfill = EXCLUDED.backfill, event_lag_seconds = EXCLUDED.event_lag_seconds,
  event_lag_events = EXCLUDED.event_lag_events, event_fell_behind = EXCLUDED.event_fell_behind
RETURNING (SELECT count(*) FROM pruned)`

// Heartbeat writes p's row with HeartbeatAt set to the store's clock now,
// in one statement, creating it if absent (also after it was pruned as
// dead: a process that stalled and came back is alive again). When
// pruneAfter > 0 the same statement deletes the rows of other processes
// whose last heartbeat is older than pruneAfter, and pruned is their
// number. Several processes may beat at once.
func (s *Store) Heartbeat(ctx context.Context, p Process, pruneAfter time.Duration) (pruned int64, err error) {
	if p.Owner == "" || p.Interval <= 0 {
		return 0, fmt.Errorf("registry: heartbeat %q (interval %v): %w", p.Owner, p.Interval, ErrBadProcess)
	}
	inFlight, err := json.Marshal(nonNilMap(p.InFlight))
	if err != nil {
		return 0, fmt.Errorf("registry: heartbeat %s: %w", p.Owner, err)
	}
	backfill, err := json.Marshal(nonNilMap(p.Backfill))
	if err != nil {
		return 0, fmt.Errorf("registry: heartbeat %s: %w", p.Owner, err)
	}
	now := s.now()
	var before sql.NullTime
	if pruneAfter > 0 {
		before = sql.NullTime{Time: now.Add(-pruneAfter), Valid: true}
	}
	var (
		lagSeconds sql.NullFloat64
		lagEvents  sql.NullInt64
		fell       bool
	)
	if l := p.EventLag; l != nil {
		lagSeconds = sql.NullFloat64{Float64: l.Seconds, Valid: true}
		lagEvents = sql.NullInt64{Int64: l.Events, Valid: true}
		fell = l.FellBehind
	}
	err = s.db.QueryRowContext(ctx, heartbeatSQL,
		p.Owner, p.Host, p.PID, p.Version, p.StartedAt, now, p.Interval.Milliseconds(),
		pq.Array(nonNilSlice(p.Types)), pq.Array(nonNilSlice(p.Roles)), inFlight, backfill,
		lagSeconds, lagEvents, before, fell).Scan(&pruned)
	if err != nil {
		return 0, fmt.Errorf("registry: heartbeat %s: %w", p.Owner, err)
	}
	return pruned, nil
}

// RemoveProcess deletes owner's heartbeat row (a graceful shutdown); a
// missing row is no error.
func (s *Store) RemoveProcess(ctx context.Context, owner string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM geo_processes WHERE owner = $1`, owner); err != nil {
		return fmt.Errorf("registry: remove process %s: %w", owner, err)
	}
	return nil
}

func nonNilMap[V any](m map[string]V) map[string]V {
	if m == nil {
		return map[string]V{}
	}
	return m
}

func nonNilSlice(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
