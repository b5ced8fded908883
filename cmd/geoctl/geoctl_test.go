package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/geotest/pgtest"
	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/replicator"
)

var pg = pgtest.New(pgtest.Options{})

func TestMain(m *testing.M) { os.Exit(pg.Run(m)) }

// geoctl is the binary under test, built once per test into its temp dir.
type geoctl struct {
	t   *testing.T
	bin string
	env []string
}

func build(t *testing.T) *geoctl {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "geoctl")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return &geoctl{t: t, bin: bin}
}

// run runs the binary and returns stdout, stderr and the exit code.
func (g *geoctl) run(args ...string) (string, string, int) {
	g.t.Helper()
	cmd := exec.Command(g.bin, args...)
	cmd.Env = append(os.Environ(), g.env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else {
		require.NoError(g.t, err)
	}
	return stdout.String(), stderr.String(), code
}

// ok runs the binary and requires exit code 0.
func (g *geoctl) ok(args ...string) string {
	g.t.Helper()
	out, errOut, code := g.run(args...)
	require.Equal(g.t, 0, code, "geoctl %v: exit code; stderr %s", args, errOut)
	return out
}

// snapshot returns every registry row's state, seq and verification state.
func snapshot(t *testing.T, db *sqlx.DB) string {
	t.Helper()
	var rows []string
	require.NoError(t, db.Select(&rows, `SELECT replicable || '/' || model_id || ':' || state || ',' || seq || ',' ||
  verification_state || ',' || updated_at FROM geo_registry ORDER BY 1`))
	return strings.Join(rows, "\n")
}

func TestGeoctl(t *testing.T) {
	ctx := context.Background()
	g := build(t)
	trackingURL := pg.NewDatabaseURL(t)

	// Usage errors exit 2 and say what to fix.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"status"}, "pass --database-url or set GEO_DATABASE_URL"},
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"status", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"--database-url", trackingURL, "resync", "--type", "item"}, "exactly one of --id, --all or --failed"},
		{[]string{"--database-url", trackingURL, "resync", "--all", "--failed"}, "exactly one of --id, --all or --failed"},
		{[]string{"--database-url", trackingURL, "reverify", "--id", "3"}, "--id needs --type"},
		{[]string{"--database-url", trackingURL, "pause"}, "pause needs --type"},
		{[]string{"--database-url", trackingURL, "status", "-o", "yaml"}, `-o "yaml": want table or json`},
		{[]string{"--database-url", trackingURL, "failures", "--limit", "0"}, "--limit 0"},
		{[]string{"--database-url", trackingURL, "failures", "--after", "x"}, "--after \"x\": want TYPE:ID"},
	} {
		_, errOut, code := g.run(tc.args...)
		require.Equal(t, 2, code, "geoctl %v: exit code; stderr %s", tc.args, errOut)
		require.Contains(t, errOut, tc.want, "geoctl %v: stderr", tc.args)
	}

	// Errors exit 1 and name what to fix.
	_, errOut, code := g.run("--database-url", trackingURL, "status")
	require.Equal(t, 1, code, "status on an unmigrated database: %s", errOut)
	require.Contains(t, errOut, "run `geoctl migrate`")
	_, errOut, code = g.run("--database-url", "postgres://nobody:secret@127.0.0.1:1/x?sslmode=disable&connect_timeout=2", "status")
	require.Equal(t, 1, code, "status on an unreachable server: %s", errOut)
	require.Contains(t, errOut, "check --database-url")
	require.NotContains(t, errOut, "secret", "the password is not printed")

	// migrate, from the environment; twice is a no-op.
	g.env = []string{"GEO_DATABASE_URL=" + trackingURL}
	require.Contains(t, g.ok("migrate"), "tracking database migrated from version 0 to")
	require.Contains(t, g.ok("migrate"), "already at version")
	primaryURL := pg.NewDatabaseURL(t)
	require.Contains(t, g.ok("--database-url", primaryURL, "migrate", "--primary"), "primary database migrated from version 0 to")

	// A registry with synced, failed, verification-failed and pending rows.
	tracking, err := sqlx.Open("postgres", trackingURL)
	require.NoError(t, err)
	defer tracking.Close()
	store, err := regstore.NewStore(tracking, regstore.Options{})
	require.NoError(t, err)
	ids := make([]int64, 3000)
	for i := range ids {
		ids[i] = int64(i + 1)
	}
	_, err = store.InsertMissing(ctx, "item", ids)
	require.NoError(t, err)
	_, err = store.InsertMissing(ctx, "doc", ids[:500])
	require.NoError(t, err)
	_, err = tracking.Exec(`UPDATE geo_registry SET
  state = CASE WHEN model_id % 10 = 0 THEN 0 WHEN model_id % 100 IN (1, 2, 3) THEN 3 ELSE 2 END,
  verification_state = CASE WHEN model_id % 100 = 4 THEN 3 WHEN model_id % 10 = 0 OR model_id % 100 IN (1, 2, 3) THEN 0 ELSE 2 END,
  last_synced_at = now(), verified_at = now(), retry_count = 1, retry_at = now() + interval '1 hour',
  last_sync_failure = CASE WHEN model_id % 100 IN (1, 2, 3) THEN 'transfer: fetch ' || replicable || '/' || model_id || ': primary answered 500' END,
  verification_failure = CASE WHEN model_id % 100 = 4 THEN 'checksum mismatch: local abc, primary def' END,
  checksum_mismatch = (model_id % 100 = 4)
WHERE replicable = 'item'`)
	require.NoError(t, err)

	// status: table and JSON agree with the database.
	out := g.ok("status")
	require.Contains(t, out, "item  [")
	require.Contains(t, out, "doc   [")
	require.Contains(t, out, "transfer: fetch item/N: primary answered 500")
	require.Contains(t, out, "events: no cursor saved yet")
	var st replicator.Status
	require.NoError(t, json.Unmarshal([]byte(g.ok("status", "-o", "json")), &st))
	counts, err := store.Counts(ctx)
	require.NoError(t, err)
	require.Len(t, st.Types, 2)
	for _, ts := range st.Types {
		require.Equal(t, counts[ts.Replicable].Counts, ts.Counts, "status -o json: %s counts", ts.Replicable)
	}
	// No secondary process runs against this database: unhealthy.
	require.Equal(t, replicator.HealthUnhealthy, st.Health, "reasons %v", st.Reasons)
	lines := strings.Split(strings.TrimSpace(g.ok("status", "-o", "json", "--watch", "--count", "2", "--interval", "10ms")), "\n")
	require.Len(t, lines, 2, "status --watch --count 2 -o json: one object per line")
	t.Logf("geoctl status:\n%s", out)

	// --dry-run prints the count and changes nothing.
	before := snapshot(t, tracking)
	require.Equal(t, "dry run: item: 90 rows would be marked pending (resync)\n",
		g.ok("resync", "--type", "item", "--failed", "--dry-run"))
	require.Equal(t, "dry run: item: 2 rows would be marked pending (resync)\n",
		g.ok("resync", "--type", "item", "--id", "1", "--id", "5,999999", "--dry-run"))
	require.Contains(t, g.ok("resync", "--all", "--dry-run"), "total: 2700 rows")
	require.Equal(t, "dry run: item: 30 rows would become due for verification\n",
		g.ok("reverify", "--type", "item", "--failed", "--dry-run"))
	require.Equal(t, before, snapshot(t, tracking), "rows after --dry-run")

	// The real thing.
	require.Equal(t, "item: 90 rows marked pending (resync)\n", g.ok("resync", "--type", "item", "--failed"))
	require.Equal(t, "item: 30 rows due for verification\n", g.ok("reverify", "--type", "item", "--failed"))
	counts, err = store.Counts(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(0), counts["item"].Failed, "failed rows after resync --failed")
	require.Equal(t, int64(0), counts["item"].VerificationFailed, "verification failed after reverify --failed")

	// Unknown types are usage errors that list the known ones.
	_, errOut, code = g.run("resync", "--type", "itme", "--all")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `unknown type "itme": the tracking database knows doc, item`)

	// pause / resume are persisted.
	require.Contains(t, g.ok("pause", "--type", "doc"), "doc: paused")
	paused, err := store.Paused(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"doc"}, slices.Sorted(maps.Keys(paused)))
	require.Contains(t, g.ok("status"), "PAUSED")
	_, errOut, code = g.run("pause", "--type", "new")
	require.Equal(t, 2, code, "pause of an unknown type is a usage error")
	require.Contains(t, errOut, "Run 'geoctl pause --help' for usage.")
	require.Contains(t, errOut, "pass --force")
	g.ok("pause", "--type", "new", "--force")
	require.Contains(t, g.ok("resume", "--type", "doc"), "doc: resumed")
	g.ok("resume", "--type", "new")
	paused, err = store.Paused(ctx)
	require.NoError(t, err)
	require.Empty(t, paused)

	// failures: paginated, with reasons.
	_, err = tracking.Exec(`UPDATE geo_registry SET state = 3, last_sync_failure = 'primary answered 503'
WHERE replicable = 'doc' AND model_id <= 5`)
	require.NoError(t, err)
	page1 := g.ok("failures", "--limit", "3")
	require.Contains(t, page1, "doc   1")
	require.Contains(t, page1, "primary answered 503")
	require.Contains(t, page1, "more: geoctl failures --after doc:3 --limit 3")
	page2 := g.ok("failures", "--limit", "3", "--after", "doc:3")
	require.Contains(t, page2, "doc   4")
	require.Contains(t, page2, "doc   5")
	require.NotContains(t, page2, "more:")
	var js struct {
		Rows []struct {
			Replicable string `json:"replicable"`
			ModelID    int64  `json:"model_id"`
		} `json:"rows"`
		Next string `json:"next_after"`
	}
	require.NoError(t, json.Unmarshal([]byte(g.ok("failures", "--type", "doc", "--limit", "2", "--after", "1", "-o", "json")), &js))
	require.Len(t, js.Rows, 2)
	require.Equal(t, int64(2), js.Rows[0].ModelID)
	require.Equal(t, "doc:3", js.Next)
}

// TestGeoctlHelpVersionCompletionAndTypos checks the command line itself,
// without a database: --version from the build info, shell completion,
// typo suggestions, "geoctl -h CMD" giving CMD's help, Example sections on
// every command, and usage errors pointing at the subcommand's help.
func TestGeoctlHelpVersionCompletionAndTypos(t *testing.T) {
	g := build(t)
	out, _, code := g.run("--version")
	require.Equal(t, 0, code)
	require.Regexp(t, `^geoctl \S+ .*go1\.`, out)

	out, _, code = g.run("completion", "bash")
	require.Equal(t, 0, code)
	require.Contains(t, out, "bash completion")

	_, errOut, code := g.run("stauts")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "Did you mean this?\n\tstatus")

	out, _, code = g.run("-h", "status")
	require.Equal(t, 0, code)
	require.Contains(t, out, "status shows, per type")

	_, errOut, code = g.run("failures", "--bogus")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "Run 'geoctl failures --help' for usage.")

	for _, c := range []string{"migrate", "status", "resync", "reverify", "pause", "resume", "failures", "ui", "promote"} {
		out, _, code := g.run(c, "--help")
		require.Equal(t, 0, code, c)
		require.Contains(t, out, "Examples:\n  geoctl ", "geoctl %s --help has no Example section", c)
	}
}
