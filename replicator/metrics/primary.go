package metrics

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
)

// PrimaryOptions configures a Primary. DB is required; zero values of the
// other fields give the defaults.
type PrimaryOptions struct {
	// DB is the primary's database, migrated with registry.MigratePrimary
	// (required). Refresh only reads it.
	DB *sqlx.DB
	// Types lists the registered types, so that a type without checksum
	// rows yet reports zeros instead of nothing; nil reports the types
	// that have rows.
	Types []string
	// Interval is how often Run refreshes the gauges; 0 means
	// IntervalDefault. Negative is an error.
	Interval time.Duration
	// Logger receives refresh failures; nil means none.
	Logger *zap.Logger
	// Now is the clock for ages; nil means time.Now.
	Now func() time.Time
}

// Primary is the primary site's metrics: the checksum table's rows per
// type and state (checksummed, failed, pending...), the outbox's size and
// age, and the transfers served. It is safe for concurrent use.
type Primary struct {
	replicator.NopObserver // the secondary's events (Secondary counts them)
	opts                   PrimaryOptions
	cs                     *registry.Checksums

	transfers  *prometheus.CounterVec
	sent       *prometheus.CounterVec
	refreshErr prometheus.Counter
	snap       *snapshot
}

// The primary's gauges, refreshed by Primary.Refresh.
var (
	dChecksumRows = desc("geo_primary_checksum_rows",
		"Primary checksum rows by type and state: succeeded (checksummed), failed, pending, started, disabled.", lTypeState)
	dOutbox = desc("geo_primary_outbox_events",
		"Events in the outbox (geo_events), from its id range: an upper bound, exact when no insert rolled back.", nil)
	dOutboxAge = desc("geo_primary_outbox_oldest_event_age_seconds",
		"Age of the oldest event kept in the outbox (retention; 0 when empty).", nil)
	dPrimaryRefreshAt = desc("geo_primary_metrics_refresh_timestamp_seconds",
		"Unix time of the last successful refresh of the primary's gauges.", nil)
)

var primaryDescs = []*prometheus.Desc{dChecksumRows, dOutbox, dOutboxAge, dPrimaryRefreshAt}

// NewPrimary creates the primary's metrics and registers them on reg
// (required). It returns an error naming the problem for a nil reg or
// DB, a negative interval or a registration conflict.
func NewPrimary(reg prometheus.Registerer, opts PrimaryOptions) (*Primary, error) {
	switch {
	case reg == nil:
		return nil, errors.New("metrics: NewPrimary: reg is nil: pass a prometheus.Registerer (prometheus.NewRegistry())")
	case opts.DB == nil:
		return nil, errors.New("metrics: PrimaryOptions.DB is required (the primary's database)")
	case opts.Interval < 0:
		return nil, fmt.Errorf("metrics: PrimaryOptions.Interval = %v, want >= 0", opts.Interval)
	}
	if opts.Interval == 0 {
		opts.Interval = IntervalDefault
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	cs, err := registry.NewChecksums(opts.DB)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	m := &Primary{
		opts: opts, cs: cs,
		transfers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "geo_primary_transfers_total",
			Help: "Blob transfers the primary's endpoint served, by type.",
		}, []string{"replicable"}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "geo_primary_transfer_bytes_total",
			Help: "Bytes the primary's transfer endpoint sent, by type.",
		}, []string{"replicable"}),
		refreshErr: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "geo_primary_metrics_refresh_errors_total",
			Help: "Refreshes of the primary's gauges that failed (the gauges keep their previous values).",
		}),
		snap: newSnapshot(primaryDescs),
	}
	if err := registerBuildInfo(reg); err != nil {
		return nil, fmt.Errorf("metrics: register geo_build_info: %w", err)
	}
	for _, c := range []prometheus.Collector{m.transfers, m.sent, m.refreshErr, m.snap} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register primary metrics: %w", err)
		}
	}
	return m, nil
}

// TransferServed implements replicator.Observer: it counts one served
// transfer. Set replicator.PrimaryConfig.Observer to m.
func (m *Primary) TransferServed(ev replicator.TransferEvent) {
	m.transfers.WithLabelValues(ev.Replicable).Inc()
	if ev.Bytes > 0 {
		m.sent.WithLabelValues(ev.Replicable).Add(float64(ev.Bytes))
	}
}

// Run refreshes the gauges at once and then every Interval until ctx
// ends; it returns nil then. A failed refresh is logged and counted, and
// the gauges keep their previous values.
func (m *Primary) Run(ctx context.Context) error {
	t := time.NewTicker(m.opts.Interval)
	defer t.Stop()
	for {
		if err := m.Refresh(ctx); err != nil && ctx.Err() == nil {
			m.opts.Logger.Warn("primary metrics refresh failed", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Refresh reads the checksum counts (one grouped query over
// geo_checksums) and the outbox's id range and oldest event (index
// lookups), and replaces the gauges' values. A database without the
// geo_checksums table (migrated before primary verification existed)
// reports the outbox alone.
func (m *Primary) Refresh(ctx context.Context) error {
	counts, err := m.cs.Counts(ctx)
	haveChecksums := true
	if isUndefinedTable(err) {
		counts, err, haveChecksums = nil, nil, false
	}
	if err != nil {
		m.refreshErr.Inc()
		return fmt.Errorf("metrics: refresh: %w", err)
	}
	var size int64
	var oldest sql.NullTime
	if err := m.opts.DB.QueryRowContext(ctx,
		`SELECT coalesce(max(id) - min(id) + 1, 0), min(created_at) FROM geo_events`).Scan(&size, &oldest); err != nil {
		m.refreshErr.Inc()
		return fmt.Errorf("metrics: refresh: outbox size: %w", err)
	}
	now := m.opts.Now()
	var out []sample
	g := func(d *prometheus.Desc, v float64, labels ...string) { out = append(out, sample{d, v, labels}) }
	types := map[string]bool{}
	if haveChecksums {
		for _, t := range m.opts.Types {
			types[t] = true
		}
	}
	for t := range counts {
		types[t] = true
	}
	for t := range types {
		c := counts[t]
		for _, s := range []struct {
			state registry.ChecksumState
			v     int64
		}{
			{registry.VerificationPending, c.Pending}, {registry.VerificationStarted, c.Started},
			{registry.VerificationSucceeded, c.Succeeded}, {registry.VerificationFailed, c.Failed},
			{registry.VerificationDisabled, c.Disabled},
		} {
			g(dChecksumRows, float64(s.v), t, s.state.String())
		}
	}
	g(dOutbox, float64(size))
	age := 0.0
	if oldest.Valid {
		age = max(now.Sub(oldest.Time).Seconds(), 0)
	}
	g(dOutboxAge, age)
	g(dPrimaryRefreshAt, float64(now.UnixNano())/1e9)
	m.snap.set(out)
	return nil
}

// isUndefinedTable reports a PostgreSQL "relation does not exist" error.
func isUndefinedTable(err error) bool {
	var pe *pq.Error
	return errors.As(err, &pe) && pe.Code == "42P01"
}
