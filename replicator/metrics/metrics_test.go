package metrics_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/geotest/pgtest"
	"github.com/geoframework/geo/internal/testtype"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/replicator/metrics"
	"github.com/geoframework/geo/strategy"
)

var pg = pgtest.New(pgtest.Options{})

func TestMain(m *testing.M) { os.Exit(pg.Run(m)) }

// scrape fetches reg's metrics over HTTP, as Prometheus does, and parses
// them into "name{label=value,...}" → value (labels sorted by name;
// histograms as name_count and name_sum).
func scrape(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	req, err := http.NewRequest(http.MethodGet, srv.URL, nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	out := map[string]float64{}
	for name, fam := range fams {
		for _, m := range fam.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(labels)
			key := name
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				base := strings.TrimSuffix(key, "}")
				if len(labels) == 0 {
					out[name+"_count"] = float64(m.GetHistogram().GetSampleCount())
					continue
				}
				out[strings.Replace(base, name+"{", name+"_count{", 1)+"}"] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

func newWorld(t *testing.T) (*geotest.World, *testtype.App) {
	var items *testtype.Type
	w := geotest.NewWorld(t, geotest.WorldConfig{
		Server: pg,
		Setup: func(ctx context.Context, db *sqlx.DB) error {
			_, err := db.ExecContext(ctx, testtype.Schema("items"))
			return err
		},
		Strategies: func(db *sqlx.DB) []strategy.BlobStrategy {
			items = &testtype.Type{TypeName: "item", Table: "items", DB: db}
			return []strategy.BlobStrategy{items}
		},
	})
	return w, &testtype.App{Type: items, Storage: w.PrimaryStorage, Publisher: w.Primary.Publisher()}
}

// After a scenario leaving synced, failed and pending rows, the scraped
// gauges equal the database's counts and the counters equal what the
// engines did.
func TestSecondaryMetricsMatchTheDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w, app := newWorld(t)
	var sizes []int
	ids, err := app.BulkCreate(ctx, 10, 0, func(i int) []byte {
		sizes = append(sizes, 1000+i)
		return make([]byte, 1000+i)
	})
	require.NoError(t, err)
	for _, id := range ids[:3] { // lost on the primary: these fail
		key, err := app.Type.BlobKey(ctx, id)
		require.NoError(t, err)
		require.NoError(t, w.PrimaryStorage.Remove(ctx, key))
	}

	reg := prometheus.NewRegistry()
	m, err := metrics.NewSecondary(reg, metrics.SecondaryOptions{Interval: time.Hour})
	require.NoError(t, err)
	_, err = metrics.NewSecondary(reg, metrics.SecondaryOptions{})
	require.Error(t, err, "registering twice on one registry")

	cfg := w.SecondaryConfig(&testtype.Type{TypeName: "item", Table: "items", DB: w.PrimaryDB})
	cfg.Observer = m
	cfg.Retry = strategy.Backoff{Base: time.Hour, Jitter: -1} // failed rows stay failed
	r := w.Start(cfg)
	r.TriggerConsistency()
	store := r.Store()
	geotest.WaitFor(t, time.Minute, "7 synced, 3 failed", func() (bool, string) {
		c, err := store.Counts(ctx)
		if err != nil {
			return false, err.Error()
		}
		return c["item"].Synced == 7 && c["item"].Failed == 3, fmt.Sprintf("%+v", c["item"])
	})
	// Run refreshes at once; its refresh is visible when the gauge appears.
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx, r.Secondary) }()
	geotest.WaitFor(t, time.Minute, "Run's first refresh", func() (bool, string) {
		_, ok := scrape(t, reg)["geo_registry_rows{replicable=item,state=synced}"]
		return ok, "no geo_registry_rows yet"
	})
	// While it runs, the process's own heartbeat counts it alive.
	running := scrape(t, reg)
	require.Equal(t, 1.0, running["geo_secondary_processes_alive"], "processes alive while running")
	require.Equal(t, 0.0, running["geo_secondary_processes_dead"], "dead processes while running")
	require.Equal(t, 1.0, running["geo_health"], "degraded (failures growing) while running")
	cancel()
	require.NoError(t, <-done)
	require.NoError(t, r.Stop())

	// Two synced rows become pending again.
	_, err = store.Resync(ctx, "item", ids[3:5])
	require.NoError(t, err)
	require.NoError(t, m.Refresh(ctx, r.Secondary))
	got := scrape(t, reg)

	counts, err := store.Counts(ctx)
	require.NoError(t, err)
	c := counts["item"].Counts
	require.Equal(t, registry.Counts{Total: 10, Pending: 2, Synced: 5, Failed: 3, MissingOnPrimary: 3,
		VerificationPending: c.VerificationPending, VerificationSucceeded: c.VerificationSucceeded,
		VerificationFailed: c.VerificationFailed}, c, "the scenario's rows")
	want := map[string]float64{
		"geo_registry_rows{replicable=item,state=pending}":                   float64(c.Pending),
		"geo_registry_rows{replicable=item,state=started}":                   float64(c.Started),
		"geo_registry_rows{replicable=item,state=synced}":                    float64(c.Synced),
		"geo_registry_rows{replicable=item,state=failed}":                    float64(c.Failed),
		"geo_registry_verification_rows{replicable=item,state=pending}":      float64(c.VerificationPending),
		"geo_registry_verification_rows{replicable=item,state=started}":      float64(c.VerificationStarted),
		"geo_registry_verification_rows{replicable=item,state=succeeded}":    float64(c.VerificationSucceeded),
		"geo_registry_verification_rows{replicable=item,state=failed}":       float64(c.VerificationFailed),
		"geo_registry_verification_rows{replicable=item,state=disabled}":     float64(c.VerificationDisabled),
		"geo_registry_checksum_mismatch_rows{replicable=item}":               float64(c.ChecksumMismatch),
		"geo_registry_missing_on_primary_rows{replicable=item}":              3,
		"geo_primary_records{replicable=item}":                               10,
		"geo_sync_paused{replicable=item}":                                   0,
		"geo_sync_in_flight{replicable=item}":                                0,
		"geo_sync_capacity{replicable=item}":                                 32,
		"geo_sync_capacity_all_types":                                        32,
		"geo_backfill_progress_ratio{replicable=item}":                       1,
		"geo_backfill_running{replicable=item}":                              0,
		"geo_new_failures{replicable=item}":                                  3,
		"geo_health":                                                         2, // unhealthy: stopped, no process alive (and failures growing)
		"geo_secondary_processes_alive":                                      0, // stopped gracefully: its row is gone
		"geo_secondary_processes_dead":                                       0,
		"geo_sync_attempts_total{replicable=item,result=synced}":             7,
		"geo_sync_attempts_total{replicable=item,result=missing_on_primary}": 3,
		"geo_sync_duration_seconds_count{replicable=item}":                   10,
		"geo_metrics_refresh_errors_total":                                   0,
		"geo_event_fell_behind":                                              0,
		"geo_event_consumer_active":                                          0,
	}
	var bytes float64
	for _, i := range []int{3, 4, 5, 6, 7, 8, 9} {
		bytes += float64(sizes[i])
	}
	want["geo_sync_bytes_total{replicable=item}"] = bytes
	for k, v := range want {
		g, ok := got[k]
		require.True(t, ok, "metric %s missing; scraped %v", k, got)
		require.Equal(t, v, g, "metric %s", k)
	}
	require.Greater(t, got["geo_oldest_pending_age_seconds{replicable=item}"], 0.0)
	require.Greater(t, got["geo_last_progress_timestamp_seconds{replicable=item}"], float64(time.Now().Add(-time.Hour).Unix()))

	// Pause shows at the next refresh; a refresh failure keeps the values.
	require.NoError(t, r.Pause(ctx, "item"))
	require.NoError(t, m.Refresh(ctx, r.Secondary))
	require.Equal(t, 1.0, scrape(t, reg)["geo_sync_paused{replicable=item}"])
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	require.Error(t, m.Refresh(cctx, r.Secondary))
	after := scrape(t, reg)
	require.Equal(t, 1.0, after["geo_metrics_refresh_errors_total"])
	require.Equal(t, float64(c.Pending), after["geo_registry_rows{replicable=item,state=pending}"])
}

// The primary's gauges equal geo_checksums' counts and the outbox's size;
// a database without geo_checksums reports the outbox alone.
func TestPrimaryMetricsMatchTheDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w, app := newWorld(t)
	for i := range 4 {
		_, err := app.Create(ctx, 0, []byte(fmt.Sprint(i))) // 4 events in the outbox
		require.NoError(t, err)
	}
	// Types no primary process works on, so the counts stay put while the
	// world's primary verifies its own "item" rows.
	_, err := w.PrimaryDB.ExecContext(ctx, `INSERT INTO geo_checksums (replicable, model_id, state) VALUES
  ('alpha', 1, 2), ('alpha', 2, 2), ('alpha', 3, 3), ('alpha', 4, 0), ('beta', 1, 2)`)
	require.NoError(t, err)

	reg := prometheus.NewRegistry()
	m, err := metrics.NewPrimary(reg, metrics.PrimaryOptions{DB: w.PrimaryDB, Types: []string{"alpha", "beta", "empty"}})
	require.NoError(t, err)
	m.TransferServed(replicator.TransferEvent{Replicable: "item", ModelID: 1, Start: time.Now(), End: time.Now(), Bytes: 1234})
	require.NoError(t, m.Refresh(ctx))
	got := scrape(t, reg)
	counts, err := registry.NewChecksums(w.PrimaryDB)
	require.NoError(t, err)
	cc, err := counts.Counts(ctx)
	require.NoError(t, err)
	for _, typ := range []string{"alpha", "beta", "empty"} {
		c := cc[typ]
		for state, v := range map[string]int64{"pending": c.Pending, "started": c.Started, "succeeded": c.Succeeded, "failed": c.Failed, "disabled": c.Disabled} {
			k := fmt.Sprintf("geo_primary_checksum_rows{replicable=%s,state=%s}", typ, state)
			require.Equal(t, float64(v), got[k], "metric %s", k)
		}
	}
	require.Equal(t, 2.0, got["geo_primary_checksum_rows{replicable=alpha,state=succeeded}"])
	require.Equal(t, 1.0, got["geo_primary_checksum_rows{replicable=alpha,state=failed}"])
	require.Equal(t, 1.0, got["geo_primary_checksum_rows{replicable=alpha,state=pending}"])
	var outbox float64
	require.NoError(t, w.PrimaryDB.GetContext(ctx, &outbox, `SELECT count(*) FROM geo_events`))
	require.Equal(t, outbox, got["geo_primary_outbox_events"])
	require.Equal(t, 4.0, outbox)
	require.Equal(t, 1.0, got["geo_primary_transfers_total{replicable=item}"])
	require.Equal(t, 1234.0, got["geo_primary_transfer_bytes_total{replicable=item}"])

	_, err = w.PrimaryDB.ExecContext(ctx, `DROP TABLE geo_checksums`)
	require.NoError(t, err)
	require.NoError(t, m.Refresh(ctx), "refresh without geo_checksums")
	got = scrape(t, reg)
	require.Equal(t, 4.0, got["geo_primary_outbox_events"])
	_, has := got["geo_primary_checksum_rows{replicable=alpha,state=succeeded}"]
	require.False(t, has, "checksum gauges without geo_checksums")
}

func TestOptionsAreChecked(t *testing.T) {
	_, err := metrics.NewSecondary(nil, metrics.SecondaryOptions{})
	require.ErrorContains(t, err, "reg is nil")
	_, err = metrics.NewSecondary(prometheus.NewRegistry(), metrics.SecondaryOptions{Interval: -1})
	require.ErrorContains(t, err, "SecondaryOptions.Interval")
	_, err = metrics.NewPrimary(prometheus.NewRegistry(), metrics.PrimaryOptions{})
	require.ErrorContains(t, err, "PrimaryOptions.DB")
	var _ replicator.Observer = (*metrics.Secondary)(nil)
}
