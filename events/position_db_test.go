package events_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/events"
)

// handledSet is a Handler that records the Position of every event it is
// given before it returns, in delivery order.
type handledSet struct {
	mu    sync.Mutex
	seen  map[events.Position]bool
	order []events.Position
}

func (h *handledSet) HandleEvents(_ context.Context, batch []events.Event) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range batch {
		h.seen[e.Position()] = true
		h.order = append(h.order, e.Position())
	}
	return nil
}

func (h *handledSet) has(p events.Position) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seen[p]
}

func (h *handledSet) delivered() []events.Position {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]events.Position(nil), h.order...)
}

// watchCursor samples c's cursor until the returned stop is called, and
// reports every sample at or past one of the watched positions whose event
// was not handled yet. stop returns the number of samples and the
// violations.
func watchCursor(c *events.Consumer, h *handledSet, watched func() []events.Position) (stop func() (int, []string)) {
	done := make(chan struct{})
	var (
		wg         sync.WaitGroup
		samples    int
		violations []string
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			// The cursor first, then the handler's record: the handler
			// records before it returns, and the cursor moves after.
			cur := c.Stats().Cursor
			for _, p := range watched() {
				if !cur.Less(p) && !h.has(p) && len(violations) < 10 {
					violations = append(violations, "cursor "+cur.String()+" at or past "+p.String()+" before its event was handled")
				}
			}
			samples++
			time.Sleep(time.Millisecond) // the sampling rate, not a synchronisation
		}
	}()
	return func() (int, []string) {
		close(done)
		wg.Wait()
		return samples, violations
	}
}

// currentXID is the xid8 of tx, as pg_current_xact_id() reports it.
func currentXID(t *testing.T, tx *sqlx.Tx) uint64 {
	t.Helper()
	var xid uint64
	require.NoError(t, tx.Get(&xid, `SELECT pg_current_xact_id()::text::bigint`))
	return xid
}

// TestCursorPassesAPositionOnlyOnceItsEventIsHandled: two concurrent
// transactions publish and commit in the opposite order of their xids.
// Publish returns each event's (xid, id), ordered by xid although the
// older transaction's second event has the greater id. While the older
// transaction is open, the younger one's committed event is held back and
// the cursor stays before its Position; once the older one commits, the
// cursor passes each Position, never before the Handler was given its
// event. A transaction that begins after another committed gets a
// greater Position (causal order).
func TestCursorPassesAPositionOnlyOnceItsEventIsHandled(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	h := &handledSet{seen: map[events.Position]bool{}}
	c, err := events.NewConsumer(e.config(t, h))
	require.NoError(t, err)
	run(t, c)
	waitActive(t, c)

	var mu sync.Mutex
	var watched []events.Position
	watch := func(p events.Position) {
		mu.Lock()
		watched = append(watched, p)
		mu.Unlock()
	}
	stopWatch := watchCursor(c, h, func() []events.Position {
		mu.Lock()
		defer mu.Unlock()
		return append([]events.Position(nil), watched...)
	})

	publish := func(tx *sqlx.Tx, model int64) events.Position {
		t.Helper()
		p, err := e.pub.Publish(ctx, tx, "upload", events.OpUpdated, model, "")
		require.NoError(t, err)
		watch(p)
		return p
	}
	tOld, err := e.primary.BeginTxx(ctx, nil)
	require.NoError(t, err)
	defer tOld.Rollback()
	pOld := publish(tOld, 1)
	tNew, err := e.primary.BeginTxx(ctx, nil)
	require.NoError(t, err)
	defer tNew.Rollback()
	pNew := publish(tNew, 2)
	pOld2 := publish(tOld, 3) // the older transaction's second event: a greater id than pNew's

	assert.Equal(t, currentXID(t, tOld), pOld.XID, "Publish's xid is the transaction's")
	assert.Equal(t, currentXID(t, tNew), pNew.XID, "Publish's xid is the transaction's")
	require.Less(t, pOld.XID, pNew.XID, "tOld holds the older xid")
	require.Greater(t, pOld2.ID, pNew.ID, "tOld's second event took its id after tNew's")
	assert.True(t, pOld.Less(pOld2), "one transaction's positions increase")
	assert.True(t, pOld2.Less(pNew), "positions order by xid before id")

	require.NoError(t, tNew.Commit()) // the younger transaction commits first
	// A transaction that begins after tNew committed comes after it.
	tLater, err := e.primary.BeginTxx(ctx, nil)
	require.NoError(t, err)
	defer tLater.Rollback()
	pLater := publish(tLater, 4)
	require.NoError(t, tLater.Commit())
	assert.True(t, pNew.Less(pLater), "a transaction begun after another committed has a greater position")

	// Reads that began after both commits still hold them back while tOld
	// is open.
	polls := c.Stats().Polls
	waitFor(t, waitGuard, "three more polls", func() bool { return c.Stats().Polls >= polls+3 })
	cur := c.Stats().Cursor
	assert.True(t, cur.Less(pOld), "cursor %v passed tOld's first position %v while tOld is open", cur, pOld)
	assert.False(t, h.has(pNew), "tNew's event handed over while the older tOld is open")
	assert.Empty(t, h.delivered(), "events delivered while the older transaction is open")

	require.NoError(t, tOld.Commit())
	waitFor(t, waitGuard, "the cursor at or past the last position", func() bool { return !c.Stats().Cursor.Less(pLater) })
	samples, violations := stopWatch()
	assert.Empty(t, violations)
	assert.Positive(t, samples, "cursor samples")
	assert.Equal(t, []events.Position{pOld, pOld2, pNew, pLater}, h.delivered(),
		"delivered in position order, which is not commit order")
	assert.Equal(t, pLater, c.Stats().Cursor, "the cursor is the last event's position")
}

// TestPublishBatchesReturnTheGreatestPosition: PublishMany and
// PublishDeleted return the Position of the last event they wrote, which
// is the greatest; an empty batch writes nothing and returns the zero
// Position.
func TestPublishBatchesReturnTheGreatestPosition(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	tx, err := e.primary.BeginTxx(ctx, nil)
	require.NoError(t, err)
	defer tx.Rollback()
	p1, err := e.pub.Publish(ctx, tx, "upload", events.OpCreated, 9, "")
	require.NoError(t, err)
	pMany, err := e.pub.PublishMany(ctx, tx, "upload", events.OpCreated, []int64{5, 3, 4})
	require.NoError(t, err)
	pDel, err := e.pub.PublishDeleted(ctx, tx, "upload", []events.Deleted{{ModelID: 2, BlobKey: "k/2"}, {ModelID: 1, BlobKey: "k/1"}})
	require.NoError(t, err)
	pNone, err := e.pub.PublishMany(ctx, tx, "upload", events.OpCreated, nil)
	require.NoError(t, err)
	assert.True(t, pNone.IsZero(), "empty PublishMany")
	pNone, err = e.pub.PublishDeleted(ctx, tx, "upload", nil)
	require.NoError(t, err)
	assert.True(t, pNone.IsZero(), "empty PublishDeleted")
	pBad, err := e.pub.Publish(ctx, tx, "nope", events.OpCreated, 1, "")
	require.Error(t, err)
	assert.True(t, pBad.IsZero(), "a refused Publish")
	require.NoError(t, tx.Commit())

	type row struct {
		XID   uint64 `db:"xid"`
		ID    int64  `db:"id"`
		Model int64  `db:"model_id"`
	}
	var rows []row
	require.NoError(t, e.primary.Select(&rows, `SELECT xid::text::bigint AS xid, id, model_id FROM geo_events ORDER BY xid, id`))
	require.Len(t, rows, 6)
	pos := func(r row) events.Position { return events.Position{XID: r.XID, ID: r.ID} }
	assert.Equal(t, pos(rows[0]), p1)
	assert.Equal(t, []int64{9, 5, 3, 4, 2, 1}, []int64{rows[0].Model, rows[1].Model, rows[2].Model, rows[3].Model, rows[4].Model, rows[5].Model})
	assert.Equal(t, pos(rows[3]), pMany, "PublishMany: its last event's position")
	assert.Equal(t, pos(rows[5]), pDel, "PublishDeleted: its last event's position")
}

// TestPublishReportsAFailedChecksumInvalidation: the checksum
// invalidation is a part of the publish statement that its SELECT (the
// Position) does not read; when it fails, Publish and PublishMany return
// the error and no Position, not the Position as a success.
func TestPublishReportsAFailedChecksumInvalidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	_, err := e.primary.ExecContext(ctx, `
CREATE FUNCTION refuse_checksum() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'checksum refused for %', NEW.model_id; END $$;
CREATE TRIGGER refuse BEFORE INSERT ON geo_checksums FOR EACH ROW EXECUTE FUNCTION refuse_checksum();`)
	require.NoError(t, err)

	for name, publish := range map[string]func(tx *sqlx.Tx) (events.Position, error){
		"Publish": func(tx *sqlx.Tx) (events.Position, error) {
			return e.pub.Publish(ctx, tx, "upload", events.OpCreated, 1, "")
		},
		"PublishMany": func(tx *sqlx.Tx) (events.Position, error) {
			return e.pub.PublishMany(ctx, tx, "upload", events.OpCreated, []int64{1, 2})
		},
	} {
		tx, err := e.primary.BeginTxx(ctx, nil)
		require.NoError(t, err)
		p, err := publish(tx)
		assert.ErrorContains(t, err, "checksum refused", name)
		assert.True(t, p.IsZero(), "%s: position %v with an error", name, p)
		require.NoError(t, tx.Rollback())
	}
	assert.Empty(t, e.outboxIDs(t))
}
