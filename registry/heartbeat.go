package registry

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/lib/pq"
)

// ProcessDeadAfterBeats is how many of its own heartbeat intervals a
// process may go without a heartbeat before Process.Alive says it is dead:
// one missed beat (a slow statement, a short database restart) is not
// death, three are.
const ProcessDeadAfterBeats = 3

// Process is one secondary process's heartbeat row (geo_processes,
// migration 0010): who it is, when it last proved alive, and what only it
// knows (the singleton loops it holds, its syncs in flight, its backfill
// progress, its event lag), so that a reader without a live process can
// show them.
type Process struct {
	// Owner names the process (replicator.SecondaryConfig.Owner); the
	// row's key.
	Owner string
	// Host and PID say where it runs; Version which build it is.
	Host    string
	PID     int
	Version string
	// StartedAt is when the process started its engines.
	StartedAt time.Time
	// HeartbeatAt is when the process last wrote its row, by its own clock
	// (Store.Heartbeat sets it; a value passed in is ignored).
	HeartbeatAt time.Time
	// Interval is the process's heartbeat interval (> 0): readers judge
	// liveness with it (DeadAfter).
	Interval time.Duration
	// Types are the types the process registers.
	Types []string
	// Roles are the singleton loops the process holds at its last
	// heartbeat ("consumer", "consistency", "existence").
	Roles []string
	// InFlight is the number of syncs the process runs, per type (types
	// with none may be absent).
	InFlight map[string]int
	// Backfill is the process's consistency pass progress per type, for
	// the types it ran a pass of.
	Backfill map[string]ProcessBackfill
	// EventLag is the event consumer's lag, set only while this process's
	// consumer is active; nil otherwise.
	EventLag *ProcessEventLag
}

// ProcessBackfill is one type's consistency (backfill) pass progress as a
// process last reported it (stored as JSON).
type ProcessBackfill struct {
	Running      bool      `json:"running"`
	PassStarted  time.Time `json:"pass_started,omitzero"`
	Done         int64     `json:"done"`
	Total        int64     `json:"total"`
	Inserted     int64     `json:"inserted"`
	Removed      int64     `json:"removed"`
	Rate         float64   `json:"rate"`
	ETASeconds   float64   `json:"eta_seconds"`
	LastFinished time.Time `json:"last_finished,omitzero"`
	Passes       int64     `json:"passes"`
}

// ProcessEventLag is the event consumer's lag as the process holding it
// last reported it.
type ProcessEventLag struct {
	Seconds    float64
	Events     int64
	FellBehind bool
}

// DeadAfter is how long p may go without a heartbeat before it counts as
// dead: ProcessDeadAfterBeats of its intervals.
func (p Process) DeadAfter() time.Duration { return ProcessDeadAfterBeats * p.Interval }

// Alive reports whether p's last heartbeat is less than DeadAfter before
// now. The heartbeat is the writer's clock and now the reader's: their
// skew must stay well below DeadAfter (as it must below leases).
func (p Process) Alive(now time.Time) bool { return now.Sub(p.HeartbeatAt) < p.DeadAfter() }

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

// Processes returns every heartbeat row, alive or dead (see
// Process.Alive), ordered by owner. The table holds one row per process
// that ran within the retention of dead rows: a few rows.
func (s *Store) Processes(ctx context.Context) ([]Process, error) {
	rows, err := s.db.QueryContext(ctx, `
SELECT owner, host, pid, version, started_at, heartbeat_at, heartbeat_interval_ms, types, roles,
  in_flight, backfill, event_lag_seconds, event_lag_events, event_fell_behind
FROM geo_processes ORDER BY owner`)
	if err != nil {
		return nil, fmt.Errorf("registry: processes: %w", err)
	}
	defer rows.Close()
	out := []Process{}
	for rows.Next() {
		var (
			p                  Process
			intervalMS         int64
			types, roles       pq.StringArray
			inFlight, backfill []byte
			lagSeconds         sql.NullFloat64
			lagEvents          sql.NullInt64
			fell               bool
		)
		if err := rows.Scan(&p.Owner, &p.Host, &p.PID, &p.Version, &p.StartedAt, &p.HeartbeatAt, &intervalMS,
			&types, &roles, &inFlight, &backfill, &lagSeconds, &lagEvents, &fell); err != nil {
			return nil, fmt.Errorf("registry: processes: %w", err)
		}
		p.Interval = time.Duration(intervalMS) * time.Millisecond
		p.Types, p.Roles = []string(types), []string(roles)
		if err := json.Unmarshal(inFlight, &p.InFlight); err != nil {
			return nil, fmt.Errorf("registry: processes: %s in_flight: %w", p.Owner, err)
		}
		if err := json.Unmarshal(backfill, &p.Backfill); err != nil {
			return nil, fmt.Errorf("registry: processes: %s backfill: %w", p.Owner, err)
		}
		if lagSeconds.Valid {
			p.EventLag = &ProcessEventLag{Seconds: lagSeconds.Float64, Events: lagEvents.Int64, FellBehind: fell}
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("registry: processes: %w", err)
	}
	return out, nil
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
