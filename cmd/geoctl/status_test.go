package main

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
)

// geoctl status on a tracking database with pending rows and no secondary
// process says UNHEALTHY, no secondary process alive (it said HEALTHY);
// with processes' heartbeat rows it lists them alive or dead, in the
// table and in snake_case JSON, and takes backfill progress and the event
// lag from the live one.
func TestStatusShowsProcesses(t *testing.T) {
	ctx := context.Background()
	g := build(t)
	trackingURL := pg.NewDatabaseURL(t)
	g.env = []string{"GEO_DATABASE_URL=" + trackingURL}
	g.ok("migrate")
	tracking, err := sqlx.Open("postgres", trackingURL)
	require.NoError(t, err)
	defer tracking.Close()
	store, err := regstore.NewStore(tracking, regstore.Options{})
	require.NoError(t, err)
	ids := make([]int64, 1000)
	for i := range ids {
		ids[i] = int64(i + 1)
	}
	_, err = store.InsertMissing(ctx, "item", ids)
	require.NoError(t, err)

	status := func() (string, replicator.Status, map[string]any) {
		t.Helper()
		out := g.ok("status")
		raw := g.ok("status", "-o", "json")
		var st replicator.Status
		require.NoError(t, json.Unmarshal([]byte(raw), &st))
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(raw), &m))
		return out, st, m
	}

	// Nothing running.
	out, st, m := status()
	require.Contains(t, out, "UNHEALTHY")
	require.Contains(t, out, "! no secondary process alive: no process has a heartbeat row")
	require.Contains(t, out, "(1000 rows pending)")
	require.Contains(t, out, "processes: none has a heartbeat row")
	require.Equal(t, replicator.HealthUnhealthy, st.Health, "reasons %v", st.Reasons)
	require.Equal(t, []any{}, m["processes"], "processes in JSON")
	require.Equal(t, 0.0, m["processes_alive"])

	// A live process (interval 1h: alive for this test) holding the
	// consumer and the consistency pass, and one killed an hour ago.
	started := time.Now().Add(-2 * time.Hour)
	_, err = store.Heartbeat(ctx, registry.Process{
		Owner: "sec-a", Host: "host-a", PID: 42, Version: "geo v9 go1.99", StartedAt: started, Interval: time.Hour,
		Types: []string{"item"}, Roles: []string{replicator.RoleConsumer, replicator.RoleConsistency},
		InFlight: map[string]int{"item": 7},
		Backfill: map[string]registry.ProcessBackfill{"item": {
			Running: true, PassStarted: started, Done: 500, Total: 1000, Rate: 50, ETASeconds: 10, LastFinished: started,
		}},
		EventLag: &registry.ProcessEventLag{Seconds: 1.25, Events: 3},
	}, 0)
	require.NoError(t, err)
	old, err := regstore.NewStore(tracking, regstore.Options{Now: func() time.Time { return time.Now().Add(-time.Hour) }})
	require.NoError(t, err)
	_, err = old.Heartbeat(ctx, registry.Process{Owner: "sec-b", Host: "host-b", PID: 43, StartedAt: started, Interval: 10 * time.Second}, 0)
	require.NoError(t, err)

	out, st, m = status()
	t.Logf("geoctl status:\n%s", out)
	require.NotContains(t, out, "no secondary process alive")
	require.Contains(t, out, "processes: 1 alive, 1 dead (dead: no heartbeat for 3 intervals)")
	require.Regexp(t, `sec-a\s+host-a\s+42\s+alive\s+\d+s ago\s+2h0m\ds ago\s+consumer,consistency\s+7\s+geo v9 go1.99`, out)
	require.Regexp(t, `sec-b\s+host-b\s+43\s+DEAD\s+1h0m\ds ago`, out)
	require.Contains(t, out, "50% eta 10s", "backfill from the live process's heartbeat")
	require.Contains(t, out, "events: no cursor saved yet; lag 1.25s, 3 events (the consumer's last heartbeat)")
	require.Equal(t, 1, st.ProcessesAlive)
	require.Len(t, st.Processes, 2)
	require.Equal(t, "sec-a", st.Processes[0].Owner)
	require.True(t, st.Processes[0].Alive)
	require.False(t, st.Processes[1].Alive)
	require.Equal(t, 7, st.Types[0].InFlight)
	require.Equal(t, replicator.EventSourceHeartbeat, st.Events.Source)
	procs := m["processes"].([]any)
	p0 := procs[0].(map[string]any)
	for _, k := range []string{"owner", "host", "pid", "version", "started_at", "heartbeat_at", "heartbeat_age_seconds",
		"heartbeat_interval_seconds", "dead_after_seconds", "alive", "types", "roles", "in_flight", "backfill", "event_lag"} {
		require.Contains(t, p0, k, "process JSON field")
	}
	require.Equal(t, map[string]any{"seconds": 1.25, "events": 3.0, "fell_behind": false}, p0["event_lag"])
	require.Contains(t, p0["backfill"].(map[string]any)["item"], "eta_seconds")
	require.NotContains(t, procs[1].(map[string]any), "event_lag", "no lag from a process without the consumer")

	// The live one stops gracefully: only the dead one is left.
	require.NoError(t, store.RemoveProcess(ctx, "sec-a"))
	out, st, _ = status()
	require.Equal(t, replicator.HealthUnhealthy, st.Health)
	require.Regexp(t, `! no secondary process alive: the last heartbeat was 1h0m\ds ago \(sec-b on host-b, pid 43; a process is dead after 30s without one\)`, out)
	require.Contains(t, out, "processes: 0 alive, 1 dead")
	require.Contains(t, out, "events: no cursor saved yet (the secondary's event consumer has not run)")
	// With a saved cursor and no live consumer, the lag is unknown.
	_, err = tracking.Exec(`INSERT INTO geo_event_cursor (consumer, xid, id, updated_at) VALUES ('default', '5', 9, now())`)
	require.NoError(t, err)
	out, _, _ = status()
	require.Regexp(t, `events: cursor xid 5 id 9, saved \d+s ago; lag unknown \(no live consumer reports it: pass --primary-database-url`, out)
}
