package replicator

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"go.uber.org/zap"

	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/strategy"
)

// The wait hub's bounds. They are the engine's, not knobs: they bound its
// memory and its queries, not what a wait guarantees.
const (
	// waitTrackMax bounds the records the hub tracks as not yet settled
	// (about 100 bytes each). Beyond it the hub stops reading events until
	// some settle; waits for later Positions wait for that.
	waitTrackMax = 100_000
	// waitCheckBatch bounds the records one settle check reads: the oldest
	// tracked ones, which hold the frontier back.
	waitCheckBatch = 5_000
	// waitGapPage is how many outbox events one read of the hub takes, and
	// waitGapPagesPerRound how many such reads one round does at most.
	waitGapPage          = 1_000
	waitGapPagesPerRound = 10
	// waitCheckMinInterval spaces settle checks while callers wait: under
	// a stream of settles, one check covers all that came meanwhile.
	waitCheckMinInterval = 5 * time.Millisecond
	// waitDrainInterval spaces the checks that keep the tracked set small
	// while nobody waits.
	waitDrainInterval = time.Second
)

// WaitSynced returns nil once this secondary has handled every event at
// or before p and every registry row those events touched has settled
// since, or ctx's error (wrapped) when ctx ends first. Run must be running
// for it to end.
//
// Precisely: p is a Position Publish returned on the primary (see
// events.Position), and WaitSynced returns nil when both hold:
//
//   - the secondary's event consumer has handled every committed event at
//     or before p, with the exceptions events.Position lists (types this
//     secondary does not register, events before its consumer's first
//     start, events pruned before it read them);
//   - every record one of those events names has a registry row that,
//     read after the event was handled, is synced or failed (its sync
//     ended), or has no row (a delete removed it, or its sync found the
//     record gone or out of scope). A row that a later event, a resync or
//     the existence scan made pending again must settle again, so a
//     record updated again and again may hold a wait back until its
//     updates pause. A paused type's rows do not settle until it resumes.
//
// A synced row then holds bytes at least as new as the record's state at
// p. A failed row does not: WaitSynced says its sync ended, not that it
// succeeded; Open and WaitRecord say which. Events handled before this
// Secondary's Run started (by an earlier process, or another one while
// this one was not running) count as settled: only their handling is
// guaranteed. A Position of a transaction that rolled back is passed once
// that transaction and every older one have ended.
//
// Cost: waits share one fan-out driven by the event consumer's progress
// (the local consumer's, or, while another process holds it, the cursor
// it saves, read every EventPollInterval). The secondary reads the records
// each event names once from the outbox and checks the states of the
// unsettled ones in one query for all waiters after syncs settle, never a
// query per waiter and never NOTIFY. 1,000 waiters cost what one does.
func (s *Secondary) WaitSynced(ctx context.Context, p events.Position) error {
	if err := s.waits.wait(ctx, p, false); err != nil {
		return fmt.Errorf("replicator: wait synced %v: %w", p, err)
	}
	return nil
}

// WaitRecord waits until record id of replicable has a settled row on this
// secondary, and returns it: synced (its bytes are here), or failed (see
// Row.LastSyncFailure; Row.MissingOnPrimary when the primary lacks the
// bytes). A record with no row waits for one (its created event, or the
// consistency pass, makes it) unless the primary's replica says the record
// is gone or out of this secondary's scope: then, as when its row is
// removed while waiting, the error matches strategy.ErrNotFound. The row
// reflects every event the consumer had handled when WaitRecord was
// called; to wait for a write the consumer may not have seen yet, wait for
// its Position with WaitSynced first. An unknown type is an error matching
// strategy.ErrUnknownReplicable; ctx ending, ctx's error (wrapped). It
// reads the row once when called; while it waits it shares the settle
// checks WaitSynced's waiters share.
func (s *Secondary) WaitRecord(ctx context.Context, replicable string, id int64) (registry.Row, error) {
	fail := func(err error) (registry.Row, error) {
		return registry.Row{}, fmt.Errorf("replicator: wait record %s/%d: %w", replicable, id, err)
	}
	st, err := s.blobStrategy(replicable)
	if err != nil {
		return fail(err)
	}
	key := registry.Key{Replicable: replicable, ModelID: id}
	for {
		row, err := s.store.Get(ctx, replicable, id)
		switch {
		case err == nil && (row.State == registry.StateSynced || row.State == registry.StateFailed):
			return row, nil
		case errors.Is(err, registry.ErrNotFound):
			// No row: wait for one only if the record exists for this
			// secondary (an error matching strategy.ErrNotFound if not).
			if _, kerr := st.BlobKey(ctx, id); kerr != nil {
				return fail(kerr)
			}
		case err != nil:
			return fail(err)
		}
		seen, werr := s.waits.waitRecord(ctx, key, err == nil)
		if werr != nil {
			return fail(werr)
		}
		if !seen {
			return fail(fmt.Errorf("its row was removed: %w", strategy.ErrNotFound))
		}
	}
}

// trackedEvent is an event the hub read: its Position and the row it
// names.
type trackedEvent struct {
	pos events.Position
	key registry.Key
}

// waiter is one WaitSynced (or a cursor wait of Open) in the hub's heap.
type waiter struct {
	p     events.Position
	ready chan struct{}
	index int // in its heap; -1 once removed
}

// waiterHeap orders waiters by Position, smallest first.
type waiterHeap []*waiter

func (h waiterHeap) Len() int           { return len(h) }
func (h waiterHeap) Less(i, j int) bool { return h[i].p.Less(h[j].p) }
func (h waiterHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *waiterHeap) Push(x any) {
	w := x.(*waiter)
	w.index = len(*h)
	*h = append(*h, w)
}
func (h *waiterHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	w.index = -1
	return w
}

// recordWaiter is one WaitRecord.
type recordWaiter struct {
	sawRow bool // the row existed when last looked at
	done   chan bool
}

// waitHub is the fan-out behind WaitSynced, WaitRecord and Open's waits:
// one per Secondary. It follows the event consumer's progress (advance),
// reads the records the handled events name from the outbox, checks the
// unsettled ones' states in batches and releases the waiters they no
// longer hold back.
//
// Its state: cursor is a Position every event at or before which has been
// handled; through (≤ cursor) the Position up to which the hub has read
// the events, so that every record they name is either tracked (pending)
// or was seen settled; the frontier is the smallest Position of a tracked
// record. A WaitSynced for p is ready when cursor ≥ p, through ≥ p and the
// frontier is after p.
type waitHub struct {
	tracking       *sqlx.DB
	source         *sqlx.DB
	known          func(string) bool
	consumerActive func() bool
	savedCursor    func(ctx context.Context) (events.Position, bool, error)
	poll           time.Duration
	log            *zap.Logger

	wake   chan struct{}
	checks atomic.Int64 // settle checks run, for tests and benchmarks

	mu       sync.Mutex
	started  bool
	cursor   events.Position
	through  events.Position
	pending  map[registry.Key]events.Position
	fifo     []trackedEvent // ascending by pos; entries whose key left pending (or re-entered later) are stale
	head     int
	synced   waiterHeap // WaitSynced waiters
	cursorW  waiterHeap // cursor-only waiters (Open)
	records  map[registry.Key][]*recordWaiter
	dirty    bool // something a check would see changed: a tracked row settled, new records, new record waiters
	lastPoll time.Time
}

func newWaitHub(s *Secondary) *waitHub {
	h := &waitHub{
		tracking: s.cfg.Tracking, source: s.cfg.Primary, known: s.cfg.Strategies.Has,
		consumerActive: func() bool { return s.consumer.Stats().Active },
		poll:           s.cfg.EventPollInterval, log: s.cfg.Logger,
		wake:    make(chan struct{}, 1),
		pending: map[registry.Key]events.Position{},
		records: map[registry.Key][]*recordWaiter{},
	}
	h.savedCursor = func(ctx context.Context) (events.Position, bool, error) {
		cursors, err := s.store.EventCursors(ctx)
		if err != nil {
			return events.Position{}, false, err
		}
		for _, c := range cursors {
			if c.Consumer == events.ConsumerNameDefault {
				return events.Position{XID: c.XID, ID: c.ID}, true, nil
			}
		}
		return events.Position{}, false, nil
	}
	return h
}

func (h *waitHub) signal() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// advance records that every event at or before p has been handled (the
// consumer's OnProgress, or the cursor another process saved).
func (h *waitHub) advance(p events.Position) {
	h.mu.Lock()
	switch {
	case !h.started:
		// Events before the first Position seen were handled before this
		// process watched: taken as settled (see WaitSynced).
		h.started, h.cursor, h.through = true, p, p
	case h.cursor.Less(p):
		h.cursor = p
	default:
		h.mu.Unlock()
		return
	}
	h.releaseLocked()
	h.mu.Unlock()
	h.signal()
}

// settled is the sync engine's word (through the Observer) that a sync of
// key ended: a hint that a check may find the row settled.
func (h *waitHub) settled(key registry.Key) {
	h.mu.Lock()
	_, tracked := h.pending[key]
	_, awaited := h.records[key]
	if tracked || awaited {
		h.dirty = true
	}
	h.mu.Unlock()
	if tracked || awaited {
		h.signal()
	}
}

// cursorPos returns the hub's cursor (zero before the first).
func (h *waitHub) cursorPos() events.Position {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cursor
}

// readyLocked reports whether a WaitSynced for p may return.
func (h *waitHub) readyLocked(p events.Position) bool {
	if !h.started || h.cursor.Less(p) || h.through.Less(p) {
		return false
	}
	front, ok := h.frontLocked()
	return !ok || p.Less(front)
}

// frontLocked returns the smallest Position of a tracked record, dropping
// stale entries from the front of the fifo.
func (h *waitHub) frontLocked() (events.Position, bool) {
	for h.head < len(h.fifo) {
		e := h.fifo[h.head]
		if pos, ok := h.pending[e.key]; ok && pos == e.pos {
			return e.pos, true
		}
		h.fifo[h.head] = trackedEvent{}
		h.head++
	}
	h.fifo, h.head = h.fifo[:0], 0
	return events.Position{}, false
}

// releaseLocked wakes the waiters that may return.
func (h *waitHub) releaseLocked() {
	for len(h.cursorW) > 0 && h.started && !h.cursor.Less(h.cursorW[0].p) {
		close(heap.Pop(&h.cursorW).(*waiter).ready)
	}
	for len(h.synced) > 0 && h.readyLocked(h.synced[0].p) {
		close(heap.Pop(&h.synced).(*waiter).ready)
	}
}

// wait blocks until a WaitSynced for p may return (cursorOnly: until the
// cursor passes p) or ctx ends.
func (h *waitHub) wait(ctx context.Context, p events.Position, cursorOnly bool) error {
	h.mu.Lock()
	q := &h.synced
	ready := h.readyLocked(p)
	if cursorOnly {
		q = &h.cursorW
		ready = h.started && !h.cursor.Less(p)
	}
	if ready {
		h.mu.Unlock()
		return nil
	}
	w := &waiter{p: p, ready: make(chan struct{})}
	heap.Push(q, w)
	h.dirty = true
	h.mu.Unlock()
	h.signal()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		h.mu.Lock()
		if w.index >= 0 {
			heap.Remove(q, w.index)
		}
		h.mu.Unlock()
		select {
		case <-w.ready: // released meanwhile
			return nil
		default:
		}
		return ctx.Err()
	}
}

// waitRecord blocks until key's row is settled (true) or gone after it
// was seen (false), or ctx ends. sawRow says the row existed when the
// caller looked.
func (h *waitHub) waitRecord(ctx context.Context, key registry.Key, sawRow bool) (bool, error) {
	w := &recordWaiter{sawRow: sawRow, done: make(chan bool, 1)}
	h.mu.Lock()
	h.records[key] = append(h.records[key], w)
	h.dirty = true
	h.mu.Unlock()
	h.signal()
	select {
	case seen := <-w.done:
		return seen, nil
	case <-ctx.Done():
		h.mu.Lock()
		h.dropRecordLocked(key, w)
		h.mu.Unlock()
		select {
		case seen := <-w.done:
			return seen, nil
		default:
		}
		return false, ctx.Err()
	}
}

func (h *waitHub) dropRecordLocked(key registry.Key, w *recordWaiter) {
	ws := h.records[key]
	for i, x := range ws {
		if x == w {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(h.records, key)
	} else {
		h.records[key] = ws
	}
}

// run drives the hub until ctx ends.
func (h *waitHub) run(ctx context.Context) {
	if p, ok, err := h.savedCursor(ctx); err != nil {
		if ctx.Err() == nil {
			h.log.Warn("read-your-writes waits: cannot read the saved event cursor; starting from the consumer's", zap.Error(err))
		}
	} else if ok {
		h.advance(p)
	}
	var lastCheck, lastDrain time.Time
	timer := time.NewTimer(h.poll)
	defer timer.Stop()
	for {
		next := h.round(ctx, &lastCheck, &lastDrain)
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-h.wake:
		case <-timer.C:
		}
	}
}

// round does one step of the hub's work and returns when the next is due
// at the latest: it follows another process's cursor (while this one's
// consumer is inactive), reads the events up to the cursor, checks the
// states of the records that hold waiters back, and releases waiters.
func (h *waitHub) round(ctx context.Context, lastCheck, lastDrain *time.Time) time.Duration {
	next := time.Hour
	if !h.consumerActive() {
		// Another process (or nobody) consumes: follow the cursor it saves.
		next = min(next, h.poll)
		if time.Since(h.lastPoll) >= h.poll {
			h.lastPoll = time.Now()
			p, ok, err := h.savedCursor(ctx)
			switch {
			case err != nil && ctx.Err() == nil:
				h.log.Debug("read-your-writes waits: read the saved event cursor", zap.Error(err))
			case ok:
				h.advance(p)
			}
		}
	}
	if more := h.readEvents(ctx); more {
		next = 0
	}

	h.mu.Lock()
	waiting := len(h.synced) > 0 || len(h.cursorW) > 0 || len(h.records) > 0
	tracked := len(h.pending)
	dirty := h.dirty
	h.mu.Unlock()
	var due bool
	switch {
	case waiting && (tracked > 0 || len(h.records) > 0):
		// Rows other processes settle send no word: look every poll.
		next = min(next, h.poll)
		due = dirty || time.Since(*lastCheck) >= h.poll
		if due && time.Since(*lastCheck) < waitCheckMinInterval {
			next = min(next, waitCheckMinInterval-time.Since(*lastCheck))
			due = false
		}
	case tracked >= waitTrackMax/2:
		next = min(next, waitDrainInterval)
		due = time.Since(*lastDrain) >= waitDrainInterval
		if due {
			*lastDrain = time.Now()
		}
	}
	if due {
		*lastCheck = time.Now()
		if err := h.check(ctx); err != nil && ctx.Err() == nil {
			h.log.Warn("read-your-writes waits: checking the states of awaited rows failed", zap.Error(err))
		}
	}
	h.mu.Lock()
	h.releaseLocked()
	if h.through.Less(h.cursor) {
		// Events left to read (the tracked set was full, or a read
		// failed): try again soon.
		next = min(next, h.poll)
	}
	h.mu.Unlock()
	return next
}

// gapQuery reads, in one snapshot, its xmin and the events after the
// hub's through, up to its cursor, that this source shows: those whose
// transaction, and every older one, has ended here (a replica other than
// the one the consumer read may not have replayed them yet). With no
// event it returns one row of NULL event columns.
const gapQuery = `SELECT pg_snapshot_xmin(pg_current_snapshot())::text, e.xid::text, e.id, e.replicable, e.model_id
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (
	SELECT xid, id, replicable, model_id FROM geo_events
	WHERE (xid, id) > ($1::text::xid8, $2::bigint) AND (xid, id) <= ($3::text::xid8, $4::bigint)
	  AND xid < pg_snapshot_xmin(pg_current_snapshot())
	ORDER BY xid, id
	LIMIT $5
) AS e ON true
ORDER BY e.xid, e.id`

// readEvents reads up to waitGapPagesPerRound pages of the events between
// through and cursor and tracks the records they name; it reports whether
// more are left to read now.
func (h *waitHub) readEvents(ctx context.Context) bool {
	for range waitGapPagesPerRound {
		h.mu.Lock()
		from, to, room := h.through, h.cursor, waitTrackMax-len(h.pending)
		h.mu.Unlock()
		if !from.Less(to) || room <= 0 {
			return false
		}
		limit := min(room, waitGapPage)
		evs, xmin, err := h.readPage(ctx, from, to, limit)
		if err != nil {
			if ctx.Err() == nil {
				h.log.Warn("read-your-writes waits: reading events from the outbox failed", zap.Error(err))
			}
			return false
		}
		h.mu.Lock()
		for _, e := range evs {
			if !h.known(e.key.Replicable) {
				continue
			}
			if _, ok := h.pending[e.key]; !ok {
				h.pending[e.key] = e.pos
				h.fifo = append(h.fifo, e)
				h.dirty = true
			}
		}
		if len(evs) == limit {
			h.through = evs[len(evs)-1].pos
		} else {
			// Every event up to the cursor that this source shows was
			// read: all of them, unless its xmin is not past the cursor
			// (then those before the xmin).
			upTo := to
			if x := (events.Position{XID: xmin}); x.Less(upTo) {
				upTo = x
			}
			if h.through.Less(upTo) {
				h.through = upTo
			}
		}
		h.compactLocked()
		moved := h.through != from
		h.mu.Unlock()
		if !moved {
			return false // this source is behind the cursor: try again later
		}
	}
	return true
}

func (h *waitHub) readPage(ctx context.Context, from, to events.Position, limit int) ([]trackedEvent, uint64, error) {
	rows, err := h.source.QueryContext(ctx, gapQuery,
		strconv.FormatUint(from.XID, 10), from.ID, strconv.FormatUint(to.XID, 10), to.ID, limit)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var out []trackedEvent
	var xmin uint64
	for rows.Next() {
		var sxmin string
		var xid, name *string
		var id, model *int64
		if err := rows.Scan(&sxmin, &xid, &id, &name, &model); err != nil {
			return nil, 0, err
		}
		if xmin, err = strconv.ParseUint(sxmin, 10, 64); err != nil {
			return nil, 0, err
		}
		if xid == nil || id == nil || name == nil || model == nil {
			continue // no event: the row carrying the xmin
		}
		e := trackedEvent{pos: events.Position{ID: *id}, key: registry.Key{Replicable: *name, ModelID: *model}}
		if e.pos.XID, err = strconv.ParseUint(*xid, 10, 64); err != nil {
			return nil, 0, err
		}
		out = append(out, e)
	}
	return out, xmin, rows.Err()
}

// compactLocked drops the fifo's consumed front once it is most of it.
func (h *waitHub) compactLocked() {
	if h.head > 1024 && h.head > len(h.fifo)/2 {
		n := copy(h.fifo, h.fifo[h.head:])
		clear(h.fifo[n:])
		h.fifo, h.head = h.fifo[:n], 0
	}
}

// checkQuery reads the states of a batch of rows (NULL: no row).
const checkQuery = `SELECT k.replicable, k.model_id, r.state
FROM unnest($1::text[], $2::bigint[]) AS k(replicable, model_id)
LEFT JOIN geo_registry r ON r.replicable = k.replicable AND r.model_id = k.model_id`

// check reads, in one query, the states of the oldest tracked records and
// of the records WaitRecord waits for, forgets the tracked ones that
// settled and wakes the record waiters whose row settled or went.
func (h *waitHub) check(ctx context.Context) error {
	h.mu.Lock()
	h.dirty = false
	keys := make([]registry.Key, 0, min(len(h.pending), waitCheckBatch)+len(h.records))
	for i := h.head; i < len(h.fifo) && len(keys) < waitCheckBatch; i++ {
		e := h.fifo[i]
		if pos, ok := h.pending[e.key]; ok && pos == e.pos {
			keys = append(keys, e.key)
		}
	}
	for k := range h.records {
		keys = append(keys, k)
	}
	h.mu.Unlock()
	if len(keys) == 0 {
		return nil
	}
	names := make([]string, len(keys))
	ids := make([]int64, len(keys))
	for i, k := range keys {
		names[i], ids[i] = k.Replicable, k.ModelID
	}
	h.checks.Add(1)
	rows, err := h.tracking.QueryContext(ctx, checkQuery, pq.Array(names), pq.Array(ids))
	if err != nil {
		return err
	}
	defer rows.Close()
	type state struct {
		exists, settled bool
	}
	states := make(map[registry.Key]state, len(keys))
	for rows.Next() {
		var k registry.Key
		var st *int16
		if err := rows.Scan(&k.Replicable, &k.ModelID, &st); err != nil {
			return err
		}
		states[k] = state{exists: st != nil,
			settled: st == nil || registry.State(*st) == registry.StateSynced || registry.State(*st) == registry.StateFailed}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, st := range states {
		if st.settled {
			delete(h.pending, k)
		}
		ws := h.records[k]
		keep := ws[:0]
		for _, w := range ws {
			switch {
			case st.exists && st.settled:
				w.done <- true
			case !st.exists && w.sawRow:
				w.done <- false
			default:
				w.sawRow = w.sawRow || st.exists
				keep = append(keep, w)
			}
		}
		if len(ws) > 0 {
			if len(keep) == 0 {
				delete(h.records, k)
			} else {
				h.records[k] = keep
			}
		}
	}
	h.releaseLocked()
	return nil
}

// waitObserver passes a Secondary's Observer events on and tells the
// wait hub when a sync ended.
type waitObserver struct {
	Observer
	hub *waitHub
}

func (o waitObserver) SyncDone(ev SyncEvent) {
	o.Observer.SyncDone(ev)
	switch ev.Outcome {
	case ResultSynced, ResultSkipped, ResultFailed, ResultMissingOnPrimary, ResultRemoved:
		o.hub.settled(registry.Key{Replicable: ev.Replicable, ModelID: ev.ModelID})
	}
}
