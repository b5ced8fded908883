package ui_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/replicator/ui"
)

// statusPageTarget is the bound on the status page's server time
// at 1,000,000 registry rows, in milliseconds.
const statusPageTarget = 50

// BenchmarkStatusPage times the status page (GET /, the whole handler:
// the status report's reads and the template) over 1,000,000 registry rows
// of two types, settled as geobench's status scenario has them (97% synced
// and verified, 1% each pending, failed and synced-but-unverified), with
// 10,000 failures of five reasons and a live process's heartbeat, after
// VACUUM ANALYZE. It prints the median of at least 10 pages in ms, with
// the database and template parts the Server-Timing header gives.
func BenchmarkStatusPage(b *testing.B) {
	const rows = 1_000_000
	ctx := context.Background()
	db := trackingDB(b)
	start := time.Now()
	_, err := db.ExecContext(ctx, `
INSERT INTO geo_registry (replicable, model_id, state, verification_state, last_synced_at, blob_key, blob_size,
  verification_checksum, verified_at, retry_count, retry_at, last_sync_failure)
SELECT CASE WHEN g <= $1 * 9 / 10 THEN 'package_file' ELSE 'upload' END, g,
  CASE WHEN g % 100 = 0 THEN 0 WHEN g % 100 = 1 THEN 3 ELSE 2 END,
  CASE WHEN g % 100 IN (0, 1, 2) THEN 0 ELSE 2 END,
  CASE WHEN g % 100 > 1 THEN now() END,
  CASE WHEN g % 100 > 1 THEN 'packages/' || g || '/file.tgz' END,
  CASE WHEN g % 100 > 1 THEN 4096 END,
  CASE WHEN g % 100 > 2 THEN md5(g::text) || md5(g::text) END,
  CASE WHEN g % 100 > 2 THEN now() END,
  CASE WHEN g % 100 = 1 THEN 1 + g % 7 ELSE 0 END,
  CASE WHEN g % 100 = 1 THEN now() + (g % 3600) * interval '1 s' END,
  CASE WHEN g % 100 = 1 THEN (ARRAY['primary answered 500 for package_file/' || g,
    'read tcp 127.0.0.1:' || (30000 + g % 30000) || '->10.0.0.5:443: connection reset by peer',
    'transfer: fetch package_file/' || g || ': primary answered 404 missing_on_primary',
    'checksum mismatch: got ' || md5(g::text) || md5(g::text),
    'context deadline exceeded after 30s'])[1 + (g / 100) % 5] END
FROM generate_series(1, $1::bigint) g`, rows)
	require.NoError(b, err)
	_, err = db.ExecContext(ctx, `VACUUM ANALYZE geo_registry`)
	require.NoError(b, err)
	rs, err := regstore.NewStore(db, regstore.Options{})
	require.NoError(b, err)
	require.NoError(b, rs.FoldCounts(ctx))
	_, err = rs.Heartbeat(ctx, registry.Process{Owner: "geo-a", Host: "geo-a", PID: 4242, Version: "geo bench",
		StartedAt: time.Now().Add(-time.Hour), Interval: time.Hour,
		Types: []string{"package_file", "upload"}, Roles: []string{replicator.RoleConsumer, replicator.RoleConsistency, replicator.RoleExistence},
		InFlight: map[string]int{"package_file": 12},
		Backfill: map[string]registry.ProcessBackfill{"package_file": {Running: true, PassStarted: time.Now(), Done: 420_000, Total: rows * 9 / 10, Rate: 60_000, ETASeconds: 8}},
		EventLag: &registry.ProcessEventLag{Seconds: 0.04, Events: 2},
	}, 0)
	require.NoError(b, err)
	b.Logf("%d rows created in %v", rows, time.Since(start).Round(time.Millisecond))

	h, err := ui.New(ui.Config{Tracking: db, Authorize: allow})
	require.NoError(b, err)
	page := func() (time.Duration, string) {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		rec := httptest.NewRecorder()
		t0 := time.Now()
		h.ServeHTTP(rec, req)
		d := time.Since(t0)
		if rec.Code != http.StatusOK {
			b.Fatalf("GET /: %d %s", rec.Code, rec.Body.String())
		}
		return d, rec.Header().Get("Server-Timing")
	}
	// Warm-up, and what the page shows.
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	require.Equal(b, http.StatusOK, rec.Code)
	body := rec.Body.String()
	for _, want := range []string{`data-count="synced">882,000<`, `data-count="failed">9,000<`, `data-count="failed">1,000<`,
		"900,000 registry rows", "ETA 8s", "geo-a", "context deadline exceeded after 30s"} {
		require.True(b, strings.Contains(body, want), "the page shows %s", want)
	}

	// The reference, interleaved so both see the same machine load: the
	// status report alone, as geoctl status reads it.
	n := max(b.N, 10)
	times := make([]float64, 0, n)
	reports := make([]float64, 0, n)
	var timing []string
	b.ResetTimer()
	for range n {
		d, st := page()
		times = append(times, float64(d.Microseconds())/1000)
		timing = append(timing, st)
		b.StopTimer()
		t0 := time.Now()
		_, err := replicator.ReadStatus(ctx, db, nil, replicator.StatusOptions{})
		require.NoError(b, err)
		reports = append(reports, float64(time.Since(t0).Microseconds())/1000)
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(reports)
	report := reports[n/2]
	b.ReportMetric(report, "ms/ReadStatus")
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(i, j int) int { return int((times[i] - times[j]) * 1000) })
	mid := order[n/2]
	median := times[mid]
	b.ReportMetric(median, "ms/page")
	verdict := "within"
	if median > statusPageTarget {
		verdict = "OVER"
	}
	fmt.Printf("%s: status page over %d registry rows: median %.1f ms of %d pages (%s), %s the target of %d ms server time; "+
		"replicator.ReadStatus alone in the same run: %.1f ms (page = %.2fx)\n",
		b.Name(), rows, median, n, strings.ReplaceAll(timing[mid], "dur=", ""), verdict, statusPageTarget, report, median/report)
}
