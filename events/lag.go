package events

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// Lag is how far a saved cursor is behind the outbox, as measured by
// ReadLag.
type Lag struct {
	// Events is the number of events after the cursor, counting at most
	// 100,000 (Capped is then true).
	Events int64
	Capped bool
	// Seconds is now minus the creation time of the oldest event after the
	// cursor, 0 when there is none.
	Seconds float64
	// FellBehind says retention already pruned events after the cursor:
	// they are lost to a consumer resuming from it (see
	// ConsumerConfig.OnFellBehind for what a consistency pass restores and
	// what an operator must do).
	FellBehind bool
}

// ReadLag measures, on source (the primary's database or a standby of it,
// read only), how far cur is behind the outbox at time now. It is what an
// admin tool uses when it has only a saved cursor (registry EventCursors)
// and not a running Consumer's Stats. It costs one bounded index scan.
func ReadLag(ctx context.Context, source *sqlx.DB, cur Position, now time.Time) (Lag, error) {
	var (
		lag    Lag
		oldest sql.NullTime
		pxid   sql.NullString
		pid    sql.NullInt64
	)
	err := source.QueryRowContext(ctx, `SELECT l.count, l.min,
  (SELECT xid::text FROM geo_events_pruned WHERE one), (SELECT id FROM geo_events_pruned WHERE one)
FROM (`+lagQuery+`) l`, fmt.Sprint(cur.XID), cur.ID, lagCountCap).Scan(&lag.Events, &oldest, &pxid, &pid)
	if err != nil {
		return Lag{}, fmt.Errorf("events: read lag: %w", err)
	}
	lag.Capped = lag.Events >= lagCountCap
	if oldest.Valid {
		lag.Seconds = max(now.Sub(oldest.Time).Seconds(), 0)
	}
	if pxid.Valid {
		x, err := parseXID8(pxid.String)
		if err != nil {
			return Lag{}, err
		}
		lag.FellBehind = cur.Less(Position{XID: x, ID: pid.Int64})
	}
	return lag, nil
}
