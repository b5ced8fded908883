package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/spf13/cobra"

	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
)

func (a *app) statusCmd() *cobra.Command {
	var (
		output     string
		watch      bool
		interval   time.Duration
		count      int
		primaryURL string
		top        int
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show every type's replication progress and the overall health",
		Long: `status shows, per type, the registry rows by state with a progress bar,
verification, backfill progress, the oldest pending row and the most
frequent failure reasons, then the event consumer's position, the secondary
processes with their heartbeats (alive or dead), and the overall health
with its reasons. No secondary process alive is unhealthy.

It reads the tracking database alone (one grouped pass over the registry
plus index lookups and the processes' heartbeat rows). Backfill progress
and syncs in flight come from the live processes' heartbeats, and so does
the event lag unless --primary-database-url (or ` + envPrimaryURL + `) names the
primary's database or a standby, where it is measured afresh.

Exit code 0 whatever the health; use -o json and .health in scripts.`,
		Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return usagef("-o %q: want table or json", output)
			}
			if interval <= 0 {
				return usagef("--interval %v: want > 0", interval)
			}
			if count < 0 {
				return usagef("--count %d: want >= 0", count)
			}
			tracking, err := a.trackingDB(cmd.Context())
			if err != nil {
				return err
			}
			opts := replicator.StatusOptions{TopFailures: top}
			if top == 0 {
				opts.TopFailures = -1
			}
			if primaryURL == "" {
				primaryURL = os.Getenv(envPrimaryURL)
			}
			if primaryURL != "" {
				shown, err := checkConn(primaryURL)
				if err != nil {
					return usagef("the primary database's connection string (--primary-database-url / %s) is %v", envPrimaryURL, err)
				}
				pdb, err := sqlx.Open("postgres", primaryURL)
				if err != nil {
					return fmt.Errorf("open the primary database %s: %w (check --primary-database-url / %s)", shown, err, envPrimaryURL)
				}
				defer pdb.Close()
				pdb.SetMaxOpenConns(2)
				opts.Primary = pdb
			}
			tty := isTerminal(a.out)
			for i := 0; ; i++ {
				ctx, cancel := a.opCtx(cmd.Context())
				st, err := replicator.ReadStatus(ctx, tracking, nil, opts)
				cancel()
				if err != nil {
					if cmd.Context().Err() != nil && i > 0 {
						return nil // interrupted while watching
					}
					return err
				}
				if watch && tty && output == "table" {
					fmt.Fprint(a.out, "\033[H\033[2J")
				}
				if output == "json" {
					// One object per line when watching (JSON Lines).
					enc := json.NewEncoder(a.out)
					if !watch {
						enc.SetIndent("", "  ")
					}
					if err := enc.Encode(st); err != nil {
						return err
					}
				} else {
					renderStatus(a.out, st, opts.Primary != nil)
				}
				if !watch || (count > 0 && i+1 >= count) {
					return nil
				}
				if output == "table" && !tty {
					fmt.Fprintln(a.out)
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(interval):
				}
			}
		}),
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "refresh every --interval until interrupted")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "refresh interval with --watch")
	cmd.Flags().IntVar(&count, "count", 0, "with --watch, stop after this many reports (0: until interrupted)")
	cmd.Flags().StringVar(&primaryURL, "primary-database-url", "",
		"read-only URL of the primary's database or a standby, to measure the event lag; default $"+envPrimaryURL)
	cmd.Flags().IntVar(&top, "top", 3, "failure reasons to show per type (0: none)")
	return cmd
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

const barWidth = 24

// bar draws a progress bar of pct percent.
func bar(pct float64) string {
	n := int(pct/100*barWidth + 0.5)
	n = max(0, min(n, barWidth))
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", barWidth-n) + "]"
}

func ago(at, now time.Time) string {
	if at.IsZero() {
		return "-"
	}
	return now.Sub(at).Round(time.Second).String()
}

// renderStatus writes st as a table.
func renderStatus(w io.Writer, st replicator.Status, lagMeasured bool) {
	fmt.Fprintf(w, "geo status at %s: %s\n", st.At.UTC().Format(time.RFC3339), strings.ToUpper(string(st.Health)))
	for _, r := range st.Reasons {
		fmt.Fprintf(w, "  ! %s\n", r)
	}
	fmt.Fprintln(w)
	if len(st.Types) == 0 {
		fmt.Fprintln(w, "no types tracked yet (the secondary has not run, or its registry is empty)")
	} else {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TYPE\tSYNCED\t\tROWS\tPENDING\tSTARTED\tFAILED\tVERIFIED\tMISMATCH\tOLDEST PENDING\tLAST PROGRESS\tBACKFILL\tSTATE")
		for _, t := range st.Types {
			c := t.Counts
			state := "active"
			if t.Paused {
				state = "PAUSED"
			}
			verified := "-"
			if c.Synced > 0 {
				verified = fmt.Sprintf("%.1f%%", 100*float64(c.VerificationSucceeded)/float64(c.Synced))
			}
			oldest := "-"
			if !t.OldestPending.IsZero() {
				oldest = time.Duration(t.OldestPendingAgeSeconds * float64(time.Second)).Round(time.Second).String()
			}
			last := ago(t.LastProgressAt, st.At)
			if last != "-" {
				last += " ago"
			}
			fmt.Fprintf(tw, "%s\t%s\t%5.1f%%\t%d\t%d\t%d\t%d\t%s\t%d\t%s\t%s\t%s\t%s\n",
				t.Replicable, bar(t.SyncedPercent), t.SyncedPercent, c.Total, c.Pending, c.Started, c.Failed,
				verified, c.ChecksumMismatch, oldest, last, backfill(t.Backfill, st.At), state)
		}
		tw.Flush()
	}
	var failures []string
	for _, t := range st.Types {
		for _, f := range t.SyncFailures {
			failures = append(failures, fmt.Sprintf("  %s\tsync\t%d\t%s", t.Replicable, f.Count, oneLine(f.Reason)))
		}
		for _, f := range t.VerificationFailures {
			failures = append(failures, fmt.Sprintf("  %s\tverification\t%d\t%s", t.Replicable, f.Count, oneLine(f.Reason)))
		}
	}
	if len(failures) > 0 {
		fmt.Fprintln(w, "\nmost frequent failures (`geoctl failures` lists the rows):")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  TYPE\tKIND\tROWS\tREASON")
		for _, f := range failures {
			fmt.Fprintln(tw, f)
		}
		tw.Flush()
	}
	ev := st.Events
	fmt.Fprintln(w)
	switch ev.Source {
	case replicator.EventSourceNone:
		fmt.Fprintln(w, "events: no cursor saved yet (the secondary's event consumer has not run)")
	default:
		if ev.CursorUpdatedAt.IsZero() { // the lag from a heartbeat, before the first cursor save
			fmt.Fprint(w, "events: no cursor saved yet")
		} else {
			fmt.Fprintf(w, "events: cursor xid %d id %d, saved %s ago", ev.CursorXID, ev.CursorID, ago(ev.CursorUpdatedAt, st.At))
		}
		if ev.LagKnown {
			fmt.Fprintf(w, "; lag %s, %d events", time.Duration(ev.LagSeconds*float64(time.Second)).Round(time.Millisecond), ev.LagEvents)
			if ev.Source == replicator.EventSourceHeartbeat {
				fmt.Fprint(w, " (the consumer's last heartbeat)")
			}
			if ev.FellBehind {
				fmt.Fprint(w, "; FELL BEHIND RETENTION")
			}
			fmt.Fprintln(w)
		} else if !lagMeasured {
			fmt.Fprintln(w, "; lag unknown (no live consumer reports it: pass --primary-database-url to measure it)")
		} else {
			fmt.Fprintln(w)
		}
	}
	renderProcesses(w, st)
}

// backfill describes a type's consistency pass in a few characters.
func backfill(b *replicator.BackfillStatus, now time.Time) string {
	switch {
	case b == nil:
		return "-"
	case b.Running && b.Total == 0:
		return fmt.Sprintf("first pass, %d done", b.Done)
	case b.Running:
		s := fmt.Sprintf("%.0f%%", 100*b.Ratio)
		if b.ETASeconds > 0 {
			s += " eta " + time.Duration(b.ETASeconds*float64(time.Second)).Round(time.Second).String()
		}
		return s
	case !b.LastFinished.IsZero():
		return "done " + ago(b.LastFinished, now) + " ago"
	}
	return "-"
}

// renderProcesses writes the secondary processes' heartbeats as a table.
func renderProcesses(w io.Writer, st replicator.Status) {
	fmt.Fprintln(w)
	if len(st.Processes) == 0 {
		fmt.Fprintln(w, "processes: none has a heartbeat row (no secondary ran since the last graceful stop, or none ever ran)")
		return
	}
	fmt.Fprintf(w, "processes: %d alive, %d dead (dead: no heartbeat for %d intervals)\n",
		st.ProcessesAlive, len(st.Processes)-st.ProcessesAlive, registry.ProcessDeadAfterBeats)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  OWNER\tHOST\tPID\tSTATE\tLAST HEARTBEAT\tSTARTED\tROLES\tIN FLIGHT\tVERSION")
	for _, p := range st.Processes {
		state := "alive"
		if !p.Alive {
			state = "DEAD"
		}
		roles := strings.Join(p.Roles, ",")
		if roles == "" {
			roles = "-"
		}
		inFlight := 0
		for _, n := range p.InFlight {
			inFlight += n
		}
		beat := time.Duration(p.HeartbeatAgeSeconds*float64(time.Second)).Round(time.Second).String() + " ago"
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\t%s ago\t%s\t%d\t%s\n",
			oneLine(p.Owner), oneLine(p.Host), p.PID, state, beat, ago(p.StartedAt, st.At), roles, inFlight, oneLine(p.Version))
	}
	tw.Flush()
}
