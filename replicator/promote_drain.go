package replicator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/lib/pq"

	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/registry"
)

// DrainPollDefault is how often WaitDrained checks again.
const DrainPollDefault = time.Second

// DrainReport says whether a secondary is drained at a Position: every
// event up to it is applied, and every record those events name is synced
// and verified here (or gone on the primary and here).
type DrainReport struct {
	// Position is the position checked; Since the events' lower bound
	// (PromoteConfig.DrainSince, exclusive).
	Position events.Position `json:"position"`
	Since    events.Position `json:"since"`
	// CursorKnown says the consumer saved a cursor; Cursor is it;
	// CursorPassed that it is at or past Position: every event up to it
	// was applied (see events.Position for the guarantee).
	CursorKnown  bool            `json:"cursor_known"`
	Cursor       events.Position `json:"cursor"`
	CursorPassed bool            `json:"cursor_passed"`
	// Events and Records are the events read (up to Position) and the
	// distinct records they name, when CursorPassed.
	Events  int64 `json:"events"`
	Records int64 `json:"records"`
	// NotDrained counts the records named whose state here is not final
	// (a record named in several batches of BatchSize events counts in
	// each); NotDrainedList holds the first PromoteConfig.MaxListed.
	NotDrained     int64         `json:"not_drained"`
	NotDrainedList []DrainRecord `json:"not_drained_list"`
	// Drained is CursorPassed and NotDrained == 0: promoting now loses
	// nothing written up to Position.
	Drained bool `json:"drained"`
}

// DrainRecord is one record not drained yet, with why.
type DrainRecord struct {
	Replicable string `json:"replicable"`
	ID         int64  `json:"id"`
	Reason     string `json:"reason"`
}

// Drained checks, for a planned switchover, that this secondary holds
// everything written up to pos (a Position the primary named: the last
// Publish of an application that stopped writing, or OutboxHead on the
// primary): the event consumer's cursor is at or past pos, and every
// record named by an event in (cfg.DrainSince, pos] of the standby's
// outbox is synced and verified here, or, when the primary no longer has
// it (no geo_checksums row), has no registry row either.
//
// The cursor reaches pos only once every transaction of the old primary's
// cluster with an xid up to pos's has ended: a long transaction left open
// there holds the check back. Cost: one pass over the outbox's events in
// (DrainSince, pos] in batches of BatchSize, two statements a batch (the
// registry, the primary's checksums); DrainSince bounds it.
func Drained(ctx context.Context, cfg PromoteConfig, pos events.Position) (DrainReport, error) {
	if err := cfg.prepare(); err != nil {
		return DrainReport{}, err
	}
	return drained(ctx, &cfg, pos)
}

// WaitDrained calls Drained every DrainPollDefault until it reports the
// secondary drained at pos, and returns that report; or ctx's error with
// the last report.
func WaitDrained(ctx context.Context, cfg PromoteConfig, pos events.Position) (DrainReport, error) {
	if err := cfg.prepare(); err != nil {
		return DrainReport{}, err
	}
	t := time.NewTicker(DrainPollDefault)
	defer t.Stop()
	for {
		rep, err := drained(ctx, &cfg, pos)
		if err == nil && rep.Drained {
			return rep, nil
		}
		if err != nil && ctx.Err() == nil {
			cfg.Logger.Sugar().Warnf("replicator: drained check failed, retrying: %v", err)
		}
		select {
		case <-ctx.Done():
			return rep, fmt.Errorf("replicator: wait drained at %s: %w", pos, ctx.Err())
		case <-t.C:
		}
	}
}

// OutboxHead returns the Position of the greatest event in db's outbox
// (the primary's database, or a standby of it), and false when it holds
// none: on the primary, once the application stopped writing, the
// Position a planned switchover waits for (Drained).
func OutboxHead(ctx context.Context, db interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}) (events.Position, bool, error) {
	var xid string
	var id int64
	err := db.QueryRowContext(ctx, `SELECT e.xid::text, e.id FROM geo_events e ORDER BY e.xid DESC, e.id DESC LIMIT 1`).Scan(&xid, &id)
	if errors.Is(err, sql.ErrNoRows) {
		return events.Position{}, false, nil
	}
	if err != nil {
		return events.Position{}, false, fmt.Errorf("replicator: outbox head: %w", err)
	}
	p, err := events.ParsePosition(xid + ":" + fmt.Sprint(id))
	if err != nil {
		return events.Position{}, false, fmt.Errorf("replicator: outbox head: %w", err)
	}
	return p, true, nil
}

type drainKey struct {
	typ string
	id  int64
}

func drained(ctx context.Context, cfg *PromoteConfig, pos events.Position) (DrainReport, error) {
	rep := DrainReport{Position: pos, Since: cfg.DrainSince, NotDrainedList: []DrainRecord{}}
	store, err := registry.NewStore(cfg.Tracking, registry.Options{})
	if err != nil {
		return rep, fmt.Errorf("replicator: drained: %w", err)
	}
	curs, err := store.EventCursors(ctx)
	if err != nil {
		return rep, fmt.Errorf("replicator: drained: %w", err)
	}
	for _, c := range curs {
		if c.Consumer == cfg.Consumer {
			rep.CursorKnown = true
			rep.Cursor = events.Position{XID: c.XID, ID: c.ID}
		}
	}
	rep.CursorPassed = rep.CursorKnown && !rep.Cursor.Less(pos)
	if !rep.CursorPassed {
		return rep, nil
	}
	after := cfg.DrainSince
	for {
		var evs []struct {
			XID        string `db:"xid"`
			ID         int64  `db:"id"`
			Replicable string `db:"replicable"`
			ModelID    int64  `db:"model_id"`
		}
		if err := cfg.Standby.SelectContext(ctx, &evs, `SELECT e.xid::text AS xid, e.id, e.replicable, e.model_id FROM geo_events e
WHERE (e.xid, e.id) > ($1::text::xid8, $2::bigint) AND (e.xid, e.id) <= ($3::text::xid8, $4::bigint)
ORDER BY e.xid, e.id LIMIT $5`, fmt.Sprint(after.XID), after.ID, fmt.Sprint(pos.XID), pos.ID, cfg.BatchSize); err != nil {
			return rep, fmt.Errorf("replicator: drained: read the outbox: %w", err)
		}
		if len(evs) == 0 {
			break
		}
		rep.Events += int64(len(evs))
		seen := map[drainKey]bool{}
		var types []string
		var ids []int64
		for _, e := range evs {
			k := drainKey{e.Replicable, e.ModelID}
			if !seen[k] {
				seen[k] = true
				types = append(types, k.typ)
				ids = append(ids, k.id)
			}
		}
		rep.Records += int64(len(ids))
		if err := checkDrainBatch(ctx, cfg, types, ids, &rep); err != nil {
			return rep, err
		}
		last := evs[len(evs)-1]
		if after, err = events.ParsePosition(last.XID + ":" + fmt.Sprint(last.ID)); err != nil {
			return rep, fmt.Errorf("replicator: drained: %w", err)
		}
		if len(evs) < cfg.BatchSize {
			break
		}
	}
	rep.Drained = rep.NotDrained == 0
	return rep, nil
}

// checkDrainBatch checks the records (types[i], ids[i]) of one batch of
// events: each must be synced and verified here with the primary's current
// checksum, or gone on both sides. A record named in several batches is
// checked (and counted) in each.
func checkDrainBatch(ctx context.Context, cfg *PromoteConfig, types []string, ids []int64, rep *DrainReport) error {
	var regs []struct {
		Replicable string         `db:"replicable"`
		ModelID    int64          `db:"model_id"`
		State      int16          `db:"state"`
		VState     int16          `db:"verification_state"`
		VChecksum  sql.NullString `db:"verification_checksum"`
	}
	if err := cfg.Tracking.SelectContext(ctx, &regs, `SELECT r.replicable, r.model_id, r.state, r.verification_state, r.verification_checksum
FROM unnest($1::text[], $2::bigint[]) AS k(replicable, model_id)
JOIN geo_registry r ON r.replicable = k.replicable AND r.model_id = k.model_id`, pq.Array(types), pq.Array(ids)); err != nil {
		return fmt.Errorf("replicator: drained: read the registry: %w", err)
	}
	var cks []struct {
		Replicable string         `db:"replicable"`
		ModelID    int64          `db:"model_id"`
		Checksum   sql.NullString `db:"checksum"`
	}
	if err := cfg.Standby.SelectContext(ctx, &cks, `SELECT c.replicable, c.model_id, c.checksum
FROM unnest($1::text[], $2::bigint[]) AS k(replicable, model_id)
JOIN geo_checksums c ON c.replicable = k.replicable AND c.model_id = k.model_id`, pq.Array(types), pq.Array(ids)); err != nil {
		return fmt.Errorf("replicator: drained: read the primary's checksums: %w", err)
	}
	type reg struct {
		state, vstate int16
		sum           sql.NullString
	}
	regOf := map[drainKey]reg{}
	for _, r := range regs {
		regOf[drainKey{r.Replicable, r.ModelID}] = reg{r.State, r.VState, r.VChecksum}
	}
	ckOf := map[drainKey]sql.NullString{}
	for _, c := range cks {
		ckOf[drainKey{c.Replicable, c.ModelID}] = c.Checksum
	}
	for i := range ids {
		k := drainKey{types[i], ids[i]}
		r, tracked := regOf[k]
		ck, onPrimary := ckOf[k]
		var why string
		switch {
		case !onPrimary && !tracked:
			continue // gone on both sides
		case !onPrimary:
			why = "gone on the primary, still tracked here"
		case !tracked:
			why = "not tracked here"
		case registry.State(r.state) != registry.StateSynced:
			why = registry.State(r.state).String()
		case registry.VerificationState(r.vstate) != registry.VerificationSucceeded:
			why = "synced, verification " + registry.VerificationState(r.vstate).String()
		case !ck.Valid:
			why = "synced and verified, but the primary's checksum is not computed yet (its Run must be running)"
		case ck.String != r.sum.String:
			why = "this site's copy differs from the primary's checksum"
		default:
			continue
		}
		rep.NotDrained++
		if len(rep.NotDrainedList) < cfg.MaxListed {
			rep.NotDrainedList = append(rep.NotDrainedList, DrainRecord{Replicable: k.typ, ID: k.id, Reason: why})
		}
	}
	return nil
}
