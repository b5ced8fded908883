package events

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"go.uber.org/zap"
)

// Consumer defaults and limits (see ConsumerConfig). replicator's
// SecondaryConfig uses the same defaults for its consumer.
const (
	// ConsumerNameDefault is the default ConsumerConfig.Name, the one a
	// replicator.Secondary uses.
	ConsumerNameDefault = "default"
	// BatchSizeDefault is the default ConsumerConfig.BatchSize.
	BatchSizeDefault = 1000
	// BatchSizeMax is the largest ConsumerConfig.BatchSize accepted.
	BatchSizeMax = 100_000
	// PollIntervalDefault is the default ConsumerConfig.PollInterval.
	PollIntervalDefault = 250 * time.Millisecond
	// PollIntervalMax is the longest ConsumerConfig.PollInterval accepted.
	PollIntervalMax = time.Second

	// maxBackoff caps the wait after consecutive failures (database down,
	// handler failing).
	maxBackoff = 5 * time.Second
	// lagCountCap bounds the lag estimate's scan.
	lagCountCap = 100_000
	// saveTimeout bounds writing a cursor the handler already acknowledged,
	// even when Run's context was cancelled meanwhile.
	saveTimeout = 5 * time.Second
)

// Reasons the Consumer passes to ConsumerConfig.OnSkipped.
const (
	// SkipUnknownReplicable: the event names a replicable type Known
	// rejects (not registered on this secondary).
	SkipUnknownReplicable = "unknown_replicable"
	// SkipMalformed: the outbox row matched ErrMalformed.
	SkipMalformed = "malformed"
	// SkipInvalidKey: a deleted event's blob key failed
	// strategy.ValidateKey. The event is handled without it (the engine
	// removes only the key recorded at sync time); the consumer never
	// reports this reason, replicator's event handler does.
	SkipInvalidKey = "invalid_key"
)

// ErrInvalidConfig is wrapped by NewConsumer's and RunPruner's errors for
// a configuration that cannot work; the message names the field.
var ErrInvalidConfig = errors.New("invalid configuration")

// ErrRunning is returned by Consumer.Run when the same Consumer is already
// running.
var ErrRunning = errors.New("consumer already running")

// Handler receives the events the Consumer reads.
type Handler interface {
	// HandleEvents is given a non-empty batch in (XID, ID) order: the order
	// in which the transactions that wrote them became visible, never
	// skipping one that committed late. Delivery is at least once: the
	// consumer's cursor moves past the batch only after HandleEvents returns
	// nil, so after an error, a panic, a crash or a lost lock the same
	// events (and possibly earlier ones) come again. HandleEvents must
	// therefore be idempotent; marking a registry row pending is. It must
	// return promptly when ctx is done. The slice is the handler's to keep.
	HandleEvents(ctx context.Context, events []Event) error
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(ctx context.Context, events []Event) error

// HandleEvents calls f(ctx, events).
func (f HandlerFunc) HandleEvents(ctx context.Context, events []Event) error { return f(ctx, events) }

// ConsumerConfig configures a Consumer. Source, Tracking, Handler and Known
// are required; zero values of the other fields mean the documented
// defaults.
type ConsumerConfig struct {
	// Source reads the primary's geo_events (and geo_events_pruned). In
	// production it is a hot standby of the primary; the Consumer only ever
	// reads through it.
	Source *sqlx.DB
	// Tracking is the secondary's tracking database, holding
	// geo_event_cursor. While Run is active the Consumer keeps one of its
	// connections for itself (it holds the advisory lock), so the pool must
	// allow at least two connections.
	Tracking *sqlx.DB
	// Name names the cursor row and the lock: consumers sharing a tracking
	// database and a Name take turns, one active at a time. 1 to 63
	// characters of [A-Za-z0-9_.:-]; "" means ConsumerNameDefault.
	Name string
	// BatchSize is the most events read and handed over at once; 0 means
	// BatchSizeDefault; at most BatchSizeMax.
	BatchSize int
	// PollInterval is how long the Consumer waits between reads when it is
	// caught up, and between attempts to take the lock when another consumer
	// holds it; 0 means PollIntervalDefault; at most PollIntervalMax.
	PollInterval time.Duration
	// Handler receives the events. Required.
	Handler Handler
	// Known reports whether a replicable name is registered on this
	// secondary. Events for other names are logged (with the event id),
	// counted in Stats.SkippedUnknown, reported to OnSkipped and skipped;
	// they never stop the consumer. Required.
	Known func(replicable string) bool
	// OnSkipped, when set, is called (from Run's goroutine) with a reason,
	// SkipUnknownReplicable or SkipMalformed, and how many events of a
	// batch were skipped for it (n > 0), once the cursor has moved past
	// them, so a batch read again after a handler error is not counted
	// twice (a crash between saving the cursor and the call may miss a
	// count). It must be fast and must not block; replicator wires it to
	// Observer.EventsSkipped (geo_events_skipped_total).
	OnSkipped func(reason string, n int)
	// Logger receives the consumer's logs; nil means none.
	Logger *zap.Logger
	// NotifyURL, when set, is a connection URL of the primary itself (a
	// standby cannot LISTEN to the primary's notifications) on which the
	// Consumer LISTENs to geo_events to read sooner after a commit. It is a
	// hint only: reads happen every PollInterval regardless, and a broken
	// listener changes nothing but latency.
	NotifyURL string
	// OnFellBehind, when set, is called (from Run's goroutine) when
	// retention pruned events this consumer had not read yet, once per
	// pruned mark for the life of the Consumer, and again after a restart
	// while the saved cursor is still before the mark. It should start the
	// repair and return quickly.
	//
	// The pruned events are lost; every event still in the outbox is
	// delivered all the same (the consumer goes on reading after its
	// cursor, and moves its cursor to the mark only when no event before
	// the mark is left or can still commit). What the lost events said is
	// repaired only in part by a full consistency pass, which is what
	// replicator starts: a created record is a missing row it inserts, a
	// deleted record an orphan it removes (with the bytes at the key
	// recorded at sync time). A lost update is invisible to it: the row
	// exists and stays synced with the old bytes until re-verification
	// (after ReverifyInterval, against the primary's new checksum) finds
	// the mismatch, and never when only the key changed. An operator
	// should therefore make the types' rows sync again (geoctl resync
	// --all: copies that still match the primary are not downloaded
	// again).
	OnFellBehind func(ctx context.Context)
	// OnProgress, when set, is called (from Run's goroutine) with a
	// Position h whenever it moves forward, h being such that the
	// Consumer has handled every committed event at or before h (with the
	// exceptions Position lists): the cursor once it is loaded and after
	// every batch is saved and, once a read finds no more event before the
	// source snapshot's xmin, Position{XID: xmin}, since every transaction
	// with a smaller xid has ended and none of their events is left
	// unread. So h passes a Position whose transaction rolled back as
	// soon as that transaction and every older one have ended, although
	// no event is ever read there (Stats.Cursor passes it only with a
	// later event). h is not saved. It must be fast and must not block;
	// replicator's Secondary drives its read-your-writes waits with it.
	OnProgress func(handled Position)
	// Now is the clock for lag; nil means time.Now.
	Now func() time.Time
}

var consumerNameRE = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,63}$`)

func (cfg *ConsumerConfig) validate() error {
	bad := func(field, why string) error {
		return fmt.Errorf("events: consumer config: %w: %s %s", ErrInvalidConfig, field, why)
	}
	if cfg.Source == nil {
		return bad("Source", "is nil")
	}
	if cfg.Tracking == nil {
		return bad("Tracking", "is nil")
	}
	if cfg.Handler == nil {
		return bad("Handler", "is nil")
	}
	if cfg.Known == nil {
		return bad("Known", "is nil")
	}
	if cfg.Name == "" {
		cfg.Name = ConsumerNameDefault
	}
	if !consumerNameRE.MatchString(cfg.Name) {
		return bad("Name", fmt.Sprintf("%q: want 1-63 characters of [A-Za-z0-9_.:-]", cfg.Name))
	}
	switch {
	case cfg.BatchSize == 0:
		cfg.BatchSize = BatchSizeDefault
	case cfg.BatchSize < 0 || cfg.BatchSize > BatchSizeMax:
		return bad("BatchSize", fmt.Sprintf("%d: want 1..%d", cfg.BatchSize, BatchSizeMax))
	}
	switch {
	case cfg.PollInterval == 0:
		cfg.PollInterval = PollIntervalDefault
	case cfg.PollInterval < 0 || cfg.PollInterval > PollIntervalMax:
		return bad("PollInterval", fmt.Sprintf("%v: want > 0 and <= %v", cfg.PollInterval, PollIntervalMax))
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return nil
}

// Stats is a snapshot of a Consumer's progress. Counters cover the life of
// the Consumer value, not the persisted cursor.
type Stats struct {
	// Active is true while this Consumer holds the lock and consumes.
	Active bool
	// Cursor is the last cursor saved (zero before the first load): every
	// event at or before it has been handled, so a Position p that Publish
	// returned is handled once !Cursor.Less(p) (see Position for exactly
	// what that guarantees).
	Cursor Position
	// Consumed counts events the handler acknowledged.
	Consumed int64
	// SkippedUnknown counts events for replicable names Known rejected.
	SkippedUnknown int64
	// SkippedMalformed counts rows that matched ErrMalformed.
	SkippedMalformed int64
	// HandlerErrors counts batches the handler failed (error or panic).
	HandlerErrors int64
	// Polls counts completed reads of the outbox.
	Polls int64
	// LastEventCreatedAt is the CreatedAt of the last event acknowledged.
	LastEventCreatedAt time.Time
	// LagSeconds is Now minus the CreatedAt of the oldest event after the
	// cursor, or 0 when there is none. Refreshed after every poll that
	// finds the consumer caught up, and about once a second while it
	// reads full batches.
	LagSeconds float64
	// LagEvents is the number of events after the cursor, counting at most
	// 100,000. Refreshed with LagSeconds.
	LagEvents int64
	// FellBehind is set once retention pruned events this Consumer had not
	// read (see ConsumerConfig.OnFellBehind for what is lost and what to
	// do); it stays set for the life of the Consumer.
	FellBehind bool
}

// Consumer reads the primary's outbox on a secondary and hands events to a
// Handler, keeping its cursor in the tracking database.
//
// Reads are bounded by the snapshot's xmin: an event is read only once
// every transaction with a smaller id has ended, so one that commits late
// is never skipped, on the primary as on a hot standby. Only one Consumer
// per tracking database and Name is active at a time (a PostgreSQL
// session advisory lock); the others wait and take over when its session
// ends. A Consumer with no saved cursor starts at the current end of the
// log; earlier events are the consistency pass's. See Handler for the
// delivery guarantee.
type Consumer struct {
	cfg     ConsumerConfig
	log     *zap.Logger
	lockKey string
	running atomic.Bool

	// reported is the pruned mark OnFellBehind was last called for;
	// only Run's goroutine uses it.
	reported *Position
	// progressed is the last Position passed to OnProgress; only Run's
	// goroutine uses it.
	progressed Position

	mu    sync.Mutex
	stats Stats
}

// NewConsumer checks cfg, applies defaults and returns a Consumer. An
// invalid configuration returns an error matching ErrInvalidConfig that
// names the field. It does not touch the databases.
func NewConsumer(cfg ConsumerConfig) (*Consumer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Consumer{
		cfg:     cfg,
		log:     cfg.Logger.With(zap.String("consumer", cfg.Name)),
		lockKey: "geo.events.consumer:" + cfg.Name,
	}, nil
}

// Stats returns a snapshot of the Consumer's progress. It is safe to call
// at any time from any goroutine.
func (c *Consumer) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

func (c *Consumer) update(f func(s *Stats)) {
	c.mu.Lock()
	f(&c.stats)
	c.mu.Unlock()
}

// lockError marks a failure of the lock connection: the lock may be gone.
type lockError struct{ err error }

func (e *lockError) Error() string { return "lock connection: " + e.err.Error() }
func (e *lockError) Unwrap() error { return e.err }

// Run consumes until ctx is done, then returns nil. It waits for the lock
// (retrying every PollInterval), consumes while it holds it, and goes back
// to waiting if the lock's connection breaks. Database errors are logged
// and retried with backoff; a database restart does not end Run. It
// returns ErrRunning if this Consumer is already running.
func (c *Consumer) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return fmt.Errorf("events: run: %w", ErrRunning)
	}
	defer c.running.Store(false)

	wake := make(chan struct{}, 1)
	if c.cfg.NotifyURL != "" {
		stop := c.listen(wake)
		defer stop()
	}
	for {
		conn, err := c.acquire(ctx)
		if err != nil {
			return nil // only ctx ends acquire
		}
		c.log.Info("events: consumer active")
		err = c.consume(ctx, conn, wake)
		c.update(func(s *Stats) { s.Active = false })
		discard(conn) // ends the session, so the lock is released at once
		if ctx.Err() != nil {
			c.log.Info("events: consumer stopped")
			return nil
		}
		c.log.Warn("events: consumer lost its lock connection; waiting to take the lock again", zap.Error(err))
		if !sleep(ctx, c.cfg.PollInterval, nil) {
			return nil
		}
	}
}

// discard closes conn's underlying session instead of returning it to the
// pool, so a session advisory lock can never outlive the Consumer's use.
func discard(conn *sql.Conn) {
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	_ = conn.Close()
}

// acquire returns a dedicated tracking connection holding the consumer's
// session advisory lock, retrying every PollInterval. It fails only when
// ctx is done.
func (c *Consumer) acquire(ctx context.Context) (*sql.Conn, error) {
	var conn *sql.Conn
	logged := false
	for {
		var err error
		if conn == nil {
			conn, err = c.cfg.Tracking.Conn(ctx)
		}
		if conn != nil {
			var ok bool
			err = conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock(hashtextextended($1, 0))`, c.lockKey).Scan(&ok)
			switch {
			case err != nil:
				discard(conn) // the lock may have been granted as ctx ended
				conn = nil
			case ok:
				return conn, nil
			case !logged:
				c.log.Info("events: another consumer holds the lock; waiting")
				logged = true
			}
		}
		if err != nil && ctx.Err() == nil {
			c.log.Warn("events: cannot try the consumer lock", zap.Error(err))
		}
		if !sleep(ctx, c.cfg.PollInterval, nil) {
			if conn != nil {
				discard(conn)
			}
			return nil, ctx.Err()
		}
	}
}

// sleep waits d, a wake-up from wake, or ctx; it reports false when ctx is
// done.
func sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	case <-wake:
		return true
	}
}

func backoff(poll time.Duration, failures int) time.Duration {
	d := poll
	for i := 1; i < failures && d < maxBackoff; i++ {
		d *= 2
	}
	return min(d, maxBackoff)
}

// consume runs the read loop while conn holds the lock. It returns ctx's
// error when ctx ends, or a *lockError when the lock connection fails.
func (c *Consumer) consume(ctx context.Context, conn *sql.Conn, wake <-chan struct{}) error {
	var cur Position
	for failures := 0; ; {
		var err error
		cur, err = c.loadCursor(ctx, conn)
		if err == nil {
			break
		}
		var le *lockError
		if ctx.Err() != nil || errors.As(err, &le) {
			return err
		}
		failures++
		c.log.Warn("events: cannot read the start position from the source; retrying", zap.Error(err))
		if !sleep(ctx, backoff(c.cfg.PollInterval, failures), nil) {
			return ctx.Err()
		}
	}
	c.update(func(s *Stats) { s.Active, s.Cursor = true, cur })
	c.progress(cur)

	failures := 0
	var lagAt time.Time
	for {
		more, err := c.step(ctx, conn, &cur)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var le *lockError
		if errors.As(err, &le) {
			return err
		}
		if err != nil {
			failures++
			c.log.Warn("events: read failed; backing off", zap.Error(err), zap.Int("failures", failures))
			if !sleep(ctx, backoff(c.cfg.PollInterval, failures), nil) {
				return ctx.Err()
			}
			continue
		}
		failures = 0
		// Lag costs a scan of up to lagCountCap index entries: when busy,
		// refresh it once a second, not after every batch.
		if !more || time.Since(lagAt) >= time.Second {
			c.refreshLag(ctx, cur)
			lagAt = time.Now()
		}
		if more {
			continue
		}
		// Caught up: check the lock's session is alive, then wait.
		if err := conn.PingContext(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &lockError{err}
		}
		if !sleep(ctx, c.cfg.PollInterval, wake) {
			return ctx.Err()
		}
	}
}

// loadCursor reads the saved cursor through the lock connection. On first
// start (no row) it starts at the current end of the log, the source's
// snapshot xmin, and saves that at once so a restart cannot move it. The
// xmin is cluster-wide: events of transactions newer than the oldest one
// running at that moment are delivered even if they had committed (never
// too few, possibly a few more than strictly new).
func (c *Consumer) loadCursor(ctx context.Context, conn *sql.Conn) (Position, error) {
	var xid string
	var cur Position
	err := conn.QueryRowContext(ctx, `SELECT xid::text, id FROM geo_event_cursor WHERE consumer = $1`, c.cfg.Name).Scan(&xid, &cur.ID)
	if err == nil {
		cur.XID, err = parseXID8(xid)
		return cur, err
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return Position{}, &lockError{fmt.Errorf("events: load cursor: %w", err)}
	}
	if err := c.cfg.Source.QueryRowContext(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text`).Scan(&xid); err != nil {
		return Position{}, fmt.Errorf("events: read the source's snapshot xmin: %w", err)
	}
	if cur.XID, err = parseXID8(xid); err != nil {
		return Position{}, err
	}
	if err := c.saveCursor(ctx, conn, cur); err != nil {
		return Position{}, err
	}
	c.log.Info("events: first start: consuming from the current end of the log; earlier events are backfill's",
		zap.Uint64("cursor_xid", cur.XID), zap.Int64("cursor_id", cur.ID))
	return cur, nil
}

// saveCursor writes cur through the lock connection: a write can only
// succeed while this session holds the lock. It outlives ctx's
// cancellation briefly, since the events it acknowledges were handled.
func (c *Consumer) saveCursor(ctx context.Context, conn *sql.Conn, cur Position) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), saveTimeout)
	defer cancel()
	_, err := conn.ExecContext(ctx, `INSERT INTO geo_event_cursor (consumer, xid, id, updated_at)
VALUES ($1, $2::text::xid8, $3, now())
ON CONFLICT (consumer) DO UPDATE SET xid = EXCLUDED.xid, id = EXCLUDED.id, updated_at = EXCLUDED.updated_at`,
		c.cfg.Name, fmt.Sprint(cur.XID), cur.ID)
	if err != nil {
		return &lockError{fmt.Errorf("events: save cursor: %w", err)}
	}
	return nil
}

// fetchQuery reads, in one statement and so one snapshot, the pruned mark,
// the snapshot's xmin and the next batch after the cursor. "xid < snapshot
// xmin" holds back every event whose transaction is newer than the oldest
// one still running, so a transaction that commits late cannot be
// skipped. The LEFT JOIN returns one row with NULL event columns when
// there is no event.
const fetchQuery = `SELECT
	(SELECT xid::text FROM geo_events_pruned WHERE one),
	(SELECT id FROM geo_events_pruned WHERE one),
	pg_snapshot_xmin(pg_current_snapshot())::text,
	e.xid::text, e.id, e.replicable, e.op, e.model_id, e.blob_key, e.payload, e.created_at
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (
	SELECT xid, id, replicable, op, model_id, blob_key, payload, created_at
	FROM geo_events
	WHERE (xid, id) > ($1::text::xid8, $2::bigint)
	  AND xid < pg_snapshot_xmin(pg_current_snapshot())
	ORDER BY xid, id
	LIMIT $3
) AS e ON true
ORDER BY e.xid, e.id`

type skipped struct {
	id         int64
	reason     string // SkipUnknownReplicable or SkipMalformed
	replicable string // the unknown name
	err        error
}

// reportSkipped calls OnSkipped for n > 0 events skipped for reason,
// turning a panic into a log entry.
func (c *Consumer) reportSkipped(reason string, n int64) {
	f := c.cfg.OnSkipped
	if f == nil || n == 0 {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("events: OnSkipped panicked", zap.Any("panic", r))
		}
	}()
	f(reason, int(n))
}

// step reads one batch and, if the handler accepts it, advances the
// cursor. more reports that a full batch was read.
func (c *Consumer) step(ctx context.Context, conn *sql.Conn, cur *Position) (more bool, err error) {
	raws, mark, xmin, err := c.fetch(ctx, *cur)
	if err != nil {
		return false, err
	}
	c.update(func(s *Stats) { s.Polls++ })

	if mark != nil && cur.Less(*mark) {
		if c.reported == nil || *c.reported != *mark {
			c.fellBehind(ctx, *cur, *mark)
			c.reported = mark
		}
		// The events after the cursor that retention did not prune are
		// delivered below like any others. Only when none is left before
		// the mark, and none can still commit there (the mark is below
		// the snapshot's xmin: every transaction up to it has ended), does
		// the cursor move to the mark, so that a restart does not report
		// the same loss again.
		if len(raws) == 0 && mark.XID < xmin {
			if err := c.saveCursor(ctx, conn, *mark); err != nil {
				return false, err
			}
			*cur = *mark
			c.update(func(s *Stats) { s.Cursor = *mark })
			c.progress(*mark)
			return true, nil
		}
	}
	// With fewer events than a batch, every event before the snapshot's
	// xmin has been read: once they are handled, so is everything there.
	xminMark := Position{XID: xmin}
	if len(raws) == 0 {
		c.progress(xminMark)
		return false, nil
	}

	batch := make([]Event, 0, len(raws))
	var skips []skipped
	var unknown, malformed int64
	for _, r := range raws {
		e, err := decode(r)
		switch {
		case err != nil:
			malformed++
			skips = append(skips, skipped{id: r.ID, reason: SkipMalformed, err: err})
		case !c.cfg.Known(e.Replicable):
			unknown++
			skips = append(skips, skipped{id: r.ID, reason: SkipUnknownReplicable, replicable: e.Replicable})
		default:
			batch = append(batch, e)
		}
	}
	if len(batch) > 0 {
		if err := c.handle(ctx, batch); err != nil {
			c.update(func(s *Stats) { s.HandlerErrors++ })
			return false, fmt.Errorf("events: handler (%d events from id %d): %w", len(batch), batch[0].ID, err)
		}
	}
	last := raws[len(raws)-1]
	next := Position{ID: last.ID}
	next.XID, _ = parseXID8(last.XID) // rows with a bad xid are skipped above; ordering came from SQL
	if err := c.saveCursor(ctx, conn, next); err != nil {
		return false, err
	}
	*cur = next
	for _, s := range skips {
		fields := []zap.Field{zap.Int64("event_id", s.id), zap.String("reason", s.reason)}
		if s.replicable != "" {
			fields = append(fields, zap.String("replicable", s.replicable))
		}
		if s.err != nil {
			fields = append(fields, zap.Error(s.err))
		}
		c.log.Warn("events: skipped event", fields...)
	}
	c.reportSkipped(SkipUnknownReplicable, unknown)
	c.reportSkipped(SkipMalformed, malformed)
	c.update(func(s *Stats) {
		s.Cursor = next
		s.Consumed += int64(len(batch))
		s.SkippedUnknown += unknown
		s.SkippedMalformed += malformed
		if len(batch) > 0 {
			s.LastEventCreatedAt = batch[len(batch)-1].CreatedAt
		}
	})
	if len(raws) < c.cfg.BatchSize && next.Less(xminMark) {
		c.progress(xminMark)
	} else {
		c.progress(next)
	}
	return len(raws) == c.cfg.BatchSize, nil
}

// progress calls OnProgress with h when h is past the last Position it
// was given, turning a panic into a log entry.
func (c *Consumer) progress(h Position) {
	f := c.cfg.OnProgress
	if f == nil || !c.progressed.Less(h) {
		return
	}
	c.progressed = h
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("events: OnProgress panicked", zap.Any("panic", r))
		}
	}()
	f(h)
}

// fetch reads the next batch after cur, the pruned mark (nil when none)
// and the snapshot's xmin, all in one snapshot.
func (c *Consumer) fetch(ctx context.Context, cur Position) (_ []rawEvent, mark *Position, xmin uint64, _ error) {
	rows, err := c.cfg.Source.QueryContext(ctx, fetchQuery, fmt.Sprint(cur.XID), cur.ID, c.cfg.BatchSize)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("events: read outbox: %w", err)
	}
	defer rows.Close()
	var out []rawEvent
	for rows.Next() {
		var (
			pxid, exid, repl    *string
			pid, eid, op, model *int64
			key                 *string
			sxmin               string
			payload             []byte
			created             *time.Time
		)
		if err := rows.Scan(&pxid, &pid, &sxmin, &exid, &eid, &repl, &op, &model, &key, &payload, &created); err != nil {
			return nil, nil, 0, fmt.Errorf("events: scan outbox row: %w", err)
		}
		if xmin, err = parseXID8(sxmin); err != nil {
			return nil, nil, 0, err
		}
		if mark == nil && pxid != nil && pid != nil {
			x, err := parseXID8(*pxid)
			if err != nil {
				return nil, nil, 0, err
			}
			mark = &Position{XID: x, ID: *pid}
		}
		if eid == nil {
			continue // no event: the one row carrying the mark and the xmin
		}
		r := rawEvent{ID: *eid, BlobKey: key, Payload: payload}
		if exid != nil {
			r.XID = *exid
		}
		if repl != nil {
			r.Replicable = *repl
		}
		if op != nil {
			r.Op = *op
		}
		if model != nil {
			r.ModelID = *model
		}
		if created != nil {
			r.CreatedAt = *created
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, 0, fmt.Errorf("events: read outbox: %w", err)
	}
	return out, mark, xmin, nil
}

// handle calls the handler, turning a panic into an error.
func (c *Consumer) handle(ctx context.Context, batch []Event) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("events: handler panicked: %v", r)
		}
	}()
	return c.cfg.Handler.HandleEvents(ctx, batch)
}

// fellBehind reports a cursor older than the pruned mark: events it had
// not read are gone (see ConsumerConfig.OnFellBehind for what that loses).
// It does not move the cursor: step does, once nothing before the mark is
// left to deliver.
func (c *Consumer) fellBehind(ctx context.Context, cur, mark Position) {
	c.log.Error("events: consumer fell behind the retained event log: events were pruned before it read them; "+
		"the events still retained are delivered, but the pruned ones are lost: a consistency pass restores missed "+
		"creates and deletes, not missed updates (resync the types' rows: geoctl resync --all)",
		zap.Uint64("cursor_xid", cur.XID), zap.Int64("cursor_id", cur.ID),
		zap.Uint64("pruned_xid", mark.XID), zap.Int64("pruned_id", mark.ID))
	c.update(func(s *Stats) { s.FellBehind = true })
	if f := c.cfg.OnFellBehind; f != nil {
		func() {
			defer func() {
				if r := recover(); r != nil {
					c.log.Error("events: OnFellBehind panicked", zap.Any("panic", r))
				}
			}()
			f(ctx)
		}()
	}
}

// lagQuery counts (up to a cap) the events after the cursor, including ones
// still held back by an older open transaction, and finds the oldest.
const lagQuery = `SELECT count(*), min(created_at) FROM (
	SELECT created_at FROM geo_events
	WHERE (xid, id) > ($1::text::xid8, $2::bigint)
	ORDER BY xid, id
	LIMIT $3
) AS s`

func (c *Consumer) refreshLag(ctx context.Context, cur Position) {
	var n int64
	var oldest *time.Time
	err := c.cfg.Source.QueryRowContext(ctx, lagQuery, fmt.Sprint(cur.XID), cur.ID, lagCountCap).Scan(&n, &oldest)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Debug("events: lag query failed", zap.Error(err))
		}
		return
	}
	lag := 0.0
	if oldest != nil {
		lag = max(c.cfg.Now().Sub(*oldest).Seconds(), 0)
	}
	c.update(func(s *Stats) { s.LagEvents, s.LagSeconds = n, lag })
}

// listen LISTENs on the primary for wake-up hints until the returned stop
// function is called.
func (c *Consumer) listen(wake chan<- struct{}) (stop func()) {
	l := pq.NewListener(c.cfg.NotifyURL, 100*time.Millisecond, 10*time.Second, func(ev pq.ListenerEventType, err error) {
		if err != nil {
			c.log.Debug("events: notification listener", zap.Error(err))
		}
	})
	if err := l.Listen(NotifyChannel); err != nil {
		c.log.Warn("events: cannot LISTEN for wake-ups; polling only", zap.Error(err))
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case _, ok := <-l.Notify:
				if !ok {
					return
				}
				select {
				case wake <- struct{}{}:
				default:
				}
			}
		}
	}()
	return func() {
		_ = l.Close()
		close(done)
		wg.Wait()
	}
}
