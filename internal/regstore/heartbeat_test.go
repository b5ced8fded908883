package regstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
)

// A heartbeat writes the whole row with the store's clock, a second one
// replaces it, Processes reads it back, Alive turns false after
// ProcessDeadAfterBeats intervals without a beat, and RemoveProcess
// deletes it.
func TestHeartbeatRowRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, clock := newStore(t, regstore.Options{})
	started := clock.Now().Add(-time.Hour)
	p := registry.Process{
		Owner: "host-1-ab", Host: "host", PID: 1, Version: "geo v1 go1.24", StartedAt: started,
		HeartbeatAt: time.Unix(1, 0), // ignored: the store's clock wins
		Interval:    10 * time.Second, Types: []string{"item", "doc"}, Roles: []string{"consumer", "consistency"},
		InFlight: map[string]int{"item": 3},
		Backfill: map[string]registry.ProcessBackfill{"item": {
			Running: true, PassStarted: started, Done: 500, Total: 1000, Rate: 50, ETASeconds: 10,
			LastFinished: started.Add(-time.Minute), Passes: 2,
		}},
		EventLag: &registry.ProcessEventLag{Seconds: 1.5, Events: 7, FellBehind: true},
	}
	_, err := s.Heartbeat(ctx, p, 0)
	require.NoError(t, err)
	got, err := s.Processes(ctx)
	require.NoError(t, err)
	require.Len(t, got, 1)
	want := p
	want.HeartbeatAt = clock.Now()
	require.True(t, got[0].StartedAt.Equal(started), "StartedAt %v, want %v", got[0].StartedAt, started)
	require.True(t, got[0].HeartbeatAt.Equal(want.HeartbeatAt), "HeartbeatAt %v, want %v", got[0].HeartbeatAt, want.HeartbeatAt)
	got[0].StartedAt, got[0].HeartbeatAt = want.StartedAt, want.HeartbeatAt
	gb, wb := got[0].Backfill["item"], want.Backfill["item"]
	require.True(t, gb.PassStarted.Equal(wb.PassStarted) && gb.LastFinished.Equal(wb.LastFinished), "backfill times %+v, want %+v", gb, wb)
	gb.PassStarted, gb.LastFinished = wb.PassStarted, wb.LastFinished
	got[0].Backfill["item"] = gb
	require.Equal(t, want, got[0])
	require.True(t, got[0].Alive(clock.Now()))
	require.True(t, got[0].Alive(clock.Now().Add(29*time.Second)), "alive before 3 intervals")
	require.False(t, got[0].Alive(clock.Now().Add(30*time.Second)), "dead after 3 intervals")

	// The next beat replaces the figures: no consumer any more, nothing in flight.
	clock.Advance(10 * time.Second)
	p.Roles, p.EventLag, p.InFlight, p.Backfill = nil, nil, nil, nil
	_, err = s.Heartbeat(ctx, p, 0)
	require.NoError(t, err)
	got, err = s.Processes(ctx)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.True(t, got[0].HeartbeatAt.Equal(clock.Now()))
	require.Nil(t, got[0].EventLag)
	require.Empty(t, got[0].Roles)
	require.Empty(t, got[0].InFlight)
	require.Empty(t, got[0].Backfill)

	require.NoError(t, s.RemoveProcess(ctx, p.Owner))
	require.NoError(t, s.RemoveProcess(ctx, p.Owner), "removing a missing row")
	got, err = s.Processes(ctx)
	require.NoError(t, err)
	require.Empty(t, got)

	_, err = s.Heartbeat(ctx, registry.Process{Owner: "x"}, 0)
	require.True(t, errors.Is(err, regstore.ErrBadProcess), "no interval: %v", err)
	_, err = s.Heartbeat(ctx, registry.Process{Interval: time.Second}, 0)
	require.True(t, errors.Is(err, regstore.ErrBadProcess), "no owner: %v", err)
}

// A heartbeat with pruneAfter deletes other processes' rows older than
// it, never its own, however old, and never younger rows.
func TestHeartbeatPrunesOldDeadRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, clock := newStore(t, regstore.Options{})
	beat := func(owner string) int64 {
		t.Helper()
		n, err := s.Heartbeat(ctx, registry.Process{Owner: owner, StartedAt: clock.Now(), Interval: time.Second}, 24*time.Hour)
		require.NoError(t, err)
		return n
	}
	beat("old")
	beat("self")
	clock.Advance(23 * time.Hour)
	beat("recent")
	clock.Advance(time.Hour + time.Second)
	require.Equal(t, int64(1), beat("self"), "pruned: old (24h1s old); self's own row, as old, is upserted")
	got, err := s.Processes(ctx)
	require.NoError(t, err)
	var owners []string
	for _, p := range got {
		owners = append(owners, p.Owner)
	}
	require.Equal(t, []string{"recent", "self"}, owners)
}
