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
verification, the oldest pending row and the most frequent failure reasons,
then the event consumer's position and the overall health with its reasons.

It reads the tracking database alone (one grouped pass over the registry
plus index lookups). The event lag needs the primary's database (or a
standby): pass --primary-database-url or set ` + envPrimaryURL + `; without it
only the saved cursor is shown. Backfill progress and syncs in flight live
in the secondary process: see its metrics or Secondary.Status.

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
			store, err := a.tracking(cmd.Context())
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
				st, err := replicator.ReadStatus(ctx, store, nil, opts)
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
		fmt.Fprintln(tw, "TYPE\tSYNCED\t\tROWS\tPENDING\tSTARTED\tFAILED\tVERIFIED\tMISMATCH\tOLDEST PENDING\tLAST PROGRESS\tSTATE")
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
			fmt.Fprintf(tw, "%s\t%s\t%5.1f%%\t%d\t%d\t%d\t%d\t%s\t%d\t%s\t%s\t%s\n",
				t.Replicable, bar(t.SyncedPercent), t.SyncedPercent, c.Total, c.Pending, c.Started, c.Failed,
				verified, c.ChecksumMismatch, oldest, last, state)
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
		fmt.Fprintf(w, "events: cursor xid %d id %d, saved %s ago", ev.CursorXID, ev.CursorID, ago(ev.CursorUpdatedAt, st.At))
		if ev.LagKnown {
			fmt.Fprintf(w, "; lag %s, %d events", time.Duration(ev.LagSeconds*float64(time.Second)).Round(time.Millisecond), ev.LagEvents)
			if ev.FellBehind {
				fmt.Fprint(w, "; FELL BEHIND RETENTION")
			}
			fmt.Fprintln(w)
		} else if !lagMeasured {
			fmt.Fprintln(w, "; lag unknown (pass --primary-database-url to measure it)")
		} else {
			fmt.Fprintln(w)
		}
	}
}
