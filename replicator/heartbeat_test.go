package replicator_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
)

// hasReason reports whether one of st's reasons contains s.
func hasReason(st replicator.Status, s string) bool {
	return slices.ContainsFunc(st.Reasons, func(r string) bool { return strings.Contains(r, s) })
}

const noProcess = "no secondary process alive"

// A tracking database with pending rows and no secondary process running
// is unhealthy, "no secondary process alive", even while the rows are too
// young for the no-progress verdict (it said healthy).
func TestNoProcessAliveIsUnhealthy(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	store, err := regstore.NewStore(f.TrackingDB, regstore.Options{})
	require.NoError(t, err)

	// A tracking database no process ever used: nothing would replicate.
	st, err := replicator.ReadStatus(ctx, f.TrackingDB, nil, replicator.StatusOptions{})
	require.NoError(t, err)
	require.Equal(t, replicator.HealthUnhealthy, st.Health, "reasons %v", st.Reasons)
	require.True(t, hasReason(st, noProcess), "reasons %v", st.Reasons)

	ids := make([]int64, 10_000)
	for i := range ids {
		ids[i] = int64(i + 1)
	}
	_, err = store.InsertMissing(ctx, "item", ids)
	require.NoError(t, err)

	st, err = replicator.ReadStatus(ctx, f.TrackingDB, nil, replicator.StatusOptions{})
	require.NoError(t, err)
	require.Equal(t, replicator.HealthUnhealthy, st.Health, "reasons %v", st.Reasons)
	require.Len(t, st.Reasons, 1, "reasons %v", st.Reasons)
	require.Contains(t, st.Reasons[0], noProcess+": no process has a heartbeat row")
	require.Contains(t, st.Reasons[0], "(10000 rows pending)")
	require.Empty(t, st.Processes)
	require.Zero(t, st.ProcessesAlive)
}

// A running secondary writes its heartbeat at once and every
// HeartbeatInterval, with the roles it holds and its backfill; status
// shows it alive; a graceful stop removes the row; a process that
// stopped beating without a shutdown shows dead, and none alive is
// unhealthy again. A live process prunes rows dead for longer than
// DeadProcessRetention.
func TestHeartbeatShowsProcessesAliveAndDead(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	_, err := f.app.BulkCreate(ctx, 20, 0, func(i int) []byte { return payload(i, 100) })
	require.NoError(t, err)

	// A process killed 25 hours ago and one killed a minute ago.
	beatAt := func(owner string, ago time.Duration) {
		t.Helper()
		s, err := regstore.NewStore(f.TrackingDB, regstore.Options{Now: func() time.Time { return time.Now().Add(-ago) }})
		require.NoError(t, err)
		_, err = s.Heartbeat(ctx, registry.Process{Owner: owner, Host: "gone", PID: 7, StartedAt: time.Now().Add(-ago - time.Hour),
			Interval: time.Second, Roles: []string{replicator.RoleConsumer}, InFlight: map[string]int{"item": 5},
			EventLag: &registry.ProcessEventLag{Seconds: 999, Events: 9}}, 0)
		require.NoError(t, err)
	}
	beatAt("killed-long-ago", 25*time.Hour)
	beatAt("killed", time.Minute)

	// A second between beats: a process is dead after three intervals
	// without one, and a loaded machine may delay a beat by a good part
	// of a second (at HeartbeatIntervalMin, 300 ms late made the running
	// process dead in the reads below).
	cfg := f.SecondaryConfig(f.secondaryItems())
	cfg.HeartbeatInterval = time.Second
	r := f.Start(cfg)
	f.waitConverged(t, stall, f.secondaryItems())
	var first time.Time
	// st is the report that showed the process alive: the checks below
	// read it, not a later report, in which a beat delayed by load could
	// show the process dead.
	var st replicator.Status
	geotest.WaitFor(t, stall, "the running secondary alive, holding consumer and consistency, its pass finished, nothing in flight, the old row pruned", func() (bool, string) {
		var err error
		st, err = replicator.ReadStatus(ctx, f.TrackingDB, nil, replicator.StatusOptions{})
		if err != nil {
			return false, err.Error()
		}
		if st.ProcessesAlive != 1 || len(st.Processes) != 2 {
			return false, fmt.Sprintf("alive %d, processes %+v", st.ProcessesAlive, st.Processes)
		}
		p := st.Processes[0]
		if first.IsZero() {
			first = p.HeartbeatAt
		}
		b, ok := p.Backfill["item"]
		return p.Owner == r.Owner() && p.Alive && slices.Contains(p.Roles, replicator.RoleConsumer) &&
				slices.Contains(p.Roles, replicator.RoleConsistency) && slices.Contains(p.Roles, replicator.RoleExistence) &&
				ok && !b.LastFinished.IsZero() && p.HeartbeatAt.After(first) && st.Processes[1].Owner == "killed" &&
				len(st.Types) == 1 && st.Types[0].InFlight == 0,
			fmt.Sprintf("%+v", st.Processes)
	})
	require.False(t, hasReason(st, noProcess), "reasons %v", st.Reasons)
	self, dead := st.Processes[0], st.Processes[1]
	require.Equal(t, []string{"item"}, self.Types)
	require.InDelta(t, cfg.HeartbeatInterval.Seconds(), self.HeartbeatIntervalSeconds, 1e-9)
	require.InDelta(t, 3*cfg.HeartbeatInterval.Seconds(), self.DeadAfterSeconds, 1e-9)
	require.Contains(t, self.Version, "geo ")
	require.False(t, dead.Alive)
	require.GreaterOrEqual(t, dead.HeartbeatAgeSeconds, 60.0)
	// The report read from the database takes what only the processes
	// know from the live one's row, never from the dead one's.
	item := typeStatus(t, st, "item")
	require.NotNil(t, item.Backfill, "backfill from the live process's heartbeat")
	require.Equal(t, int64(20), item.PrimaryRecords)
	require.Equal(t, replicator.EventSourceHeartbeat, st.Events.Source)
	require.True(t, st.Events.LagKnown)
	require.Less(t, st.Events.LagSeconds, 999.0, "the dead process's lag is not used")
	require.Zero(t, item.InFlight, "the dead process's syncs in flight are not counted")

	// The process's own report lists the same processes (alive: as of a
	// beat less than three intervals old, which load may delay).
	geotest.WaitFor(t, stall, "the process's own report shows it alive", func() (bool, string) {
		own, err := r.Status(ctx)
		if err != nil {
			return false, err.Error()
		}
		return own.ProcessesAlive == 1 && !hasReason(own, noProcess), fmt.Sprintf("alive %d, reasons %v", own.ProcessesAlive, own.Reasons)
	})

	// Graceful stop: the row goes; the killed process's row stays dead.
	require.NoError(t, r.Stop())
	st, err = replicator.ReadStatus(ctx, f.TrackingDB, nil, replicator.StatusOptions{})
	require.NoError(t, err)
	require.Len(t, st.Processes, 1, "processes after a graceful stop: %+v", st.Processes)
	require.Equal(t, "killed", st.Processes[0].Owner)
	require.Equal(t, replicator.HealthUnhealthy, st.Health)
	require.True(t, hasReason(st, noProcess+": the last heartbeat was 1m"), "reasons %v", st.Reasons)
	require.True(t, hasReason(st, "killed on gone, pid 7; a process is dead after 3s without one"), "reasons %v", st.Reasons)
	require.Equal(t, replicator.EventSourceCursor, st.Events.Source, "no lag from a dead process")
}

// A process that stops beating without a shutdown (hung, killed, cut off
// from the tracking database) turns dead after three intervals.
func TestProcessWithoutHeartbeatTurnsDead(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	cfg := f.SecondaryConfig(f.secondaryItems())
	cfg.HeartbeatInterval = time.Hour // the first beat only, in this test's time
	r := f.Start(cfg)
	store := r.Store()
	geotest.WaitFor(t, stall, "the first heartbeat", func() (bool, string) {
		ps, err := store.Processes(ctx)
		return err == nil && len(ps) == 1, fmt.Sprint(ps, err)
	})
	at := func(d time.Duration) replicator.Status {
		t.Helper()
		st, err := replicator.ReadStatus(ctx, f.TrackingDB, nil, replicator.StatusOptions{Now: func() time.Time { return time.Now().Add(d) }})
		require.NoError(t, err)
		return st
	}
	require.Equal(t, 1, at(2*time.Hour).ProcessesAlive, "alive two intervals later")
	st := at(3*time.Hour + time.Minute)
	require.Zero(t, st.ProcessesAlive, "three intervals without a beat")
	require.False(t, st.Processes[0].Alive)
	require.True(t, hasReason(st, noProcess+": the last heartbeat was 3h1m"), "reasons %v", st.Reasons)
}

// HeartbeatInterval is validated.
func TestHeartbeatIntervalIsValidated(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, d := range []time.Duration{-time.Second, time.Millisecond} {
		cfg := f.SecondaryConfig(f.secondaryItems())
		cfg.HeartbeatInterval = d
		_, err := replicator.NewSecondary(cfg)
		require.ErrorContains(t, err, "SecondaryConfig.HeartbeatInterval", "interval %v", d)
	}
}

// The syncs in flight a heartbeat carries (and Status reports) are the
// syncs running, not the capacity the sync engine reserved for a claim
// not yet answered: it reserves its whole free budget before every claim,
// so an idle secondary polling for work showed up to its capacity in
// flight in geoctl status and the status page.
func TestInFlightIsSyncsRunningNotReservedCapacity(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s, err := replicator.NewSecondary(f.SecondaryConfig(f.secondaryItems()))
	require.NoError(t, err)
	reserved, undo := replicator.ReserveSyncCapacity(s)
	defer undo()
	require.Positive(t, reserved, "capacity reserved as for a claim")
	require.Zero(t, replicator.HeartbeatInFlight(s)["item"], "no sync runs: the heartbeat's in flight")
	st, err := s.Status(context.Background())
	require.NoError(t, err)
	require.Len(t, st.Types, 1)
	require.Zero(t, st.Types[0].InFlight, "no sync runs: Status's in flight")
}
