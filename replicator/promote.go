package replicator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"go.uber.org/zap"

	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/registry"
)

// Promotion defaults (see PromoteConfig).
const (
	// PromoteListDefault is PromoteConfig.MaxListed's default: records
	// listed per type and kind (lost, stale, unverified) in a report.
	PromoteListDefault = 100
	// PromoteBatchSizeDefault is PromoteConfig.BatchSize's default: the
	// ids one keyset step of the preflight's walk (and of the checksum
	// step) reads from each side.
	PromoteBatchSizeDefault = 10_000
	// PromoteWaitDefault is PromoteConfig.PromoteWait's default: how long
	// pg_promote() waits for the standby to leave recovery.
	PromoteWaitDefault = 60 * time.Second
)

// ErrPromotionRefused is returned (wrapped) by Promote when the preflight
// found reasons not to promote (PromotionReport.Reasons) and
// PromoteConfig.Force is not set. Nothing was changed.
var ErrPromotionRefused = errors.New("promotion refused by the preflight")

// ErrStandbyInRecovery is returned (wrapped) by Promote when the standby is
// still in recovery and Promote did not promote it: PromoteConfig.PromoteStandby
// is false, or the role lacks the right to call pg_promote(). The operator
// promotes it (pg_ctl promote, or a superuser's SELECT pg_promote()) and
// runs Promote again with AlreadyPromoted. Nothing was changed.
var ErrStandbyInRecovery = errors.New("the standby is still in recovery")

// PromoteConfig configures Preflight, Promote and Drained. Required fields
// are marked; every other field has the documented default when zero.
type PromoteConfig struct {
	// Tracking is this secondary site's tracking database (required): what
	// it holds and has verified.
	Tracking *sqlx.DB
	// Standby is this site's streaming standby of the primary's database
	// (required; SecondaryConfig.Primary). Promote makes it the primary:
	// the role must be allowed to call pg_promote() (with PromoteStandby)
	// and to update geo_checksums once it is promoted.
	Standby *sqlx.DB
	// Types lists the types to check; nil means every type the tracking
	// database or the primary's checksum table knows.
	Types []string
	// Consumer names the event consumer whose cursor is checked; ""
	// means events.ConsumerNameDefault (a Secondary's).
	Consumer string
	// MaxListed caps the records listed per type and kind in the report;
	// 0 means PromoteListDefault, negative means none (counts only).
	MaxListed int
	// BatchSize is the keyset step of the walks; 0 means
	// PromoteBatchSizeDefault.
	BatchSize int
	// Force promotes even when the preflight found reasons not to: the
	// records it reports lost or stale are then lost or stale on the new
	// primary.
	Force bool
	// DryRun makes Promote stop after the preflight: nothing changes.
	DryRun bool
	// PromoteStandby lets Promote call pg_promote() on a standby still in
	// recovery. Without it, Promote returns ErrStandbyInRecovery after the
	// preflight and the operator promotes the standby.
	PromoteStandby bool
	// AlreadyPromoted says the operator promoted the standby already: a
	// Standby that is not in recovery is then expected, not a reason to
	// refuse (it might be the live primary itself).
	AlreadyPromoted bool
	// DrainedAt, when set, makes the preflight check that this site is
	// drained at that Position (see Drained: a planned switchover), and
	// refuse when it is not.
	DrainedAt *events.Position
	// DrainSince is the exclusive lower bound of the events Drained reads
	// (the zero Position: the whole retained outbox up to its position).
	DrainSince events.Position
	// PromoteWait bounds pg_promote()'s wait; 0 means PromoteWaitDefault.
	PromoteWait time.Duration
	// Logger receives the steps' logs; nil means none.
	Logger *zap.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (c *PromoteConfig) prepare() error {
	if c.Tracking == nil {
		return fmt.Errorf("%w: PromoteConfig.Tracking is required", ErrInvalidConfig)
	}
	if c.Standby == nil {
		return fmt.Errorf("%w: PromoteConfig.Standby is required", ErrInvalidConfig)
	}
	if c.BatchSize < 0 || c.PromoteWait < 0 {
		return fmt.Errorf("%w: PromoteConfig.BatchSize and PromoteWait must not be negative", ErrInvalidConfig)
	}
	if c.Consumer == "" {
		c.Consumer = events.ConsumerNameDefault
	}
	if c.MaxListed == 0 {
		c.MaxListed = PromoteListDefault
	}
	if c.BatchSize == 0 {
		c.BatchSize = PromoteBatchSizeDefault
	}
	if c.PromoteWait == 0 {
		c.PromoteWait = PromoteWaitDefault
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// PromotionReport is what Preflight found and, after Promote, what it did.
type PromotionReport struct {
	// At is when the preflight ran.
	At time.Time `json:"at"`
	// Reasons says, one line each, why the preflight refuses; empty when
	// promoting loses nothing it can see.
	Reasons []string `json:"reasons"`
	// Notes are facts an operator should read that are no reason to
	// refuse (the standby still streams from a live primary, say).
	Notes []string `json:"notes"`
	// Types holds one entry per type, sorted by name.
	Types []TypePreflight `json:"types"`
	// Events is the event consumer's cursor against the standby's outbox.
	Events PromoteEvents `json:"events"`
	// Standby is the standby's recovery and replay state.
	Standby StandbyStatus `json:"standby"`
	// Drain is the drained check at PromoteConfig.DrainedAt; nil without.
	Drain *DrainReport `json:"drain,omitempty"`
	// ProcessesAlive lists the secondary processes of this tracking
	// database whose heartbeat is alive: they must be stopped first.
	ProcessesAlive []string `json:"processes_alive"`

	// Promoted is true once the standby left recovery (Promote), and
	// PromotedByTool when Promote called pg_promote() itself.
	Promoted       bool `json:"promoted"`
	PromotedByTool bool `json:"promoted_by_tool"`
	// ChecksumsKept and ChecksumsReset are the geo_checksums rows the
	// checksum step kept (this site verified the same checksum) and made
	// pending (to be computed by the new primary from its own storage),
	// per type; set by Promote.
	ChecksumsKept  map[string]int64 `json:"checksums_kept,omitempty"`
	ChecksumsReset map[string]int64 `json:"checksums_reset,omitempty"`
}

// Refused reports whether the preflight found reasons not to promote.
func (r PromotionReport) Refused() bool { return len(r.Reasons) > 0 }

// TypePreflight is one type's part of the preflight. The primary's records
// are its geo_checksums rows as the standby shows them: the publisher
// writes one in the application's transaction, the primary's consistency
// pass adds the others (every ConsistencyInterval).
type TypePreflight struct {
	Replicable string `json:"replicable"`
	// PrimaryRecords is the primary's records; Tracked this site's
	// registry rows of them, Synced those synced, Verified those synced
	// and verified with the primary's current checksum.
	PrimaryRecords int64 `json:"primary_records"`
	Tracked        int64 `json:"tracked"`
	Synced         int64 `json:"synced"`
	Verified       int64 `json:"verified"`
	// Failed rows (sync failed) and rows MissingOnPrimary (the primary
	// lacked the bytes when this site asked) among the tracked.
	Failed           int64 `json:"failed"`
	MissingOnPrimary int64 `json:"missing_on_primary"`
	// Untracked is the primary's records with no registry row here.
	Untracked int64 `json:"untracked"`
	// Extra is the registry rows of records the primary no longer has
	// (the consistency pass removes them; nothing is lost).
	Extra int64 `json:"extra"`
	// SyncedPercent and VerifiedPercent are Synced and Verified over
	// PrimaryRecords (100 when the primary has none).
	SyncedPercent   float64 `json:"synced_percent"`
	VerifiedPercent float64 `json:"verified_percent"`
	// Lost counts the records this site holds no copy of (untracked, or
	// never synced); Stale those it holds an older or differing copy of;
	// Unverified those synced but not verified. The lists hold the first
	// PromoteConfig.MaxListed of each, by id.
	Lost           int64           `json:"lost"`
	Stale          int64           `json:"stale"`
	Unverified     int64           `json:"unverified"`
	LostList       []PromoteRecord `json:"lost_list"`
	StaleList      []PromoteRecord `json:"stale_list"`
	UnverifiedList []PromoteRecord `json:"unverified_list"`
	// ChecksumsKeep is how many geo_checksums rows the checksum step
	// would keep; the others of PrimaryRecords would go pending.
	ChecksumsKeep int64 `json:"checksums_keep"`
}

// PromoteRecord is one record a preflight lists, with why.
type PromoteRecord struct {
	ID     int64  `json:"id"`
	Reason string `json:"reason"`
}

// PromoteEvents is the event consumer's state in a preflight.
type PromoteEvents struct {
	// CursorKnown says the consumer saved a cursor; Cursor is it.
	CursorKnown bool            `json:"cursor_known"`
	Cursor      events.Position `json:"cursor"`
	// LagEvents and LagSeconds are how far it is behind the standby's
	// outbox (events.ReadLag); FellBehind that retention pruned events it
	// had not read.
	LagEvents  int64   `json:"lag_events"`
	LagCapped  bool    `json:"lag_capped"`
	LagSeconds float64 `json:"lag_seconds"`
	FellBehind bool    `json:"fell_behind"`
	// Pending lists the first unread events (their records may be stale
	// or lost here).
	Pending []PromoteEvent `json:"pending"`
}

// PromoteEvent is one unread outbox event.
type PromoteEvent struct {
	Position   events.Position `json:"position"`
	Replicable string          `json:"replicable"`
	Op         string          `json:"op"`
	ModelID    int64           `json:"model_id"`
}

// StandbyStatus is the standby's recovery state, read on it.
type StandbyStatus struct {
	// InRecovery is pg_is_in_recovery(): true while it is a standby.
	InRecovery bool `json:"in_recovery"`
	// ReceiveLSN and ReplayLSN are the WAL received and replayed; "" when
	// unknown (not a standby, or nothing streamed).
	ReceiveLSN string `json:"receive_lsn"`
	ReplayLSN  string `json:"replay_lsn"`
	// ReplayLagBytes is ReceiveLSN minus ReplayLSN: WAL received but not
	// yet replayed, whose records the preflight does not see.
	ReplayLagBytes int64 `json:"replay_lag_bytes"`
	// LastReplayAt is the commit time of the last transaction replayed;
	// ReplayAgeSeconds the report's time minus it (a lag only while the
	// primary writes).
	LastReplayAt     time.Time `json:"last_replay_at,omitzero"`
	ReplayAgeSeconds float64   `json:"replay_age_seconds"`
	// Receiver is pg_stat_wal_receiver's status ("streaming" while a
	// primary feeds it), "" when no receiver runs.
	Receiver string `json:"receiver"`
}

// Preflight checks, without changing anything, what promoting this site's
// standby to primary would lose: per type, how complete sync and
// verification are, the failed, missing and untracked rows, and the
// records that would be lost (no copy here), stale (an older or differing
// copy) or unverified; the event consumer's lag against the standby's
// outbox; the standby's replay state; and secondary processes still alive.
// The report's Reasons say why it refuses (empty: nothing it can see would
// be lost). Cost: one keyset walk over each type's geo_checksums rows
// (standby) beside its registry rows (tracking), BatchSize ids a step.
func Preflight(ctx context.Context, cfg PromoteConfig) (PromotionReport, error) {
	if err := cfg.prepare(); err != nil {
		return PromotionReport{}, err
	}
	return preflight(ctx, &cfg)
}

func preflight(ctx context.Context, cfg *PromoteConfig) (PromotionReport, error) {
	now := cfg.Now()
	rep := PromotionReport{At: now, Reasons: []string{}, Notes: []string{}, ProcessesAlive: []string{}}
	var err error
	if rep.Standby, err = readStandby(ctx, cfg.Standby, now); err != nil {
		return rep, err
	}
	switch st := rep.Standby; {
	case st.InRecovery && st.ReplayLagBytes > 0:
		rep.Reasons = append(rep.Reasons, fmt.Sprintf(
			"standby: %d bytes of WAL received and not yet replayed (received %s, replayed %s): the preflight cannot see those records; run it again in a moment",
			st.ReplayLagBytes, st.ReceiveLSN, st.ReplayLSN))
	case !st.InRecovery && !cfg.AlreadyPromoted:
		rep.Reasons = append(rep.Reasons,
			"standby: not in recovery: it is a primary already (if you promoted it yourself, say so: AlreadyPromoted / --already-promoted; if it is the live primary, do not promote)")
	}
	if rep.Standby.InRecovery && rep.Standby.Receiver == "streaming" {
		rep.Notes = append(rep.Notes,
			"standby: still streaming from its primary: the old primary is alive; stop its writes (planned switchover: wait until drained) and fence it before promoting, or two primaries will accept writes")
	}
	store, err := registry.NewStore(cfg.Tracking, registry.Options{})
	if err != nil {
		return rep, fmt.Errorf("replicator: preflight: %w", err)
	}
	procs, err := store.Processes(ctx)
	if err != nil {
		return rep, fmt.Errorf("replicator: preflight: %w", err)
	}
	for _, p := range procs {
		if p.Alive(now) {
			rep.ProcessesAlive = append(rep.ProcessesAlive, p.Owner)
		}
	}
	if n := len(rep.ProcessesAlive); n > 0 {
		rep.Reasons = append(rep.Reasons, fmt.Sprintf(
			"%d secondary process(es) alive (%v): stop them first; a secondary must not go on syncing from the primary being replaced", n, rep.ProcessesAlive))
	}
	if err := readPromoteEvents(ctx, cfg, store, now, &rep); err != nil {
		return rep, err
	}
	if cfg.DrainedAt != nil {
		dr, err := drained(ctx, cfg, *cfg.DrainedAt)
		if err != nil {
			return rep, err
		}
		rep.Drain = &dr
		switch {
		case !dr.CursorPassed:
			rep.Reasons = append(rep.Reasons, fmt.Sprintf("drained: the event cursor %s is not at %s yet (events up to it not all applied, or a transaction older than it still open on the primary)", dr.Cursor, dr.Position))
		case !dr.Drained:
			rep.Reasons = append(rep.Reasons, fmt.Sprintf("drained: %d records named by events up to %s are not synced and verified here yet", dr.NotDrained, dr.Position))
		}
	}
	types, err := promoteTypes(ctx, cfg, store)
	if err != nil {
		return rep, err
	}
	for _, typ := range types {
		tp, err := walkType(ctx, cfg, typ, nil)
		if err != nil {
			return rep, err
		}
		rep.Types = append(rep.Types, tp)
		rep.Reasons = append(rep.Reasons, typeReasons(tp)...)
	}
	return rep, nil
}

func typeReasons(tp TypePreflight) []string {
	var r []string
	t := tp.Replicable
	if tp.PrimaryRecords == 0 && tp.Tracked > 0 {
		r = append(r, fmt.Sprintf("%s: the primary's checksum table lists no records while %d are tracked here: the preflight cannot tell what would be lost (has the primary's Run ever backfilled geo_checksums?)", t, tp.Tracked))
	}
	if tp.Lost > 0 {
		r = append(r, fmt.Sprintf("%s: %d records would be lost (no copy on this site: %d untracked, %d failed, %d missing on the primary)", t, tp.Lost, tp.Untracked, tp.Failed, tp.MissingOnPrimary))
	}
	if tp.Stale > 0 {
		r = append(r, fmt.Sprintf("%s: %d records would be stale (this site's copy is older or differs from the primary's checksum)", t, tp.Stale))
	}
	if tp.Unverified > 0 {
		r = append(r, fmt.Sprintf("%s: verification incomplete: %d synced records not verified against the primary's checksum", t, tp.Unverified))
	}
	return r
}

// readStandby reads the standby's recovery state.
func readStandby(ctx context.Context, db *sqlx.DB, now time.Time) (StandbyStatus, error) {
	var (
		st       StandbyStatus
		recv     sql.NullString
		replay   sql.NullString
		lag      sql.NullInt64
		last     sql.NullTime
		receiver sql.NullString
	)
	err := db.QueryRowContext(ctx, `SELECT pg_is_in_recovery(),
  pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
  pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint,
  pg_last_xact_replay_timestamp(),
  (SELECT status FROM pg_stat_wal_receiver LIMIT 1)`).Scan(&st.InRecovery, &recv, &replay, &lag, &last, &receiver)
	if err != nil {
		return st, fmt.Errorf("replicator: read the standby's recovery state: %w", err)
	}
	st.ReceiveLSN, st.ReplayLSN, st.Receiver = recv.String, replay.String, receiver.String
	st.ReplayLagBytes = max(lag.Int64, 0)
	if last.Valid {
		st.LastReplayAt = last.Time
		st.ReplayAgeSeconds = max(now.Sub(last.Time).Seconds(), 0)
	}
	return st, nil
}

func readPromoteEvents(ctx context.Context, cfg *PromoteConfig, store *registry.Store, now time.Time, rep *PromotionReport) error {
	curs, err := store.EventCursors(ctx)
	if err != nil {
		return fmt.Errorf("replicator: preflight: %w", err)
	}
	for _, c := range curs {
		if c.Consumer == cfg.Consumer {
			rep.Events.CursorKnown = true
			rep.Events.Cursor = events.Position{XID: c.XID, ID: c.ID}
		}
	}
	if !rep.Events.CursorKnown {
		rep.Reasons = append(rep.Reasons, fmt.Sprintf("events: consumer %q saved no cursor: it never ran here, so no event was applied", cfg.Consumer))
		return nil
	}
	lag, err := events.ReadLag(ctx, cfg.Standby, rep.Events.Cursor, now)
	if err != nil {
		return fmt.Errorf("replicator: preflight: %w", err)
	}
	rep.Events.LagEvents, rep.Events.LagCapped, rep.Events.LagSeconds, rep.Events.FellBehind = lag.Events, lag.Capped, lag.Seconds, lag.FellBehind
	if lag.FellBehind {
		rep.Reasons = append(rep.Reasons, "events: the consumer fell behind retention: updates it never read are lost here (resync the types)")
	}
	if lag.Events > 0 {
		capped := ""
		if lag.Capped {
			capped = " at least"
		}
		rep.Reasons = append(rep.Reasons, fmt.Sprintf("events:%s %d events not applied yet (oldest %.1fs old): the records they name may be stale or missing here",
			capped, lag.Events, lag.Seconds))
		if cfg.MaxListed > 0 {
			var got []struct {
				XID        string `db:"xid"`
				ID         int64  `db:"id"`
				Replicable string `db:"replicable"`
				Op         int16  `db:"op"`
				ModelID    int64  `db:"model_id"`
			}
			if err := cfg.Standby.SelectContext(ctx, &got, `SELECT e.xid::text AS xid, e.id, e.replicable, e.op, e.model_id FROM geo_events e
WHERE (e.xid, e.id) > ($1::text::xid8, $2::bigint) ORDER BY e.xid, e.id LIMIT $3`,
				fmt.Sprint(rep.Events.Cursor.XID), rep.Events.Cursor.ID, cfg.MaxListed); err != nil {
				return fmt.Errorf("replicator: preflight: list unread events: %w", err)
			}
			for _, e := range got {
				p, err := events.ParsePosition(e.XID + ":" + fmt.Sprint(e.ID))
				if err != nil {
					return fmt.Errorf("replicator: preflight: %w", err)
				}
				rep.Events.Pending = append(rep.Events.Pending, PromoteEvent{Position: p, Replicable: e.Replicable, Op: events.Op(e.Op).String(), ModelID: e.ModelID})
			}
		}
	}
	return nil
}

// promoteTypes is cfg.Types or every type either side knows.
func promoteTypes(ctx context.Context, cfg *PromoteConfig, store *registry.Store) ([]string, error) {
	if cfg.Types != nil {
		return cfg.Types, nil
	}
	tracked, err := store.Types(ctx)
	if err != nil {
		return nil, fmt.Errorf("replicator: preflight: %w", err)
	}
	var onPrimary []string
	if err := cfg.Standby.SelectContext(ctx, &onPrimary, `SELECT replicable FROM geo_checksums GROUP BY replicable`); err != nil {
		return nil, fmt.Errorf("replicator: preflight: list the primary's types: %w", err)
	}
	seen := map[string]bool{}
	var out []string
	for _, t := range append(tracked, onPrimary...) {
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	sort.Strings(out)
	return out, nil
}

// ckRow is a geo_checksums row as the walk reads it; regRow a registry row.
type ckRow struct {
	ModelID  int64          `db:"model_id"`
	State    int16          `db:"state"`
	Checksum sql.NullString `db:"checksum"`
}

type regRow struct {
	ModelID          int64          `db:"model_id"`
	State            int16          `db:"state"`
	VState           int16          `db:"verification_state"`
	VChecksum        sql.NullString `db:"verification_checksum"`
	VerifiedAt       sql.NullTime   `db:"verified_at"`
	LastSyncedAt     sql.NullTime   `db:"last_synced_at"`
	MissingOnPrimary bool           `db:"missing_on_primary"`
	Failure          sql.NullString `db:"last_sync_failure"`
}

// checksumPlan is one page's checksum step: rows to keep (with the time
// this site verified its copy) and rows to make pending.
type checksumPlan struct {
	keepIDs  []int64
	keepAt   []string // RFC 3339, when this site verified its copy
	keepSums []string
	resetIDs []int64
}

// walkType walks typ's geo_checksums rows beside its registry rows, in
// keyset pages bounded on both sides by the same id range, classifying
// every record; apply, when set, receives each page's checksum plan.
func walkType(ctx context.Context, cfg *PromoteConfig, typ string, apply func(checksumPlan) error) (TypePreflight, error) {
	tp := TypePreflight{Replicable: typ, LostList: []PromoteRecord{}, StaleList: []PromoteRecord{}, UnverifiedList: []PromoteRecord{}}
	list := func(l *[]PromoteRecord, id int64, reason string) {
		if len(*l) < cfg.MaxListed {
			*l = append(*l, PromoteRecord{ID: id, Reason: reason})
		}
	}
	after := int64(0)
	for {
		var cks []ckRow
		if err := cfg.Standby.SelectContext(ctx, &cks, `SELECT model_id, state, checksum FROM geo_checksums
WHERE replicable = $1 AND model_id > $2 ORDER BY model_id LIMIT $3`, typ, after, cfg.BatchSize); err != nil {
			return tp, fmt.Errorf("replicator: preflight %s: read the primary's checksums: %w", typ, err)
		}
		last := len(cks) < cfg.BatchSize
		hi := int64(1<<63 - 1)
		if !last {
			hi = cks[len(cks)-1].ModelID
		}
		var regs []regRow
		if err := cfg.Tracking.SelectContext(ctx, &regs, `SELECT model_id, state, verification_state, verification_checksum,
  verified_at, last_synced_at, missing_on_primary, last_sync_failure
FROM geo_registry WHERE replicable = $1 AND model_id > $2 AND model_id <= $3 ORDER BY model_id`, typ, after, hi); err != nil {
			return tp, fmt.Errorf("replicator: preflight %s: read the registry: %w", typ, err)
		}
		var plan checksumPlan
		i := 0
		for _, ck := range cks {
			for i < len(regs) && regs[i].ModelID < ck.ModelID {
				tp.Extra++ // tracked here, gone on the primary
				tp.Tracked++
				i++
			}
			tp.PrimaryRecords++
			var r *regRow
			if i < len(regs) && regs[i].ModelID == ck.ModelID {
				r = &regs[i]
				i++
			}
			keep := classify(&tp, ck, r, list)
			switch {
			case keep:
				plan.keepIDs = append(plan.keepIDs, ck.ModelID)
				at := r.VerifiedAt.Time
				if !r.VerifiedAt.Valid {
					at = cfg.Now()
				}
				plan.keepAt = append(plan.keepAt, at.UTC().Format(time.RFC3339Nano))
				plan.keepSums = append(plan.keepSums, r.VChecksum.String)
			case ck.State == int16(registry.VerificationPending) && !ck.Checksum.Valid:
				// Pending already, with no checksum: the new primary
				// computes it; a new gen would change nothing.
			default:
				plan.resetIDs = append(plan.resetIDs, ck.ModelID)
			}
		}
		tp.Extra += int64(len(regs) - i)
		tp.Tracked += int64(len(regs) - i)
		if apply != nil {
			if err := apply(plan); err != nil {
				return tp, err
			}
		}
		if last {
			break
		}
		after = hi
	}
	if tp.PrimaryRecords > 0 {
		tp.SyncedPercent = 100 * float64(tp.Synced) / float64(tp.PrimaryRecords)
		tp.VerifiedPercent = 100 * float64(tp.Verified) / float64(tp.PrimaryRecords)
	} else {
		tp.SyncedPercent, tp.VerifiedPercent = 100, 100
	}
	return tp, nil
}

// classify counts one primary record with its registry row (nil: none)
// and reports whether its geo_checksums row may be kept: this site's row
// is synced and verified with the checksum the primary recorded.
func classify(tp *TypePreflight, ck ckRow, r *regRow, list func(*[]PromoteRecord, int64, string)) bool {
	id := ck.ModelID
	if r == nil {
		tp.Untracked++
		tp.Lost++
		list(&tp.LostList, id, "not tracked on this site")
		return false
	}
	tp.Tracked++
	if r.MissingOnPrimary {
		tp.MissingOnPrimary++
	}
	if registry.State(r.State) == registry.StateFailed {
		tp.Failed++
	}
	if registry.State(r.State) != registry.StateSynced {
		reason := registry.State(r.State).String()
		if r.Failure.Valid && r.Failure.String != "" {
			reason += ": " + r.Failure.String
		}
		if r.LastSyncedAt.Valid {
			tp.Stale++
			list(&tp.StaleList, id, "an older copy, not synced again ("+reason+")")
		} else {
			tp.Lost++
			list(&tp.LostList, id, "never synced ("+reason+")")
		}
		return false
	}
	tp.Synced++
	if registry.VerificationState(r.VState) != registry.VerificationSucceeded || !r.VChecksum.Valid {
		tp.Unverified++
		list(&tp.UnverifiedList, id, "synced, verification "+registry.VerificationState(r.VState).String())
		return false
	}
	if !ck.Checksum.Valid {
		tp.Stale++
		list(&tp.StaleList, id, "verified, but the primary's bytes changed since (its checksum is being recomputed)")
		return false
	}
	if ck.Checksum.String != r.VChecksum.String {
		tp.Stale++
		list(&tp.StaleList, id, "this site's copy differs from the primary's checksum")
		return false
	}
	tp.Verified++
	tp.ChecksumsKeep++
	return true
}

// Promote makes this secondary site's standby the primary's database:
//
//  1. the preflight (see Preflight); with reasons and without Force it
//     returns the report and an error matching ErrPromotionRefused; with
//     DryRun it returns the report and changes nothing;
//  2. a database not in recovery is refused whatever Force says unless
//     AlreadyPromoted (it may be the live primary); a standby still in
//     recovery is promoted with pg_promote() when
//     PromoteStandby is set (else, or without the right to, an error
//     matching ErrStandbyInRecovery: the operator promotes it and runs
//     Promote again with AlreadyPromoted);
//  3. the checksum step on the promoted database: a geo_checksums row is
//     kept only where this site's registry row is synced and verified with
//     that same checksum (its state set to succeeded, verified_at to when
//     this site verified its copy, so nothing verified is recomputed); every
//     other row goes pending with a new generation and no checksum, for the
//     new primary to compute from its own storage.
//
// Then the operator starts the primary side on this site (NewPrimary with
// the promoted database and this site's storage, and its Run) and points
// the application at it; this site's Secondary must not run again on the
// tracking database. The checksum step is idempotent for rows it kept; run
// again, it makes pending once more the rows the new primary has computed
// since, which costs their recomputation only.
func Promote(ctx context.Context, cfg PromoteConfig) (PromotionReport, error) {
	if err := cfg.prepare(); err != nil {
		return PromotionReport{}, err
	}
	rep, err := preflight(ctx, &cfg)
	if err != nil {
		return rep, err
	}
	log := cfg.Logger
	if !rep.Standby.InRecovery && !cfg.AlreadyPromoted && !cfg.DryRun {
		// Not a reason Force overrides: Force accepts losing records, not
		// rewriting the checksums of what may be the live primary.
		return rep, fmt.Errorf("replicator: %w: the standby is not in recovery: if you promoted it yourself, say so (AlreadyPromoted); Force does not override this", ErrPromotionRefused)
	}
	if rep.Refused() {
		if !cfg.Force {
			return rep, fmt.Errorf("replicator: %w: %d reasons (first: %s)", ErrPromotionRefused, len(rep.Reasons), rep.Reasons[0])
		}
		log.Warn("promotion forced over the preflight's reasons", zap.Strings("reasons", rep.Reasons))
	}
	if cfg.DryRun {
		return rep, nil
	}
	if rep.Standby.InRecovery {
		if !cfg.PromoteStandby {
			return rep, fmt.Errorf("replicator: %w: promote it (pg_ctl promote, or SELECT pg_promote() as a superuser), then run again with AlreadyPromoted", ErrStandbyInRecovery)
		}
		if err := pgPromote(ctx, cfg.Standby, cfg.PromoteWait); err != nil {
			return rep, err
		}
		rep.PromotedByTool = true
		log.Info("standby promoted with pg_promote()")
	}
	var inRecovery bool
	if err := cfg.Standby.GetContext(ctx, &inRecovery, `SELECT pg_is_in_recovery()`); err != nil {
		return rep, fmt.Errorf("replicator: promote: %w", err)
	}
	if inRecovery {
		return rep, fmt.Errorf("replicator: promote: %w after pg_promote()", ErrStandbyInRecovery)
	}
	rep.Promoted = true
	rep.ChecksumsKept, rep.ChecksumsReset = map[string]int64{}, map[string]int64{}
	for _, tp := range rep.Types {
		typ := tp.Replicable
		_, err := walkType(ctx, &cfg, typ, func(p checksumPlan) error {
			kept, reset, err := applyChecksumPlan(ctx, cfg.Standby, typ, p)
			rep.ChecksumsKept[typ] += kept
			rep.ChecksumsReset[typ] += reset
			return err
		})
		if err != nil {
			return rep, err
		}
		log.Info("checksums reconciled", zap.String("replicable", typ),
			zap.Int64("kept", rep.ChecksumsKept[typ]), zap.Int64("reset", rep.ChecksumsReset[typ]))
	}
	return rep, nil
}

// pgPromote calls pg_promote() and waits for the end of recovery.
func pgPromote(ctx context.Context, db *sqlx.DB, wait time.Duration) error {
	var ok bool
	err := db.GetContext(ctx, &ok, `SELECT pg_promote(true, $1)`, int(wait.Seconds()))
	var pe *pq.Error
	if errors.As(err, &pe) && pe.Code == "42501" {
		return fmt.Errorf("replicator: %w: this role may not call pg_promote() (%v): promote it (pg_ctl promote, or a superuser's SELECT pg_promote()), then run again with AlreadyPromoted", ErrStandbyInRecovery, err)
	}
	if err != nil {
		return fmt.Errorf("replicator: pg_promote(): %w", err)
	}
	if !ok {
		return fmt.Errorf("replicator: %w: pg_promote() did not finish within %v", ErrStandbyInRecovery, wait)
	}
	return nil
}

// applyChecksumPlan writes one page's checksum step in one transaction.
// A kept row is rewritten only if its checksum is still the one read.
func applyChecksumPlan(ctx context.Context, db *sqlx.DB, typ string, p checksumPlan) (kept, reset int64, err error) {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("replicator: promote %s: checksums: %w", typ, err)
	}
	defer tx.Rollback()
	if len(p.keepIDs) > 0 {
		res, err := tx.ExecContext(ctx, `UPDATE geo_checksums c SET state = 2, verified_at = k.at, failure = NULL,
  retry_count = 0, retry_at = NULL, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
FROM unnest($2::bigint[], $3::timestamptz[], $4::text[]) AS k(id, at, sum)
WHERE c.replicable = $1 AND c.model_id = k.id AND c.checksum = k.sum`,
			typ, pq.Array(p.keepIDs), pq.Array(p.keepAt), pq.Array(p.keepSums))
		if err != nil {
			return 0, 0, fmt.Errorf("replicator: promote %s: keep checksums: %w", typ, err)
		}
		kept, _ = res.RowsAffected()
	}
	if len(p.resetIDs) > 0 {
		res, err := tx.ExecContext(ctx, `UPDATE geo_checksums SET state = 0, gen = DEFAULT, checksum = NULL, size = NULL,
  verified_at = NULL, failure = NULL, retry_count = 0, retry_at = NULL, lease_owner = NULL, lease_expires_at = NULL,
  updated_at = now()
WHERE replicable = $1 AND model_id = ANY($2::bigint[])`, typ, pq.Array(p.resetIDs))
		if err != nil {
			return 0, 0, fmt.Errorf("replicator: promote %s: reset checksums: %w", typ, err)
		}
		reset, _ = res.RowsAffected()
	}
	if err := tx.Commit(); err != nil {
		return 0, 0, fmt.Errorf("replicator: promote %s: checksums: %w", typ, err)
	}
	return kept, reset, nil
}
