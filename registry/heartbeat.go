package registry

import (
	"context"
	"database/sql"
	"encoding/json"
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
	// (the process's heartbeat statement sets it).
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
