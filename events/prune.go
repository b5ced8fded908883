package events

import (
	"context"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"go.uber.org/zap"
)

// Pruner defaults (see PrunerConfig).
const (
	RetentionDefault     = 7 * 24 * time.Hour
	PruneIntervalDefault = 10 * time.Minute
	PruneBatchDefault    = 10_000
)

// pruneQuery deletes one batch of events older than the cutoff (oldest
// first, through geo_events_created_at) whose transaction is below the
// snapshot's xmin, and raises geo_events_pruned to the largest (xid, id) it
// deleted, in one statement and so one transaction: a consumer that reads
// the mark and the log in one snapshot sees either both or neither.
//
// The xmin bound is what makes the mark safe. created_at is the writing
// transaction's start, not its commit: a transaction that started long ago
// can take a newer xid than one still open. Without the bound such an
// event could be pruned while an older transaction's event was not even
// committed yet, and the mark would then lie above an event no consumer
// had had a chance to read. With it, every transaction up to the mark has
// ended, and no event below the mark can appear later.
const pruneQuery = `WITH del AS (
	DELETE FROM geo_events
	WHERE id IN (
		SELECT id FROM geo_events
		WHERE created_at < now() - $1::bigint * interval '1 microsecond'
		  AND xid < (SELECT pg_snapshot_xmin(pg_current_snapshot()))
		ORDER BY created_at
		LIMIT $2)
	RETURNING xid, id
), top AS (
	SELECT xid, id FROM del ORDER BY xid DESC, id DESC LIMIT 1
), mark AS (
	INSERT INTO geo_events_pruned AS p (one, xid, id)
	SELECT true, xid, id FROM top
	ON CONFLICT (one) DO UPDATE SET xid = EXCLUDED.xid, id = EXCLUDED.id
	WHERE (p.xid, p.id) < (EXCLUDED.xid, EXCLUDED.id)
	RETURNING 1
)
SELECT count(*) FROM del`

// Prune deletes, on the primary, the events created more than olderThan
// ago (by the database's clock) whose transaction is older than every
// transaction still running (below the snapshot's xmin: an event of a
// transaction that started before an open one but took a newer xid waits
// until the open one ends), in transactions of at most batch rows, until
// none is left or ctx is done. Each batch also raises the pruned mark
// (geo_events_pruned) to the largest (xid, id) it deleted, so consumers
// that had not read those events learn they fell behind (see
// ConsumerConfig.OnFellBehind for what such a consumer loses). It returns
// how many events it deleted, including on error. olderThan and batch
// must be positive. Concurrent calls are safe.
func Prune(ctx context.Context, db *sqlx.DB, olderThan time.Duration, batch int) (int64, error) {
	if olderThan <= 0 {
		return 0, fmt.Errorf("events: prune: olderThan %v, want > 0", olderThan)
	}
	if batch <= 0 {
		return 0, fmt.Errorf("events: prune: batch %d, want > 0", batch)
	}
	var total int64
	for {
		var n int64
		if err := db.QueryRowContext(ctx, pruneQuery, olderThan.Microseconds(), batch).Scan(&n); err != nil {
			return total, fmt.Errorf("events: prune: %w", err)
		}
		total += n
		if n < int64(batch) {
			return total, nil
		}
		if err := ctx.Err(); err != nil {
			return total, fmt.Errorf("events: prune: %w", err)
		}
	}
}

// PrunerConfig configures RunPruner. Zero values mean the defaults.
type PrunerConfig struct {
	// Retention is how long events are kept; default 7 days. A secondary
	// down for longer falls behind: the events pruned before it read them
	// are lost. A full consistency pass (which the secondary starts)
	// restores the records created and removes the ones deleted meanwhile,
	// but not updates; resync the types' rows (geoctl resync --all), see
	// ConsumerConfig.OnFellBehind.
	Retention time.Duration
	// Interval is the time between prunes; default 10 minutes.
	Interval time.Duration
	// Batch is the most events deleted per transaction; default 10,000.
	Batch int
	// Logger receives the pruner's logs; nil means none.
	Logger *zap.Logger
}

// RunPruner prunes the primary's outbox (see Prune) at once and then every
// Interval until ctx is done, then returns nil. Errors are logged and the
// next round retries; a configuration with a negative field returns an
// error matching ErrInvalidConfig at once.
func RunPruner(ctx context.Context, db *sqlx.DB, cfg PrunerConfig) error {
	bad := func(field string, v any) error {
		return fmt.Errorf("events: pruner config: %w: %s %v, want > 0", ErrInvalidConfig, field, v)
	}
	switch {
	case db == nil:
		return fmt.Errorf("events: pruner: %w: db is nil", ErrInvalidConfig)
	case cfg.Retention < 0:
		return bad("Retention", cfg.Retention)
	case cfg.Interval < 0:
		return bad("Interval", cfg.Interval)
	case cfg.Batch < 0:
		return bad("Batch", cfg.Batch)
	}
	if cfg.Retention == 0 {
		cfg.Retention = RetentionDefault
	}
	if cfg.Interval == 0 {
		cfg.Interval = PruneIntervalDefault
	}
	if cfg.Batch == 0 {
		cfg.Batch = PruneBatchDefault
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	for {
		start := time.Now()
		n, err := Prune(ctx, db, cfg.Retention, cfg.Batch)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			log.Warn("events: prune failed; retrying next interval", zap.Error(err), zap.Int64("deleted", n))
		case n > 0:
			log.Info("events: pruned", zap.Int64("deleted", n), zap.Duration("duration", time.Since(start)))
		}
		if !sleep(ctx, cfg.Interval, nil) {
			return nil
		}
	}
}
