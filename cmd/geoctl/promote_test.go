package main

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/geotest/pgtest"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
)

// TestPromote runs geoctl promote against a live pair: a primary cluster
// and its streaming standby, and a tracking database that holds five of
// the primary's six records verified and is one event behind. The dry run
// prints the preflight (and refuses: exit 1); a forced dry run changes
// nothing; a forced run without --pg-promote leaves the standby to the
// operator; with --pg-promote it promotes the standby and keeps the five
// checksums this site verified.
func TestPromote(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // a hang guard
	defer cancel()
	primary, err := pgtest.StartCluster(ctx, pgtest.Options{})
	if err != nil {
		t.Fatalf("no throwaway cluster (needs initdb/pg_ctl: apt-get install postgresql): %v", err)
	}
	t.Cleanup(func() { _ = primary.Stop() })
	pdb := sqlx.MustOpen("postgres", primary.URL("postgres"))
	defer pdb.Close()
	require.NoError(t, registry.MigratePrimary(ctx, pdb))
	standby, err := primary.StartStandby(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = standby.Stop() })
	sdb := sqlx.MustOpen("postgres", standby.URL("postgres"))
	defer sdb.Close()

	trackingURL := pg.NewDatabaseURL(t)
	tdb := sqlx.MustOpen("postgres", trackingURL)
	defer tdb.Close()
	require.NoError(t, registry.MigrateTracking(ctx, tdb))

	sum := func(i int) string { return fmt.Sprintf("%064x", i) }
	for i := 1; i <= 6; i++ {
		_, err := pdb.ExecContext(ctx, `INSERT INTO geo_checksums (replicable, model_id, state, checksum, verified_at) VALUES ('item', $1, 2, $2, now())`, i, sum(i))
		require.NoError(t, err)
	}
	for i := 1; i <= 5; i++ {
		_, err := tdb.ExecContext(ctx, `INSERT INTO geo_registry (replicable, model_id, state, verification_state, verification_checksum, verified_at, last_synced_at, blob_key)
VALUES ('item', $1, 2, 2, $2, now(), now(), $3)`, i, sum(i), fmt.Sprintf("items/%d", i))
		require.NoError(t, err)
	}
	var xid, xid2 string
	var id, id2 int64
	require.NoError(t, pdb.QueryRowContext(ctx, `INSERT INTO geo_events (replicable, op, model_id) VALUES ('item', 1, 5) RETURNING xid::text, id`).Scan(&xid, &id))
	_, err = tdb.ExecContext(ctx, `INSERT INTO geo_event_cursor (consumer, xid, id) VALUES ('default', $1::text::xid8, $2)`, xid, id)
	require.NoError(t, err)
	require.NoError(t, pdb.QueryRowContext(ctx, `INSERT INTO geo_events (replicable, op, model_id) VALUES ('item', 1, 6) RETURNING xid::text, id`).Scan(&xid2, &id2))
	var target string
	require.NoError(t, pdb.GetContext(ctx, &target, `SELECT pg_current_wal_lsn()::text`))
	geotest.WaitFor(t, time.Minute, "standby replays", func() (bool, string) {
		var ok bool
		if err := sdb.GetContext(ctx, &ok, `SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn`, target); err != nil {
			return false, err.Error()
		}
		return ok, "waiting for " + target
	})

	g := build(t)
	g.env = []string{"GEO_DATABASE_URL=" + trackingURL, "GEO_PRIMARY_DATABASE_URL=" + standby.URL("postgres")}
	inRecovery := func() bool {
		var r bool
		require.NoError(t, sdb.GetContext(ctx, &r, `SELECT pg_is_in_recovery()`))
		return r
	}

	out, errOut, code := g.run("promote", "--dry-run")
	require.Equal(t, 1, code, "a refusing dry run: stderr %s", errOut)
	for _, want := range []string{
		"Standby: in recovery",
		"1 events not applied",
		"created item/6",
		"item: 1 lost:\n  item/6  not tracked on this site",
		"The preflight refuses (2 reasons):",
		"  - item: 1 records would be lost (no copy on this site: 1 untracked, 0 failed, 0 missing on the primary)",
	} {
		require.Contains(t, out, want)
	}
	require.Regexp(t, `\nitem\s+6\s+5 \(83\.3%\)\s+5 \(83\.3%\)\s+0\s+0\s+1\s+1\s+0\s+0\s+5\n`, out)
	require.Contains(t, errOut, "promotion refused: 2 reasons above")

	out = g.ok("promote", "--dry-run", "--force")
	require.Contains(t, out, "Dry run: nothing changed.")

	// Planned switchover: drained at the first event (record 5 is synced
	// and verified), not at the second (the cursor has not reached it).
	first, second := fmt.Sprintf("%s:%d", xid, id), fmt.Sprintf("%s:%d", xid2, id2)
	out, _, _ = g.run("promote", "--dry-run", "--drained-at", first)
	require.Contains(t, out, "Drained at "+first+": yes (cursor "+first+"; 1 events up to it, naming 1 records, all synced and verified)")
	require.NotContains(t, out, "  - drained:")
	out, _, _ = g.run("promote", "--dry-run", "--drained-at", second, "--wait-drained", "1500ms")
	require.Contains(t, out, "Not drained within 1.5s.")
	require.Contains(t, out, "Drained at "+second+": no (the event cursor "+first+" has not reached it)")
	require.Contains(t, out, "  - drained: the event cursor "+first+" is not at "+second+" yet")
	_, errOut, code = g.run("promote", "--dry-run", "--drained-at", "head")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `--drained-at "head": want XID:ID`)
	_, errOut, code = g.run("promote", "--dry-run", "--wait-drained", "1s")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--wait-drained needs --drained-at")
	require.True(t, inRecovery(), "a dry run changes nothing")

	_, errOut, code = g.run("promote", "--force")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "pg_ctl promote")
	require.Contains(t, errOut, "--already-promoted")
	require.True(t, inRecovery(), "without --pg-promote the standby is the operator's")

	_, errOut, code = g.run("promote", "--force", "--pg-promote", "--primary-database-url", "postgres://u:secret@127.0.0.1:1/x?sslmode=disable&connect_timeout=2")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "connect to the standby")
	require.NotContains(t, errOut, "secret")

	require.NotContains(t, g.ok("promote", "--dry-run", "--force", "--list", "0"), "item/6", "--list 0: counts only")
	out = g.ok("promote", "--force", "--pg-promote", "-o", "json")
	var rep replicator.PromotionReport
	require.NoError(t, json.Unmarshal([]byte(out), &rep), out)
	require.True(t, rep.Promoted && rep.PromotedByTool)
	require.Equal(t, map[string]int64{"item": 5}, rep.ChecksumsKept)
	require.Equal(t, map[string]int64{"item": 1}, rep.ChecksumsReset)
	require.False(t, inRecovery(), "promoted")
	var pending []int64
	require.NoError(t, sdb.SelectContext(ctx, &pending, `SELECT model_id FROM geo_checksums WHERE state = 0 AND checksum IS NULL`))
	require.Equal(t, []int64{6}, pending)

	// Promoted: a plain run refuses (it might be the live primary); with
	// --already-promoted the checksum step runs again and keeps the five.
	out, _, code = g.run("promote", "--dry-run")
	require.Equal(t, 1, code)
	require.Contains(t, out, "standby: not in recovery")
	_, errOut, code = g.run("promote", "--force")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "--force does not override this")
	out = g.ok("promote", "--already-promoted", "--force")
	require.Contains(t, out, "Standby already promoted.")
	require.Contains(t, out, "item: 5 kept")
}
