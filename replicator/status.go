package replicator

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/jmoiron/sqlx"
	"golang.org/x/sync/errgroup"

	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
)

// Health is a status report's overall verdict.
type Health string

// Health verdicts, from best to worst.
const (
	// HealthHealthy: nothing needs an operator.
	HealthHealthy Health = "healthy"
	// HealthDegraded: replication proceeds but something needs a look
	// (failures growing, checksum mismatches, a paused type).
	HealthDegraded Health = "degraded"
	// HealthUnhealthy: replication is not keeping up or is stuck (no
	// secondary process alive, no progress, event lag over the limit, the
	// event cursor fell behind retention).
	HealthUnhealthy Health = "unhealthy"
)

func (h Health) rank() int {
	switch h {
	case HealthDegraded:
		return 1
	case HealthUnhealthy:
		return 2
	}
	return 0
}

// Status defaults (see StatusOptions).
const (
	StatusTopFailuresDefault   = 5
	StatusFailureSampleDefault = 1_000
	StatusStallAfterDefault    = 10 * time.Minute
	StatusMaxEventLagDefault   = 5 * time.Minute
	StatusFailureWindowDefault = 10 * time.Minute
)

// StatusOptions tunes a status report. The zero value gives the defaults.
type StatusOptions struct {
	// TopFailures is how many of the most frequent failure reasons are
	// reported per type and kind; 0 means 5, negative means none (the
	// query is skipped).
	TopFailures int
	// FailureSample bounds the rows whose reasons are counted per type
	// and kind (the most recently failed), and the new failures counted;
	// 0 means 1,000. Each such row is an index entry (the failure indexes
	// carry the message, migration 0011) and a message to group: 1,000
	// per type cost a few milliseconds. Reasons counted over a sample are
	// the sample's counts, not totals: a type with at most FailureSample
	// failed rows of a kind has them all counted.
	FailureSample int
	// StallAfter: a type that is not paused, whose next pending row has
	// waited at least this long while no row is being synced and nothing
	// was synced or verified for this long makes the report unhealthy ("no
	// progress"). 0 means 10m.
	StallAfter time.Duration
	// MaxEventLag: a known event lag above it makes the report unhealthy.
	// 0 means 5m.
	MaxEventLag time.Duration
	// FailureWindow: rows that failed for the first time within it make
	// the report degraded ("failures growing"). 0 means 10m.
	FailureWindow time.Duration
	// Primary, for ReadStatus, is an optional read-only handle to the
	// primary's database (or its standby) on which the event lag is
	// measured from the saved cursor; nil leaves the lag unknown.
	// Secondary.Status uses its own.
	Primary *sqlx.DB
	// Consumer names the event consumer whose cursor is reported; "" means
	// events.ConsumerNameDefault, the one a Secondary uses.
	Consumer string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (o *StatusOptions) defaults() {
	if o.TopFailures == 0 {
		o.TopFailures = StatusTopFailuresDefault
	}
	if o.FailureSample <= 0 {
		o.FailureSample = StatusFailureSampleDefault
	}
	if o.StallAfter <= 0 {
		o.StallAfter = StatusStallAfterDefault
	}
	if o.MaxEventLag <= 0 {
		o.MaxEventLag = StatusMaxEventLagDefault
	}
	if o.FailureWindow <= 0 {
		o.FailureWindow = StatusFailureWindowDefault
	}
	if o.Consumer == "" {
		o.Consumer = events.ConsumerNameDefault
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Status is a secondary's state at one moment: per type progress and
// problems, the event consumer's position, and an overall verdict with
// the reasons behind it.
type Status struct {
	// At is when the report was taken.
	At time.Time `json:"at"`
	// Health is the worst verdict any reason gives (healthy when none).
	Health Health `json:"health"`
	// Reasons says, one line each, what made the report degraded or
	// unhealthy, naming the type.
	Reasons []string `json:"reasons"`
	// Types holds one entry per type, sorted by name.
	Types []TypeStatus `json:"types"`
	// Events is the event consumer's position and lag.
	Events EventStatus `json:"events"`
	// Processes lists the secondary processes' heartbeat rows: alive ones
	// first (most recent heartbeat first), then dead ones not yet pruned
	// (replicator.DeadProcessRetention). ProcessesAlive counts the alive
	// ones; none alive makes the report unhealthy.
	Processes      []ProcessStatus `json:"processes"`
	ProcessesAlive int             `json:"processes_alive"`
}

// ProcessStatus is one secondary process as its heartbeat row shows it
// (registry.Process).
type ProcessStatus struct {
	// Owner names the process (SecondaryConfig.Owner); Host, PID and
	// Version say where it runs and which build.
	Owner   string `json:"owner"`
	Host    string `json:"host"`
	PID     int    `json:"pid"`
	Version string `json:"version"`
	// StartedAt is when the process started; HeartbeatAt when it last
	// wrote its row, HeartbeatAgeSeconds the report's time minus that.
	StartedAt           time.Time `json:"started_at"`
	HeartbeatAt         time.Time `json:"heartbeat_at"`
	HeartbeatAgeSeconds float64   `json:"heartbeat_age_seconds"`
	// HeartbeatIntervalSeconds is the process's HeartbeatInterval;
	// DeadAfterSeconds registry.ProcessDeadAfterBeats of them.
	HeartbeatIntervalSeconds float64 `json:"heartbeat_interval_seconds"`
	DeadAfterSeconds         float64 `json:"dead_after_seconds"`
	// Alive: the last heartbeat is younger than DeadAfterSeconds. A dead
	// process was killed, crashed, hangs or cannot reach the tracking
	// database; the figures below are its last.
	Alive bool `json:"alive"`
	// Types are the types the process registers; Roles the singleton
	// loops it held (RoleConsumer, RoleConsistency, RoleExistence).
	Types []string `json:"types"`
	Roles []string `json:"roles"`
	// InFlight is the syncs it ran per type (rows claimed and being
	// synced or settled, not capacity reserved for a claim); Backfill its
	// consistency pass per type (types it never ran a pass of are absent).
	InFlight map[string]int            `json:"in_flight"`
	Backfill map[string]BackfillStatus `json:"backfill"`
	// EventLag is its event consumer's lag; nil unless it held the
	// consumer.
	EventLag *ProcessEventLag `json:"event_lag,omitempty"`
}

// ProcessEventLag is the event lag a process holding the consumer
// reported in its heartbeat.
type ProcessEventLag struct {
	Seconds    float64 `json:"seconds"`
	Events     int64   `json:"events"`
	FellBehind bool    `json:"fell_behind"`
}

// hasRole reports whether p held role at its last heartbeat.
func (p ProcessStatus) hasRole(role string) bool {
	for _, r := range p.Roles {
		if r == role {
			return true
		}
	}
	return false
}

// processStatus turns a heartbeat row into its report at now.
func processStatus(p registry.Process, now time.Time) ProcessStatus {
	ps := ProcessStatus{
		Owner: p.Owner, Host: p.Host, PID: p.PID, Version: p.Version, StartedAt: p.StartedAt,
		HeartbeatAt: p.HeartbeatAt, HeartbeatAgeSeconds: max(now.Sub(p.HeartbeatAt).Seconds(), 0),
		HeartbeatIntervalSeconds: p.Interval.Seconds(), DeadAfterSeconds: p.DeadAfter().Seconds(),
		Alive: p.Alive(now), Types: p.Types, Roles: p.Roles, InFlight: p.InFlight,
		Backfill: make(map[string]BackfillStatus, len(p.Backfill)),
	}
	if ps.Types == nil {
		ps.Types = []string{}
	}
	if ps.Roles == nil {
		ps.Roles = []string{}
	}
	if ps.InFlight == nil {
		ps.InFlight = map[string]int{}
	}
	for name, b := range p.Backfill {
		ps.Backfill[name] = *backfillStatus(Progress{
			Replicable: name, Running: b.Running, PassStarted: b.PassStarted, Done: b.Done, Total: b.Total,
			Inserted: b.Inserted, Removed: b.Removed, Rate: b.Rate,
			ETA: time.Duration(b.ETASeconds * float64(time.Second)), LastFinished: b.LastFinished, Passes: b.Passes,
		})
	}
	if l := p.EventLag; l != nil {
		ps.EventLag = &ProcessEventLag{Seconds: l.Seconds, Events: l.Events, FellBehind: l.FellBehind}
	}
	return ps
}

// TypeStatus is one replicable type's part of a Status.
type TypeStatus struct {
	Replicable string `json:"replicable"`
	// Paused is true while an operator paused the type's sync (since
	// PausedAt).
	Paused   bool      `json:"paused"`
	PausedAt time.Time `json:"paused_at,omitzero"`
	// Counts are the registry rows by sync and verification state.
	Counts registry.Counts `json:"counts"`
	// PrimaryRecords is the number of the type's records on the primary as
	// of the last consistency pass this process ran (in ReadStatus: the
	// live process holding the pass reported); 0 when unknown.
	PrimaryRecords int64 `json:"primary_records"`
	// SyncedPercent, VerifiedPercent and FailedPercent are synced,
	// verified and failed rows as a percentage of the larger of the
	// registry rows and PrimaryRecords (0 when both are 0).
	SyncedPercent   float64 `json:"synced_percent"`
	VerifiedPercent float64 `json:"verified_percent"`
	FailedPercent   float64 `json:"failed_percent"`
	// OldestPending is when the next pending row (the head of the FIFO)
	// was marked pending; zero when none is pending.
	// OldestPendingAgeSeconds is Status.At minus it, in seconds.
	OldestPending           time.Time `json:"oldest_pending,omitzero"`
	OldestPendingAgeSeconds float64   `json:"oldest_pending_age_seconds"`
	// LastProgressAt estimates when a row of this type was last synced or
	// verified (registry.TypeCounts.LastProgressAt).
	LastProgressAt time.Time `json:"last_progress_at,omitzero"`
	// SyncFailures and VerificationFailures are the most frequent failure
	// reasons, most frequent first.
	SyncFailures         []registry.FailureReason `json:"sync_failures"`
	VerificationFailures []registry.FailureReason `json:"verification_failures"`
	// NewFailures counts rows that failed for the first time within
	// StatusOptions.FailureWindow, up to StatusOptions.FailureSample.
	NewFailures int64 `json:"new_failures"`
	// InFlight is the number of syncs this process runs now: rows claimed
	// and being synced or settled (not capacity reserved for a claim not
	// yet answered); in ReadStatus, the sum the live processes reported in
	// their last heartbeats.
	InFlight int `json:"in_flight"`
	// Backfill is this process's consistency pass; nil when this process
	// runs none (another process holds the singleton). In ReadStatus it is
	// the pass the live process holding it reported in its last
	// heartbeat; nil when no live process holds it.
	Backfill *BackfillStatus `json:"backfill,omitempty"`
}

// BackfillStatus is a type's consistency (backfill) pass progress.
type BackfillStatus struct {
	Running bool `json:"running"`
	// Done primary ids of Total were examined in the current pass. Total
	// is the previous full pass's count, 0 during the first pass (unknown).
	Done  int64 `json:"done"`
	Total int64 `json:"total"`
	// Ratio is Done/Total while running (0 when Total is unknown), 1 after
	// a finished pass.
	Ratio float64 `json:"ratio"`
	// ETASeconds is the estimated time to the end of the pass; 0 when not
	// running or unknown.
	ETASeconds float64 `json:"eta_seconds"`
	// LastFinished is when the last full pass finished.
	LastFinished time.Time `json:"last_finished,omitzero"`
}

// Event status sources (EventStatus.Source).
const (
	// EventSourceConsumer: live statistics of this process's consumer.
	EventSourceConsumer = "consumer"
	// EventSourcePrimary: the saved cursor, with the lag measured on the
	// primary's outbox.
	EventSourcePrimary = "primary"
	// EventSourceHeartbeat: the saved cursor, with the lag the process
	// holding the consumer reported in its last heartbeat (at most a
	// HeartbeatInterval old); ReadStatus without StatusOptions.Primary.
	EventSourceHeartbeat = "heartbeat"
	// EventSourceCursor: the saved cursor only; the lag is unknown.
	EventSourceCursor = "cursor"
	// EventSourceNone: no cursor saved yet (the consumer never ran).
	EventSourceNone = "none"
)

// EventStatus is the event consumer's position and lag.
type EventStatus struct {
	// Source says where the figures come from (EventSource...).
	Source string `json:"source"`
	// Active is true when this process's consumer holds the lock.
	Active bool `json:"active"`
	// CursorXID and CursorID are the last event read.
	CursorXID uint64 `json:"cursor_xid"`
	CursorID  int64  `json:"cursor_id"`
	// CursorUpdatedAt is when the cursor was last saved (after each batch
	// handled, so an idle outbox leaves it old: it is not the lag).
	CursorUpdatedAt time.Time `json:"cursor_updated_at,omitzero"`
	// LagKnown says LagSeconds and LagEvents were measured.
	LagKnown   bool    `json:"lag_known"`
	LagSeconds float64 `json:"lag_seconds"`
	LagEvents  int64   `json:"lag_events"`
	// FellBehind says retention pruned events the consumer had not read.
	// Those events are lost: the consistency pass the secondary starts
	// restores missed creates and deletes, not missed updates (see
	// events.ConsumerConfig.OnFellBehind); an operator resyncs the rows.
	FellBehind bool `json:"fell_behind"`
}

// ReadStatus builds a status report from the tracking database alone (and
// optionally opts.Primary for the event lag), as an admin tool does. types
// lists the types to report even when they have no rows; nil means the
// types the database knows ([registry.Store.Types]). Types with rows
// but not listed are reported too.
//
// What only a secondary process knows comes from the heartbeat rows of
// the live processes (Status.Processes): syncs in flight are their sum,
// backfill progress and the primary's record counts are those of the
// process holding the consistency pass, and, without opts.Primary, the
// event lag is the one the process holding the consumer reported
// (EventSourceHeartbeat).
//
// Cost: the registry's maintained counts (registry.Store.Counts,
// independent of the number of rows) plus index lookups bounded by
// FailureSample and the heartbeat rows, run concurrently; at most seven
// statements on separate connections.
func ReadStatus(ctx context.Context, tracking *sqlx.DB, types []string, opts StatusOptions) (Status, error) {
	opts.defaults()
	store, err := regstore.NewStore(tracking, regstore.Options{Now: opts.Now})
	if err != nil {
		return Status{}, fmt.Errorf("replicator: status: %w", err)
	}
	st, newFailures, err := readStatus(ctx, store, types, opts)
	if err != nil {
		return Status{}, err
	}
	if err := readEventStatus(ctx, store, opts, &st.Events); err != nil {
		return Status{}, err
	}
	st.fromHeartbeats()
	st.evaluate(opts, newFailures)
	return st, nil
}

// fromHeartbeats completes a report read from the database alone with
// what the live processes reported in their heartbeats.
func (st *Status) fromHeartbeats() {
	for _, p := range st.Processes {
		if !p.Alive {
			continue
		}
		for i := range st.Types {
			ts := &st.Types[i]
			ts.InFlight += p.InFlight[ts.Replicable]
			if b, ok := p.Backfill[ts.Replicable]; ok && p.hasRole(RoleConsistency) {
				ts.Backfill = &b
				if !b.LastFinished.IsZero() {
					ts.PrimaryRecords = b.Total
				}
			}
		}
		if l := p.EventLag; l != nil && !st.Events.LagKnown && p.hasRole(RoleConsumer) {
			ev := &st.Events
			ev.Source, ev.LagKnown = EventSourceHeartbeat, true
			ev.LagSeconds, ev.LagEvents, ev.FellBehind = l.Seconds, l.Events, l.FellBehind
		}
	}
}

// readStatus reads the database part of a report; health is left to
// evaluate.
func readStatus(ctx context.Context, store *regstore.Store, types []string, opts StatusOptions) (Status, map[string]int64, error) {
	now := opts.Now()
	if types == nil {
		var err error
		if types, err = store.Types(ctx); err != nil {
			return Status{}, nil, fmt.Errorf("replicator: status: %w", err)
		}
	}
	var (
		counts      map[string]registry.TypeCounts
		paused      map[string]time.Time
		oldest      map[string]time.Time
		failures    map[string]registry.Failures
		newFailures map[string]int64
		procs       []registry.Process
	)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) { counts, err = store.Counts(gctx); return err })
	g.Go(func() (err error) { paused, err = store.Paused(gctx); return err })
	g.Go(func() (err error) { oldest, err = store.OldestPending(gctx, types); return err })
	g.Go(func() (err error) { procs, err = store.Processes(gctx); return err })
	if opts.TopFailures > 0 {
		g.Go(func() (err error) {
			failures, err = store.TopFailures(gctx, types, opts.TopFailures, opts.FailureSample)
			return err
		})
	}
	g.Go(func() (err error) {
		newFailures, err = store.NewFailures(gctx, types, now.Add(-opts.FailureWindow), opts.FailureSample)
		return err
	})
	if err := g.Wait(); err != nil {
		return Status{}, nil, fmt.Errorf("replicator: status: %w", err)
	}
	names := map[string]bool{}
	for _, n := range types {
		names[n] = true
	}
	for n := range counts {
		names[n] = true
	}
	st := Status{At: now, Health: HealthHealthy, Reasons: []string{}, Types: make([]TypeStatus, 0, len(names))}
	for name := range names {
		c := counts[name]
		ts := TypeStatus{
			Replicable: name, Counts: c.Counts, LastProgressAt: c.LastProgressAt,
			NewFailures:          newFailures[name],
			SyncFailures:         failures[name].Sync,
			VerificationFailures: failures[name].Verification,
		}
		if ts.SyncFailures == nil {
			ts.SyncFailures = []registry.FailureReason{}
		}
		if ts.VerificationFailures == nil {
			ts.VerificationFailures = []registry.FailureReason{}
		}
		if at, ok := paused[name]; ok {
			ts.Paused, ts.PausedAt = true, at
		}
		if at, ok := oldest[name]; ok {
			ts.OldestPending = at
			ts.OldestPendingAgeSeconds = max(now.Sub(at).Seconds(), 0)
		}
		st.Types = append(st.Types, ts)
	}
	sort.Slice(st.Types, func(i, j int) bool { return st.Types[i].Replicable < st.Types[j].Replicable })
	st.Processes = make([]ProcessStatus, 0, len(procs))
	for _, p := range procs {
		ps := processStatus(p, now)
		if ps.Alive {
			st.ProcessesAlive++
		}
		st.Processes = append(st.Processes, ps)
	}
	sort.SliceStable(st.Processes, func(i, j int) bool {
		a, b := st.Processes[i], st.Processes[j]
		if a.Alive != b.Alive {
			return a.Alive
		}
		if !a.HeartbeatAt.Equal(b.HeartbeatAt) {
			return a.HeartbeatAt.After(b.HeartbeatAt)
		}
		return a.Owner < b.Owner
	})
	return st, newFailures, nil
}

// readEventStatus fills ev from the saved cursor and, when opts.Primary is
// set, the lag measured on the primary's outbox.
func readEventStatus(ctx context.Context, store *regstore.Store, opts StatusOptions, ev *EventStatus) error {
	cursors, err := store.EventCursors(ctx)
	if err != nil {
		return fmt.Errorf("replicator: status: %w", err)
	}
	ev.Source = EventSourceNone
	for _, c := range cursors {
		if c.Consumer != opts.Consumer {
			continue
		}
		ev.Source = EventSourceCursor
		ev.CursorXID, ev.CursorID, ev.CursorUpdatedAt = c.XID, c.ID, c.UpdatedAt
		if opts.Primary == nil {
			return nil
		}
		lag, err := events.ReadLag(ctx, opts.Primary, events.Position{XID: c.XID, ID: c.ID}, opts.Now())
		if err != nil {
			return fmt.Errorf("replicator: status: %w", err)
		}
		ev.Source, ev.LagKnown = EventSourcePrimary, true
		ev.LagSeconds, ev.LagEvents, ev.FellBehind = lag.Seconds, lag.Events, lag.FellBehind
	}
	return nil
}

// finish computes the percentages and the backfill ratio once every
// figure is in.
func (ts *TypeStatus) finish() {
	base := max(ts.Counts.Total, ts.PrimaryRecords)
	if base > 0 {
		ts.SyncedPercent = 100 * float64(ts.Counts.Synced) / float64(base)
		ts.VerifiedPercent = 100 * float64(ts.Counts.VerificationSucceeded) / float64(base)
		ts.FailedPercent = 100 * float64(ts.Counts.Failed) / float64(base)
	}
}

// evaluate sets the percentages, the health verdict and its reasons.
func (st *Status) evaluate(opts StatusOptions, newFailures map[string]int64) {
	add := func(h Health, format string, args ...any) {
		st.Reasons = append(st.Reasons, fmt.Sprintf(format, args...))
		if h.rank() > st.Health.rank() {
			st.Health = h
		}
	}
	st.Health = HealthHealthy
	if st.Reasons == nil {
		st.Reasons = []string{}
	}
	if st.ProcessesAlive == 0 {
		add(HealthUnhealthy, "%s", st.noProcessReason())
	}
	if st.Events.FellBehind {
		add(HealthUnhealthy, "event cursor fell behind retention: events were pruned before this secondary read them and are lost; "+
			"the consistency pass started for it restores missed creates and deletes but not missed updates: run geoctl resync --all")
	}
	if st.Events.LagKnown && st.Events.LagSeconds > opts.MaxEventLag.Seconds() {
		add(HealthUnhealthy, "event lag %s exceeds %s (%d events behind)",
			roundDur(st.Events.LagSeconds), opts.MaxEventLag, st.Events.LagEvents)
	}
	for i := range st.Types {
		ts := &st.Types[i]
		ts.finish()
		name := ts.Replicable
		if ts.Paused {
			add(HealthDegraded, "%s: paused since %s; `geoctl resume --type %s` resumes it",
				name, ts.PausedAt.UTC().Format(time.RFC3339), name)
			continue
		}
		// No progress: the head of the pending FIFO has waited StallAfter,
		// no row is being synced (a claim would have taken it: started
		// rows mean work goes on, however slowly) and nothing was synced
		// or verified for StallAfter either.
		stall := opts.StallAfter.Seconds()
		if ts.Counts.Pending > 0 && ts.Counts.Started == 0 && ts.OldestPendingAgeSeconds >= stall &&
			(ts.LastProgressAt.IsZero() || st.At.Sub(ts.LastProgressAt).Seconds() >= stall) {
			last := "never"
			if !ts.LastProgressAt.IsZero() {
				last = roundDur(st.At.Sub(ts.LastProgressAt).Seconds()) + " ago"
			}
			add(HealthUnhealthy, "%s: no progress for %s: %d rows pending (the oldest for %s), none being synced, last sync or verification %s; is a secondary running?",
				name, opts.StallAfter, ts.Counts.Pending, roundDur(ts.OldestPendingAgeSeconds), last)
		}
		if n := newFailures[name]; n > 0 {
			add(HealthDegraded, "%s: failures growing: %d rows failed for the first time in the last %s (%d failed in all)",
				name, n, opts.FailureWindow, ts.Counts.Failed)
		}
		if ts.Counts.ChecksumMismatch > 0 {
			add(HealthDegraded, "%s: %d rows mismatch the primary's checksum", name, ts.Counts.ChecksumMismatch)
		}
	}
}

// noProcessReason says that no secondary process is alive, since when,
// and what waits.
func (st *Status) noProcessReason() string {
	var pending int64
	for _, ts := range st.Types {
		pending += ts.Counts.Pending
	}
	why := "no process has a heartbeat row: none ran since the last one stopped gracefully, or none ever ran"
	if len(st.Processes) > 0 {
		last := st.Processes[0] // dead ones, most recent heartbeat first
		why = fmt.Sprintf("the last heartbeat was %s ago (%s on %s, pid %d; a process is dead after %s without one)",
			roundDur(last.HeartbeatAgeSeconds), last.Owner, last.Host, last.PID, roundDur(last.DeadAfterSeconds))
	}
	return fmt.Sprintf("no secondary process alive: %s; nothing replicates until one runs (%d rows pending)", why, pending)
}

func roundDur(seconds float64) string {
	return time.Duration(seconds * float64(time.Second)).Round(time.Second).String()
}

// Status reports this secondary's state with the default StatusOptions:
// see StatusWith.
func (s *Secondary) Status(ctx context.Context) (Status, error) {
	return s.StatusWith(ctx, StatusOptions{})
}

// StatusWith reports this secondary's state: one entry per registered
// type (and per type that still has rows), built from one grouped pass
// over the tracking database plus index lookups, completed with what this
// process knows live: its backfill progress and ETA, the primary's record
// counts, syncs in flight and its event consumer's lag. When another
// process holds the consumer, the lag is measured on the primary from the
// saved cursor. Processes lists every process's heartbeat row, this one's
// included once Run wrote it (at its start). opts.Primary is ignored;
// opts.Now defaults to the secondary's clock.
func (s *Secondary) StatusWith(ctx context.Context, opts StatusOptions) (Status, error) {
	if opts.Now == nil {
		opts.Now = s.cfg.Now
	}
	opts.Primary = s.cfg.Primary
	opts.defaults()
	st, newFailures, err := readStatus(ctx, s.store, s.cfg.Strategies.Names(), opts)
	if err != nil {
		return Status{}, err
	}
	progress := s.Progress()
	inflight := s.sync.Running()
	for i := range st.Types {
		ts := &st.Types[i]
		ts.InFlight = inflight[ts.Replicable]
		if p, ok := progress[ts.Replicable]; ok {
			if !p.LastFinished.IsZero() {
				ts.PrimaryRecords = p.Primary
			}
			ts.Backfill = backfillStatus(p)
		}
	}
	if cs := s.consumer.Stats(); cs.Active {
		st.Events = EventStatus{
			Source: EventSourceConsumer, Active: true, CursorXID: cs.Cursor.XID, CursorID: cs.Cursor.ID,
			LagKnown: true, LagSeconds: cs.LagSeconds, LagEvents: cs.LagEvents, FellBehind: cs.FellBehind,
		}
	} else if err := readEventStatus(ctx, s.store, opts, &st.Events); err != nil {
		return Status{}, err
	}
	st.evaluate(opts, newFailures)
	return st, nil
}

func backfillStatus(p Progress) *BackfillStatus {
	b := &BackfillStatus{Running: p.Running, Done: p.Done, LastFinished: p.LastFinished}
	if p.LastFinished.IsZero() && p.Total <= p.Done {
		// First pass with no estimate (the registry was empty): the
		// primary's total is not known until it ends.
		return b
	}
	b.Total = p.Total
	switch {
	case p.Running && p.Total > 0:
		b.Ratio = min(float64(p.Done)/float64(p.Total), 1)
		b.ETASeconds = p.ETA.Seconds()
	case !p.Running && !p.LastFinished.IsZero():
		b.Ratio = 1
	}
	return b
}

// Capacity returns the configured sync capacity: per type and in total.
func (s *Secondary) Capacity() (perType, total int) {
	return s.cfg.SyncCapacityPerType, s.cfg.SyncCapacityTotal
}

// Types returns the registered types' names, in registration order.
func (s *Secondary) Types() []string { return s.cfg.Strategies.Names() }
