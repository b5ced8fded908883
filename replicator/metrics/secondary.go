// Package metrics exports geo's state as Prometheus metrics: on a
// secondary, the registry's rows per type and state, sync and verification
// results and durations, event lag, backfill progress and the sync
// capacity in use; on the primary, the checksum table's states and the
// outbox size.
//
// Metrics are registered on the prometheus.Registerer the caller passes,
// never on the global default registry unless that is what the caller
// passes. [NewSecondary] gives a secondary's metrics, an Observer to put in
// replicator.SecondaryConfig.Observer; [NewPrimary] the primary's, for
// replicator.PrimaryConfig.Observer. Gauges describing the databases are
// refreshed on an interval by [Secondary.Run] and [Primary.Run] (the
// registry's maintained counts per refresh, plus index lookups: the cost
// does not grow with the registry), never per scrape: a scrape only reads
// the last snapshot, so any number of scrapers cost the database nothing.
//
// It is not a status API: [replicator.Secondary.Status] is. The metric
// names, with alerts to start from, are listed in [Operating geo],
// "Metrics".
//
// [Operating geo]: https://github.com/geoframework/geo/blob/main/docs/operations.md
package metrics

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
)

// IntervalDefault is how often Run refreshes the database gauges when the
// options say 0.
const IntervalDefault = 15 * time.Second

// DefaultDurationBuckets returns the sync and verification duration
// histogram buckets, in seconds: from 5 ms (a small file on a LAN) to 10
// minutes (a large one over a slow link). Each call returns a new slice.
func DefaultDurationBuckets() []float64 {
	return []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 180, 600}
}

// SecondaryOptions tunes a Secondary. The zero value gives the defaults.
type SecondaryOptions struct {
	// Interval is how often Run refreshes the gauges; 0 means
	// IntervalDefault. Negative is an error.
	Interval time.Duration
	// Buckets are the duration histograms' buckets in seconds; nil means
	// DefaultDurationBuckets().
	Buckets []float64
	// Logger receives refresh failures; nil means none.
	Logger *zap.Logger
}

// Secondary is a secondary site's metrics. It is the replicator.Observer
// to put in SecondaryConfig.Observer (counters and histograms update as
// the engines report), and Run refreshes its gauges from the secondary.
// It is safe for concurrent use.
type Secondary struct {
	replicator.NopObserver // TransferServed: the primary's (Primary counts it)
	opts                   SecondaryOptions

	attempts   *prometheus.CounterVec
	bytes      *prometheus.CounterVec
	skipped    *prometheus.CounterVec
	syncDur    *prometheus.HistogramVec
	verifyDur  *prometheus.HistogramVec
	evSkipped  *prometheus.CounterVec
	missing    *prometheus.CounterVec
	refreshErr prometheus.Counter

	snap *snapshot
}

// NewSecondary creates a secondary's metrics and registers them on reg
// (required). It returns an error naming the problem for a nil reg, a
// negative interval or a registration conflict (for example the same
// registry used twice).
func NewSecondary(reg prometheus.Registerer, opts SecondaryOptions) (*Secondary, error) {
	if reg == nil {
		return nil, errors.New("metrics: NewSecondary: reg is nil: pass a prometheus.Registerer (prometheus.NewRegistry())")
	}
	if opts.Interval < 0 {
		return nil, fmt.Errorf("metrics: SecondaryOptions.Interval = %v, want >= 0", opts.Interval)
	}
	if opts.Interval == 0 {
		opts.Interval = IntervalDefault
	}
	if opts.Buckets == nil {
		opts.Buckets = DefaultDurationBuckets()
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	m := &Secondary{
		opts: opts,
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "geo_sync_attempts_total",
			Help: "Sync attempts finished, by type and result (synced, skipped, failed, missing_on_primary, removed, superseded, released).",
		}, []string{"replicable", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "geo_sync_bytes_total",
			Help: "Bytes downloaded from the primary by successful syncs, by type.",
		}, []string{"replicable"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "geo_sync_skipped_downloads_total",
			Help: "Syncs that found the bytes already present and matching the primary's checksum, so skipped the download, by type.",
		}, []string{"replicable"}),
		syncDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "geo_sync_duration_seconds", Buckets: opts.Buckets,
			Help: "Duration of sync attempts (claim to settle), by type.",
		}, []string{"replicable"}),
		verifyDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "geo_verification_duration_seconds", Buckets: opts.Buckets,
			Help: "Duration of local verifications (read and hash a copy), by type and result (ok, failed).",
		}, []string{"replicable", "result"}),
		evSkipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "geo_events_skipped_total",
			Help: "Outbox events skipped, by reason: unknown_replicable (type not registered here), malformed (bad row), invalid_key (a deleted event's key; the recorded key is still removed).",
		}, []string{"reason"}),
		missing: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "geo_local_missing_total",
			Help: "Synced records whose bytes the existence scan found missing from the site's storage (downloaded again), by type.",
		}, []string{"replicable"}),
		refreshErr: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "geo_metrics_refresh_errors_total",
			Help: "Refreshes of the database gauges that failed (the gauges keep their previous values).",
		}),
		snap: newSnapshot(secondaryDescs),
	}
	if err := registerBuildInfo(reg); err != nil {
		return nil, fmt.Errorf("metrics: register geo_build_info: %w", err)
	}
	for _, c := range []prometheus.Collector{m.attempts, m.bytes, m.skipped, m.syncDur, m.verifyDur, m.evSkipped, m.missing, m.refreshErr, m.snap} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register secondary metrics: %w", err)
		}
	}
	return m, nil
}

// SyncDone implements replicator.Observer.
func (m *Secondary) SyncDone(ev replicator.SyncEvent) {
	m.attempts.WithLabelValues(ev.Replicable, string(ev.Outcome)).Inc()
	if ev.Bytes > 0 {
		m.bytes.WithLabelValues(ev.Replicable).Add(float64(ev.Bytes))
	}
	if ev.Outcome == replicator.ResultSkipped {
		m.skipped.WithLabelValues(ev.Replicable).Inc()
	}
	m.syncDur.WithLabelValues(ev.Replicable).Observe(ev.Duration.Seconds())
}

// VerifyDone implements replicator.Observer.
func (m *Secondary) VerifyDone(ev replicator.VerifyEvent) {
	result := "ok"
	if !ev.OK {
		result = "failed"
	}
	m.verifyDur.WithLabelValues(ev.Replicable, result).Observe(ev.Duration.Seconds())
}

// EventsSkipped implements replicator.Observer.
func (m *Secondary) EventsSkipped(reason string, n int) {
	m.evSkipped.WithLabelValues(reason).Add(float64(n))
}

// LocalMissing implements replicator.Observer.
func (m *Secondary) LocalMissing(replicable string, n int) {
	m.missing.WithLabelValues(replicable).Add(float64(n))
}

// Run refreshes the gauges from sec at once and then every Interval until
// ctx ends; it returns nil then. A failed refresh is logged and counted
// in geo_metrics_refresh_errors_total, and the gauges keep their previous
// values.
func (m *Secondary) Run(ctx context.Context, sec *replicator.Secondary) error {
	t := time.NewTicker(m.opts.Interval)
	defer t.Stop()
	for {
		if err := m.Refresh(ctx, sec); err != nil && ctx.Err() == nil {
			m.opts.Logger.Warn("metrics refresh failed", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Refresh reads sec's status once (replicator.Secondary.StatusWith without
// failure reasons: the registry's maintained counts plus index lookups)
// and replaces the gauges' values with it. Scrapes after Refresh returns
// see the new values. Run calls it; tests call it directly.
func (m *Secondary) Refresh(ctx context.Context, sec *replicator.Secondary) error {
	start := time.Now()
	st, err := sec.StatusWith(ctx, replicator.StatusOptions{TopFailures: -1})
	if err != nil {
		m.refreshErr.Inc()
		return fmt.Errorf("metrics: refresh: %w", err)
	}
	perType, total := sec.Capacity()
	m.snap.set(secondarySamples(st, perType, total, start, time.Since(start)))
	return nil
}

var (
	lType      = []string{"replicable"}
	lTypeState = []string{"replicable", "state"}
)

func desc(name, help string, labels []string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// The secondary's gauges, refreshed by Refresh.
var (
	dRows         = desc("geo_registry_rows", "Registry rows by type and sync state (pending, started, synced, failed).", lTypeState)
	dVerifyRows   = desc("geo_registry_verification_rows", "Registry rows by type and verification state (pending, started, succeeded, failed, disabled).", lTypeState)
	dMismatch     = desc("geo_registry_checksum_mismatch_rows", "Registry rows whose local bytes differ from the primary's checksum, by type.", lType)
	dMissing      = desc("geo_registry_missing_on_primary_rows", "Registry rows whose last sync failed because the primary lacks the bytes, by type.", lType)
	dPrimary      = desc("geo_primary_records", "Records of the type on the primary, as of the last consistency pass this process finished.", lType)
	dPaused       = desc("geo_sync_paused", "1 while an operator paused the type's sync, else 0.", lType)
	dInFlight     = desc("geo_sync_in_flight", "Syncs this process runs now (rows claimed, being synced or settled), by type.", lType)
	dCapacity     = desc("geo_sync_capacity", "Configured concurrent syncs per type (SecondaryConfig.SyncCapacityPerType).", lType)
	dCapacityAll  = desc("geo_sync_capacity_all_types", "Configured concurrent syncs over all types (SecondaryConfig.SyncCapacityTotal).", nil)
	dOldest       = desc("geo_oldest_pending_age_seconds", "How long the next pending row of the type has waited (0 when none is pending).", lType)
	dLastSynced   = desc("geo_last_progress_timestamp_seconds", "Unix time a row of the type last became synced or verified (see registry.TypeCounts).", lType)
	dNewFailures  = desc("geo_new_failures", "Rows of the type that failed for the first time in the last 10 minutes.", lType)
	dBackRatio    = desc("geo_backfill_progress_ratio", "Consistency (backfill) pass progress, 0 to 1 (0 during the first pass: total unknown).", lType)
	dBackETA      = desc("geo_backfill_eta_seconds", "Estimated seconds to the end of the running consistency pass (0 when unknown or idle).", lType)
	dBackRunning  = desc("geo_backfill_running", "1 while this process runs a consistency pass of the type.", lType)
	dLagSeconds   = desc("geo_event_lag_seconds", "Age of the oldest outbox event the secondary has not consumed yet (0 when caught up).", nil)
	dLagEvents    = desc("geo_event_lag_events", "Outbox events not consumed yet (counted up to 100,000).", nil)
	dCursorID     = desc("geo_event_cursor_id", "Event id of the consumer's cursor.", nil)
	dCursorXID    = desc("geo_event_cursor_xid", "Transaction id (xid8) of the consumer's cursor.", nil)
	dActive       = desc("geo_event_consumer_active", "1 when this process's event consumer holds the lock and consumes.", nil)
	dFellBehind   = desc("geo_event_fell_behind", "1 when retention pruned events the consumer had not read: they are lost; the consistency pass restores missed creates and deletes, not updates (run geoctl resync --all).", nil)
	dHealth       = desc("geo_health", "Overall status verdict: 0 healthy, 1 degraded, 2 unhealthy (see Secondary.Status reasons).", nil)
	dProcsAlive   = desc("geo_secondary_processes_alive", "Secondary processes sharing this tracking database whose heartbeat is less than 3 of their intervals old (0 makes geo_health unhealthy).", nil)
	dProcsDead    = desc("geo_secondary_processes_dead", "Heartbeat rows of secondary processes that stopped without a graceful shutdown, kept 24h (replicator.DeadProcessRetention).", nil)
	dRefreshAt    = desc("geo_metrics_refresh_timestamp_seconds", "Unix time of the last successful refresh of these gauges.", nil)
	dRefreshTaken = desc("geo_metrics_refresh_duration_seconds", "Duration of the last successful refresh of these gauges.", nil)
)

var secondaryDescs = []*prometheus.Desc{
	dRows, dVerifyRows, dMismatch, dMissing, dPrimary, dPaused, dInFlight, dCapacity, dCapacityAll, dOldest,
	dLastSynced, dNewFailures, dBackRatio, dBackETA, dBackRunning, dLagSeconds, dLagEvents, dCursorID, dCursorXID,
	dActive, dFellBehind, dHealth, dProcsAlive, dProcsDead, dRefreshAt, dRefreshTaken,
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// secondarySamples turns a status report into gauge samples.
func secondarySamples(st replicator.Status, perType, total int, at time.Time, took time.Duration) []sample {
	var out []sample
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		out = append(out, sample{d, v, labels})
	}
	for _, ts := range st.Types {
		n, c := ts.Replicable, ts.Counts
		for _, s := range []struct {
			state registry.State
			v     int64
		}{{registry.StatePending, c.Pending}, {registry.StateStarted, c.Started}, {registry.StateSynced, c.Synced}, {registry.StateFailed, c.Failed}} {
			g(dRows, float64(s.v), n, s.state.String())
		}
		for _, s := range []struct {
			state registry.VerificationState
			v     int64
		}{
			{registry.VerificationPending, c.VerificationPending}, {registry.VerificationStarted, c.VerificationStarted},
			{registry.VerificationSucceeded, c.VerificationSucceeded}, {registry.VerificationFailed, c.VerificationFailed},
			{registry.VerificationDisabled, c.VerificationDisabled},
		} {
			g(dVerifyRows, float64(s.v), n, s.state.String())
		}
		g(dMismatch, float64(c.ChecksumMismatch), n)
		g(dMissing, float64(c.MissingOnPrimary), n)
		if ts.PrimaryRecords > 0 || (ts.Backfill != nil && !ts.Backfill.LastFinished.IsZero()) {
			g(dPrimary, float64(ts.PrimaryRecords), n)
		}
		g(dPaused, b2f(ts.Paused), n)
		g(dInFlight, float64(ts.InFlight), n)
		g(dCapacity, float64(perType), n)
		g(dOldest, ts.OldestPendingAgeSeconds, n)
		if !ts.LastProgressAt.IsZero() {
			g(dLastSynced, float64(ts.LastProgressAt.UnixNano())/1e9, n)
		}
		g(dNewFailures, float64(ts.NewFailures), n)
		if b := ts.Backfill; b != nil {
			g(dBackRatio, b.Ratio, n)
			g(dBackETA, b.ETASeconds, n)
			g(dBackRunning, b2f(b.Running), n)
		}
	}
	g(dCapacityAll, float64(total))
	ev := st.Events
	if ev.LagKnown {
		g(dLagSeconds, ev.LagSeconds)
		g(dLagEvents, float64(ev.LagEvents))
	}
	if ev.Source != replicator.EventSourceNone {
		g(dCursorID, float64(ev.CursorID))
		g(dCursorXID, float64(ev.CursorXID))
	}
	g(dActive, b2f(ev.Active))
	g(dFellBehind, b2f(ev.FellBehind))
	health := 0.0
	switch st.Health {
	case replicator.HealthDegraded:
		health = 1
	case replicator.HealthUnhealthy:
		health = 2
	}
	g(dHealth, health)
	g(dProcsAlive, float64(st.ProcessesAlive))
	g(dProcsDead, float64(len(st.Processes)-st.ProcessesAlive))
	g(dRefreshAt, float64(at.UnixNano())/1e9)
	g(dRefreshTaken, took.Seconds())
	return out
}

// sample is one gauge value of a snapshot.
type sample struct {
	desc   *prometheus.Desc
	value  float64
	labels []string
}

// snapshot is a collector serving the gauges of the last refresh. A
// refresh replaces the whole set at once, so a scrape never sees half of
// one refresh and half of another, and series of types that disappeared
// disappear.
type snapshot struct {
	descs []*prometheus.Desc

	mu      sync.Mutex
	samples []sample
}

func newSnapshot(descs []*prometheus.Desc) *snapshot { return &snapshot{descs: descs} }

func (s *snapshot) set(samples []sample) {
	s.mu.Lock()
	s.samples = samples
	s.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (s *snapshot) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range s.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (s *snapshot) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	samples := s.samples
	s.mu.Unlock()
	for _, x := range samples {
		ch <- prometheus.MustNewConstMetric(x.desc, prometheus.GaugeValue, x.value, x.labels...)
	}
}
