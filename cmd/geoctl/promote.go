package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/spf13/cobra"

	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/replicator"
)

// promoteDeadlineDefault bounds a whole promote run (the preflight's walk,
// pg_promote() and the checksum step), unlike --timeout, which bounds one
// statement of the other commands.
const promoteDeadlineDefault = 30 * time.Minute

func (a *app) promoteCmd() *cobra.Command {
	var (
		primaryURL      string
		output          string
		types           []string
		list            int
		dryRun          bool
		force           bool
		pgPromote       bool
		alreadyPromoted bool
		wait            time.Duration
		deadline        time.Duration
		drainedAt       string
		waitDrained     time.Duration
	)
	cmd := &cobra.Command{
		Use:   "promote",
		Short: "Promote this secondary site to primary, after a preflight that says what would be lost",
		Long: `promote makes this secondary site the primary (disaster recovery). It needs
the site's tracking database (--database-url) and the site's streaming
standby of the primary's database (--primary-database-url or $` + envPrimaryURL + `).

First the preflight, which changes nothing: per type, sync and verification
completeness against the primary's records (its geo_checksums rows, as the
standby shows them), failed and missing rows, and the records that would be
lost (no copy on this site), stale (an older or differing copy) or
unverified; the event consumer's lag against the standby's outbox; the
standby's replay state; secondary processes still alive. With any reason
it refuses (exit 1) unless --force. --dry-run stops after it.

A planned switchover adds --drained-at XID:ID, a position the old primary
names once its application stopped writing (the last Publish's, or its
outbox head): the preflight then also requires that the event cursor is at
or past it and that every record named by events up to it is synced and
verified here. --wait-drained D waits up to D for that first.

Then the standby is promoted: with --pg-promote by SELECT pg_promote()
(the role needs the right), else by the operator (pg_ctl promote), who
then runs promote again with --already-promoted. Then the checksum step:
a geo_checksums row is kept only where this site's registry row is synced
and verified with that same checksum; every other row goes pending, for
the new primary to compute from this site's storage. Nothing verified is
recomputed.

Afterwards: start the primary side on this site (NewPrimary over the
promoted database and this site's storage) and point the application at
it; do not start this site's secondary again. See docs/operations.md,
"Failover".`,
		Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return usagef("-o %q: want table or json", output)
			}
			if list < 0 {
				return usagef("--list %d: want >= 0", list)
			}
			if wait <= 0 || deadline <= 0 {
				return usagef("--wait and --deadline must be > 0")
			}
			if primaryURL == "" {
				primaryURL = os.Getenv(envPrimaryURL)
			}
			if primaryURL == "" {
				return usagef("no standby: pass --primary-database-url or set %s to this site's standby of the primary's database", envPrimaryURL)
			}
			shown, err := checkConn(primaryURL)
			if err != nil {
				return usagef("the standby's connection string (--primary-database-url / %s) is %v", envPrimaryURL, err)
			}
			tracking, err := a.trackingDB(cmd.Context())
			if err != nil {
				return err
			}
			sdb, err := sqlx.Open("postgres", primaryURL)
			if err != nil {
				return fmt.Errorf("open the standby %s: %w (check --primary-database-url / %s)", shown, err, envPrimaryURL)
			}
			defer sdb.Close()
			sdb.SetMaxOpenConns(2)
			ctx, cancel := context.WithTimeout(cmd.Context(), deadline)
			defer cancel()
			if err := sdb.PingContext(ctx); err != nil {
				return fmt.Errorf("connect to the standby %s: %w (check --primary-database-url / %s)", shown, err, envPrimaryURL)
			}
			cfg := replicator.PromoteConfig{Tracking: tracking, Standby: sdb, Types: types, MaxListed: list,
				Force: force, DryRun: dryRun, PromoteStandby: pgPromote, AlreadyPromoted: alreadyPromoted, PromoteWait: wait}
			if list == 0 {
				cfg.MaxListed = -1
			}
			if drainedAt != "" {
				p, err := events.ParsePosition(drainedAt)
				if err != nil {
					return usagef("--drained-at %q: want XID:ID, as the primary names it (%v)", drainedAt, err)
				}
				cfg.DrainedAt = &p
				if waitDrained > 0 {
					fmt.Fprintf(a.out, "Waiting up to %v until this site is drained at %s...\n", waitDrained, p)
					wctx, wcancel := context.WithTimeout(ctx, waitDrained)
					dr, err := replicator.WaitDrained(wctx, cfg, p)
					wcancel()
					if err != nil && cmd.Context().Err() != nil {
						return err
					}
					if dr.Drained {
						fmt.Fprintf(a.out, "Drained at %s.\n\n", p)
					} else {
						fmt.Fprintf(a.out, "Not drained within %v.\n\n", waitDrained)
					}
				}
			} else if waitDrained > 0 {
				return usagef("--wait-drained needs --drained-at")
			}
			rep, err := replicator.Promote(ctx, cfg)
			if rep.At.IsZero() {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(a.out)
				enc.SetIndent("", "  ")
				if jerr := enc.Encode(rep); jerr != nil {
					return jerr
				}
			} else {
				renderPreflight(a.out, rep)
				renderPromotion(a.out, rep, dryRun, err)
			}
			switch {
			case errors.Is(err, replicator.ErrPromotionRefused) && !rep.Standby.InRecovery && !alreadyPromoted && !dryRun:
				return errors.New("promotion refused: the standby is not in recovery: if you promoted it yourself, pass --already-promoted; if it is the live primary, do not promote (--force does not override this)")
			case errors.Is(err, replicator.ErrPromotionRefused):
				return fmt.Errorf("promotion refused: %d reasons above; fix them, or accept the loss with --force", len(rep.Reasons))
			case errors.Is(err, replicator.ErrStandbyInRecovery):
				return fmt.Errorf("%w; then run geoctl promote --already-promoted", err)
			}
			return err
		}),
	}
	cmd.Flags().StringVar(&primaryURL, "primary-database-url", "", "this site's standby of the primary's database; default $"+envPrimaryURL)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.Flags().StringSliceVar(&types, "type", nil, "check only these types (repeatable; default every type either side knows)")
	cmd.Flags().IntVar(&list, "list", replicator.PromoteListDefault, "records listed per type and kind (lost, stale, unverified); 0: counts only")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "run the preflight only: change nothing")
	cmd.Flags().BoolVar(&force, "force", false, "promote even though the preflight refuses: what it lists is lost or stale on the new primary")
	cmd.Flags().BoolVar(&pgPromote, "pg-promote", false, "promote the standby with SELECT pg_promote() (the role needs the right)")
	cmd.Flags().BoolVar(&alreadyPromoted, "already-promoted", false, "the standby was promoted already (pg_ctl promote): go on with the checksum step")
	cmd.Flags().DurationVar(&wait, "wait", replicator.PromoteWaitDefault, "how long pg_promote() waits for the end of recovery")
	cmd.Flags().StringVar(&drainedAt, "drained-at", "", "planned switchover: also require this site drained at this position (XID:ID) the old primary names")
	cmd.Flags().DurationVar(&waitDrained, "wait-drained", 0, "with --drained-at: wait up to this long until drained before the preflight")
	cmd.Flags().DurationVar(&deadline, "deadline", promoteDeadlineDefault, "give up on the whole run after this long")
	return cmd
}

// renderPreflight prints a preflight report as an operator reads it.
func renderPreflight(out io.Writer, rep replicator.PromotionReport) {
	st := rep.Standby
	fmt.Fprintf(out, "Preflight at %s\n\n", rep.At.UTC().Format(time.RFC3339))
	if st.InRecovery {
		fmt.Fprintf(out, "Standby: in recovery, received %s, replayed %s (%d bytes behind), receiver %s",
			orNone(st.ReceiveLSN), orNone(st.ReplayLSN), st.ReplayLagBytes, orNone(st.Receiver))
		if !st.LastReplayAt.IsZero() {
			fmt.Fprintf(out, ", last replayed commit %.1fs ago", st.ReplayAgeSeconds)
		}
		fmt.Fprintln(out)
	} else {
		fmt.Fprintln(out, "Standby: not in recovery (promoted)")
	}
	ev := rep.Events
	if ev.CursorKnown {
		capped := ""
		if ev.LagCapped {
			capped = "at least "
		}
		fmt.Fprintf(out, "Events: cursor %s, %s%d events not applied (oldest %.1fs)\n", ev.Cursor, capped, ev.LagEvents, ev.LagSeconds)
		for _, e := range ev.Pending {
			fmt.Fprintf(out, "  unread %s %s %s/%d\n", e.Position, e.Op, e.Replicable, e.ModelID)
		}
	} else {
		fmt.Fprintln(out, "Events: no cursor saved")
	}
	if d := rep.Drain; d != nil {
		switch {
		case d.Drained:
			fmt.Fprintf(out, "Drained at %s: yes (cursor %s; %d events up to it, naming %d records, all synced and verified)\n", d.Position, d.Cursor, d.Events, d.Records)
		case !d.CursorPassed:
			fmt.Fprintf(out, "Drained at %s: no (the event cursor %s has not reached it)\n", d.Position, d.Cursor)
		default:
			fmt.Fprintf(out, "Drained at %s: no (%d of the records named by %d events up to it not synced and verified)\n", d.Position, d.NotDrained, d.Events)
			for _, r := range d.NotDrainedList {
				fmt.Fprintf(out, "  %s/%d  %s\n", r.Replicable, r.ID, r.Reason)
			}
		}
	}
	fmt.Fprintf(out, "Secondary processes alive: %d\n\n", len(rep.ProcessesAlive))
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TYPE\tPRIMARY\tSYNCED\tVERIFIED\tFAILED\tMISSING\tUNTRACKED\tLOST\tSTALE\tUNVERIFIED\tCHECKSUMS KEPT")
	for _, t := range rep.Types {
		fmt.Fprintf(tw, "%s\t%d\t%d (%.1f%%)\t%d (%.1f%%)\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", t.Replicable, t.PrimaryRecords,
			t.Synced, t.SyncedPercent, t.Verified, t.VerifiedPercent, t.Failed, t.MissingOnPrimary, t.Untracked,
			t.Lost, t.Stale, t.Unverified, t.ChecksumsKeep)
	}
	tw.Flush()
	for _, t := range rep.Types {
		for _, l := range []struct {
			what string
			n    int64
			recs []replicator.PromoteRecord
		}{{"lost", t.Lost, t.LostList}, {"stale", t.Stale, t.StaleList}, {"unverified", t.Unverified, t.UnverifiedList}} {
			if len(l.recs) == 0 {
				continue
			}
			fmt.Fprintf(out, "\n%s: %d %s", t.Replicable, l.n, l.what)
			if int64(len(l.recs)) < l.n {
				fmt.Fprintf(out, " (first %d)", len(l.recs))
			}
			fmt.Fprintln(out, ":")
			for _, r := range l.recs {
				fmt.Fprintf(out, "  %s/%d  %s\n", t.Replicable, r.ID, r.Reason)
			}
		}
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(out, "\nnote: %s\n", n)
	}
	if rep.Refused() {
		fmt.Fprintf(out, "\nThe preflight refuses (%d reasons):\n", len(rep.Reasons))
		for _, r := range rep.Reasons {
			fmt.Fprintf(out, "  - %s\n", r)
		}
	} else {
		fmt.Fprintln(out, "\nThe preflight found nothing that would be lost.")
	}
}

// renderPromotion prints what Promote did after the preflight.
func renderPromotion(out io.Writer, rep replicator.PromotionReport, dryRun bool, err error) {
	switch {
	case err != nil && !rep.Promoted:
		return // the caller prints the error
	case dryRun:
		fmt.Fprintln(out, "\nDry run: nothing changed.")
		return
	}
	if rep.PromotedByTool {
		fmt.Fprintln(out, "\nStandby promoted with pg_promote().")
	} else if rep.Promoted {
		fmt.Fprintln(out, "\nStandby already promoted.")
	}
	if rep.Promoted {
		fmt.Fprintln(out, "Checksums:")
		for _, t := range rep.Types {
			fmt.Fprintf(out, "  %s: %d kept (verified here with the same checksum), %d made pending (the new primary computes them)\n",
				t.Replicable, rep.ChecksumsKept[t.Replicable], rep.ChecksumsReset[t.Replicable])
		}
		fmt.Fprintln(out, "\n"+strings.TrimSpace(`
Next: start the primary side on this site (NewPrimary over the promoted
database and this site's storage, and its Run), point the application at
it, and do not start this site's secondary again.`))
	}
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
