package events_test

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/events"
)

// progressLog is an OnProgress that records what it is given and checks,
// as it is called (in Run's goroutine, after the handler returned), that
// every watched Position at or before it was handled.
type progressLog struct {
	h          *handledSet
	mu         sync.Mutex
	last       events.Position
	calls      int
	watched    []events.Position
	violations []string
}

func (l *progressLog) on(p events.Position) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.Less(p) {
		l.violations = append(l.violations, "OnProgress "+p.String()+" after "+l.last.String()+": not forward")
	}
	l.last = p
	l.calls++
	for _, w := range l.watched {
		if !p.Less(w) && !l.h.has(w) {
			l.violations = append(l.violations, "OnProgress "+p.String()+" at or past "+w.String()+" before its event was handled")
		}
	}
}

func (l *progressLog) watch(p events.Position) {
	l.mu.Lock()
	l.watched = append(l.watched, p)
	l.mu.Unlock()
}

func (l *progressLog) get() (events.Position, int, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last, l.calls, append([]string(nil), l.violations...)
}

// TestOnProgressPassesARolledBackPosition: the Position a transaction that
// rolled back was given names no event, so the cursor stays before it
// while nothing else is published; OnProgress passes it once the
// transaction has ended (the snapshot's xmin moved past it), so a wait for
// it ends. Without the xmin mark such a wait lasts until the next event.
func TestOnProgressPassesARolledBackPosition(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	h := &handledSet{seen: map[events.Position]bool{}}
	log := &progressLog{h: h}
	cfg := e.config(t, h)
	cfg.OnProgress = log.on
	c, err := events.NewConsumer(cfg)
	require.NoError(t, err)
	run(t, c)
	waitActive(t, c)

	e.publish(t, "upload", 1)
	waitFor(t, waitGuard, "the first event handled", func() bool { return len(h.delivered()) == 1 })
	tx, err := e.primary.BeginTxx(ctx, nil)
	require.NoError(t, err)
	p, err := e.pub.Publish(ctx, tx, "upload", events.OpCreated, 2, "")
	require.NoError(t, err)
	require.NoError(t, tx.Rollback())

	waitFor(t, waitGuard, "OnProgress past the rolled-back position", func() bool {
		last, _, _ := log.get()
		return !last.Less(p)
	})
	assert.True(t, c.Stats().Cursor.Less(p), "the saved cursor %v passed %v without an event", c.Stats().Cursor, p)
	assert.Len(t, h.delivered(), 1, "events handed over")
	_, _, violations := log.get()
	assert.Empty(t, violations)
}

// TestOnProgressNeverPassesAnUnhandledEvent: with two transactions
// committing in the opposite order of their xids, OnProgress (the cursor
// and the xmin marks alike) never passes a Position before its event was
// handled, and it only moves forward.
func TestOnProgressNeverPassesAnUnhandledEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	h := &handledSet{seen: map[events.Position]bool{}}
	log := &progressLog{h: h}
	cfg := e.config(t, h)
	cfg.OnProgress = log.on
	c, err := events.NewConsumer(cfg)
	require.NoError(t, err)
	run(t, c)
	waitActive(t, c)

	tOld, err := e.primary.BeginTxx(ctx, nil)
	require.NoError(t, err)
	defer tOld.Rollback()
	pOld, err := e.pub.Publish(ctx, tOld, "upload", events.OpUpdated, 1, "")
	require.NoError(t, err)
	log.watch(pOld)
	tNew, err := e.primary.BeginTxx(ctx, nil)
	require.NoError(t, err)
	defer tNew.Rollback()
	pNew, err := e.pub.Publish(ctx, tNew, "upload", events.OpUpdated, 2, "")
	require.NoError(t, err)
	log.watch(pNew)
	require.NoError(t, tNew.Commit())

	polls := c.Stats().Polls
	waitFor(t, waitGuard, "three more polls", func() bool { return c.Stats().Polls >= polls+3 })
	last, _, _ := log.get()
	assert.True(t, last.Less(pOld), "OnProgress %v passed the open transaction's %v", last, pOld)

	require.NoError(t, tOld.Commit())
	waitFor(t, waitGuard, "OnProgress past both", func() bool { last, _, _ := log.get(); return !last.Less(pNew) })
	_, _, violations := log.get()
	assert.Empty(t, violations)
	assert.Equal(t, []events.Position{pOld, pNew}, h.delivered())
}
