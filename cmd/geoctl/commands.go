package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lib/pq"
	"github.com/spf13/cobra"

	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/strategy"
)

func (a *app) migrateCmd() *cobra.Command {
	var primary bool
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply geo's schema migrations to the tracking database (or the primary's with --primary)",
		Long: `migrate applies the migrations this geoctl embeds that the database lacks,
each once, in order, in its own transaction; concurrent migrators wait for
each other. A database newer than this geoctl is left alone.`,
		Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			what, set, migrate := "tracking", registry.SetTracking, registry.MigrateTracking
			if primary {
				what, set, migrate = "primary", registry.SetPrimary, registry.MigratePrimary
			}
			db, err := a.connect(cmd.Context(), what)
			if err != nil {
				return err
			}
			ctx, cancel := a.opCtx(cmd.Context())
			defer cancel()
			version := func() (int, error) {
				var v int
				err := db.GetContext(ctx, &v, `SELECT coalesce(max(version), 0) FROM geo_schema_migrations WHERE set = $1`, set)
				if isUndefined(err) {
					return 0, nil
				}
				return v, err
			}
			before, err := version()
			if err != nil {
				return fmt.Errorf("read the %s database's schema version: %w", what, err)
			}
			if err := migrate(ctx, db); err != nil {
				return fmt.Errorf("migrate the %s database: %w", what, err)
			}
			after, err := version()
			if err != nil {
				return fmt.Errorf("read the %s database's schema version: %w", what, err)
			}
			if after == before {
				fmt.Fprintf(a.out, "%s database already at version %d: nothing to do\n", what, after)
			} else {
				fmt.Fprintf(a.out, "%s database migrated from version %d to %d\n", what, before, after)
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&primary, "primary", false, "migrate the primary's database (geo_events, geo_checksums) instead of a tracking database")
	return cmd
}

// maxBatch is the largest --batch: a bigger batch is one long
// transaction again.
const maxBatch = 1_000_000

// selection is the shared --type/--id/--all/--failed/--dry-run and
// --resume/--batch of resync and reverify.
type selection struct {
	typ    string
	ids    []int64
	all    bool
	failed bool
	dryRun bool
	resume string
	batch  int
	// after is --resume parsed: the walk starts after this row.
	after registry.Key
}

func (s *selection) flags(cmd *cobra.Command, verb string) {
	cmd.Flags().StringVar(&s.typ, "type", "", "the replicable type (required with --id; default with --all/--failed: every type)")
	cmd.Flags().Int64SliceVar(&s.ids, "id", nil, "record id to "+verb+" (repeatable, or comma-separated)")
	cmd.Flags().BoolVar(&s.all, "all", false, verb+" every row of the type")
	cmd.Flags().BoolVar(&s.failed, "failed", false, verb+" only the failed rows of the type")
	cmd.Flags().BoolVar(&s.dryRun, "dry-run", false, "print how many rows would change and change nothing")
	cmd.Flags().StringVar(&s.resume, "resume", "", "with --all/--failed: start after this row, TYPE:ID (or ID with --type), as printed by an interrupted run")
	cmd.Flags().IntVar(&s.batch, "batch", registry.BatchSizeDefault, fmt.Sprintf("with --all/--failed: rows per transaction (1 to %d)", maxBatch))
}

func (s *selection) validate(cmd *cobra.Command) error {
	n := 0
	for _, b := range []bool{len(s.ids) > 0, s.all, s.failed} {
		if b {
			n++
		}
	}
	if n != 1 {
		return usagef("say which rows: exactly one of --id, --all or --failed")
	}
	if len(s.ids) > 0 && s.typ == "" {
		return usagef("--id needs --type (the replicable type the ids belong to)")
	}
	if len(s.ids) > 0 && (s.resume != "" || cmd.Flags().Changed("batch")) {
		return usagef("--resume and --batch go with --all or --failed, not --id")
	}
	if s.batch < 1 || s.batch > maxBatch {
		return usagef("--batch %d: want 1 to %d", s.batch, maxBatch)
	}
	if s.resume != "" {
		k, err := parseCursor("--resume", s.resume, s.typ)
		if err != nil {
			return err
		}
		if s.typ != "" && k.Replicable != s.typ {
			return usagef("--resume %q names type %q, --type %q", s.resume, k.Replicable, s.typ)
		}
		s.after = k
	}
	return nil
}

// types resolves the selection's types: --type (checked against the
// database) or every tracked type; with --resume, from the resumed type
// on.
func (s *selection) types(ctx context.Context, store *registry.Store) ([]string, error) {
	known, err := store.Types(ctx)
	if err != nil {
		return nil, err
	}
	from := s.typ
	if s.after.Replicable != "" {
		from = s.after.Replicable
	}
	if from == "" {
		return known, nil
	}
	i := slices.Index(known, from)
	if i < 0 {
		return nil, unknownType(from, known)
	}
	if s.typ != "" {
		return []string{s.typ}, nil
	}
	return known[i:], nil
}

func unknownType(typ string, known []string) error {
	list := "none yet"
	if len(known) > 0 {
		list = strings.Join(known, ", ")
	}
	return usagef("unknown type %q: the tracking database knows %s (check --type)", typ, list)
}

// adminOps are the change and dry-run count of one admin verb, for listed
// ids and for a type's rows in batches.
type adminOps struct {
	verb                string
	change, count       func(ctx context.Context, typ string, ids []int64) (int64, error)
	changeAll           func(ctx context.Context, typ string, opts registry.BatchOptions) (registry.BatchProgress, error)
	countAll            func(ctx context.Context, typ string, opts registry.BatchOptions) (int64, error)
	effect, wouldEffect string
}

func (a *app) selectionCmd(use, short, long string, ops func(*registry.Store) adminOps) *cobra.Command {
	var sel selection
	cmd := &cobra.Command{
		Use: use, Short: short, Long: long, Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if err := sel.validate(cmd); err != nil {
				return err
			}
			store, err := a.tracking(cmd.Context())
			if err != nil {
				return err
			}
			ctx, cancel := a.opCtx(cmd.Context())
			types, err := sel.types(ctx, store)
			cancel()
			if err != nil {
				return err
			}
			op := ops(store)
			var total int64
			for i, t := range types {
				opts := registry.BatchOptions{OnlyFailed: sel.failed, Size: sel.batch}
				if i == 0 {
					opts.After = sel.after.ModelID
				}
				var n int64
				if len(sel.ids) > 0 {
					n, err = a.byIDs(cmd.Context(), op, t, sel)
				} else if sel.dryRun {
					ctx, cancel := a.opCtx(cmd.Context())
					n, err = op.countAll(ctx, t, opts)
					cancel()
				} else {
					n, err = a.walk(cmd, op, sel, t, opts)
				}
				if err != nil {
					return fmt.Errorf("%s %s: %w", op.verb, t, err)
				}
				total += n
				if sel.dryRun {
					fmt.Fprintf(a.out, "dry run: %s: %d rows would %s\n", t, n, op.wouldEffect)
				} else {
					fmt.Fprintf(a.out, "%s: %d rows %s\n", t, n, op.effect)
				}
			}
			if len(types) > 1 {
				fmt.Fprintf(a.out, "total: %d rows\n", total)
			}
			return nil
		}),
	}
	sel.flags(cmd, use)
	return cmd
}

// byIDs changes (or counts, with --dry-run) the listed ids of type t in
// one operation bounded by --timeout.
func (a *app) byIDs(ctx context.Context, op adminOps, t string, sel selection) (int64, error) {
	ctx, cancel := a.opCtx(ctx)
	defer cancel()
	if sel.dryRun {
		return op.count(ctx, t, sel.ids)
	}
	return op.change(ctx, t, sel.ids)
}

// walk changes the selected rows of type t in batches of --batch rows,
// each its own transaction bounded by --timeout (the walk as a whole has
// no bound: its length grows with the registry), printing a progress
// line on stderr after each. When it stops early (Ctrl-C, a batch past
// --timeout, a lost connection), the rows of the committed batches stay
// changed and the error ends with the command that resumes after the
// last of them.
func (a *app) walk(cmd *cobra.Command, op adminOps, sel selection, t string, opts registry.BatchOptions) (int64, error) {
	ctx, cancel := a.opCtx(cmd.Context())
	estimate, err := op.countAll(ctx, t, opts)
	cancel()
	if err != nil {
		return 0, fmt.Errorf("count the rows to %s: %w", op.verb, err)
	}
	start := time.Now()
	opts.BatchTimeout = a.timeout
	opts.Progress = func(p registry.BatchProgress) error {
		fmt.Fprintln(a.errOut, progressLine(op.verb, t, p, estimate, time.Since(start)))
		return nil
	}
	p, err := op.changeAll(cmd.Context(), t, opts)
	if err == nil {
		return p.Changed, nil
	}
	why := err.Error()
	var pe *pq.Error
	switch {
	case cmd.Context().Err() != nil:
		why = "interrupted"
	case errors.Is(err, context.DeadlineExceeded):
		why = fmt.Sprintf("a batch of %d rows took longer than --timeout %v, a smaller --batch or a longer --timeout helps (%v)",
			sel.batch, a.timeout, err)
	case errors.As(err, &pe) && pe.Code == "57014":
		why = fmt.Sprintf("the server cancelled a batch of %d rows: its statement_timeout is shorter, a smaller --batch helps (%v)",
			sel.batch, err)
	}
	return p.Changed, fmt.Errorf("%s; %d rows changed, every row up to id %d is done (%d batches committed)\nresume with: %s",
		why, p.Changed, p.After, p.Batches, resumeCommand(cmd, sel, t, p.After))
}

// progressLine is walk's line after each batch: rows changed of the
// estimate (the dry-run count when the walk began, which rows changing
// meanwhile make approximate), the cursor, the rate and the time left.
func progressLine(verb, t string, p registry.BatchProgress, estimate int64, elapsed time.Duration) string {
	if p.Changed > estimate {
		estimate = p.Changed
	}
	pct := 100.0
	if estimate > 0 {
		pct = 100 * float64(p.Changed) / float64(estimate)
	}
	rate := float64(p.Changed) / max(elapsed.Seconds(), 1e-3)
	left := "done"
	if !p.Done {
		left = "time left unknown"
		if rate > 0 {
			secs := float64(estimate-p.Changed) / rate
			left = "about " + time.Duration(secs*float64(time.Second)).Round(time.Second).String() + " left"
		}
	}
	return fmt.Sprintf("%s %s: batch %d: %d of ~%d rows (%.1f%%), up to id %d, %.0f rows/s, %s",
		verb, t, p.Batches, p.Changed, estimate, pct, p.After, rate, left)
}

// resumeCommand is the geoctl command line that resumes an interrupted
// walk of type t after id after: the same verb, selection and batch size
// (and --timeout when it was given), with --resume. The database comes
// from the same --database-url or environment, not repeated here.
func resumeCommand(cmd *cobra.Command, sel selection, t string, after int64) string {
	args := []string{"geoctl"}
	if f := cmd.Flag("timeout"); f != nil && f.Changed {
		args = append(args, "--timeout", f.Value.String())
	}
	args = append(args, cmd.Name())
	if sel.failed {
		args = append(args, "--failed")
	} else {
		args = append(args, "--all")
	}
	if sel.typ != "" {
		args = append(args, "--type", sel.typ)
	}
	if sel.batch != registry.BatchSizeDefault {
		args = append(args, "--batch", strconv.Itoa(sel.batch))
	}
	return strings.Join(append(args, "--resume", t+":"+strconv.FormatInt(after, 10)), " ")
}

func (a *app) resyncCmd() *cobra.Command {
	return a.selectionCmd("resync", "Make rows pending so they are downloaded again",
		`resync makes the selected rows pending again with a new generation: every
secondary process sharing the tracking database downloads them again at its
next poll. --failed selects failed rows, --all every row not already
pending, --id the listed records (untracked ids are ignored).

--all and --failed walk each type's rows in id order, --batch rows per
transaction (--timeout bounds each batch, not the whole walk), and print
a progress line per batch on stderr. A row that fails after the walk
passed its id is not resynced by this run. An interrupted run (Ctrl-C, a
batch past --timeout) keeps the batches it committed and prints the
command that resumes after them (--resume TYPE:ID).`,
		func(s *registry.Store) adminOps {
			return adminOps{verb: "resync", change: s.Resync, count: s.CountResync, changeAll: s.ResyncBatches,
				countAll: s.CountResyncBatches, effect: "marked pending (resync)", wouldEffect: "be marked pending (resync)"}
		})
}

func (a *app) reverifyCmd() *cobra.Command {
	return a.selectionCmd("reverify", "Make synced rows due for verification now",
		`reverify makes the selected synced rows' verification pending and due now:
the secondary reads and checksums its copies again and compares them with
the primary's checksums; a mismatch sends the row back to sync. --failed
selects rows whose verification failed, --all every synced row, --id the
listed records. Rows not synced are verified by their next sync anyway.

--all and --failed walk each type's rows in id order, in batches, with a
progress line per batch and --resume, as resync does.`,
		func(s *registry.Store) adminOps {
			return adminOps{verb: "reverify", change: s.Reverify, count: s.CountReverify, changeAll: s.ReverifyBatches,
				countAll: s.CountReverifyBatches, effect: "due for verification", wouldEffect: "become due for verification"}
		})
}

func (a *app) pauseCmd(verb string) *cobra.Command {
	var typ string
	var force bool
	short := "Stop syncing a type (persisted; running syncs finish)"
	if verb == "resume" {
		short = "Resume syncing a paused type"
	}
	cmd := &cobra.Command{
		Use: verb + " --type TYPE", Short: short, Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if typ == "" {
				return usagef("%s needs --type (the replicable type)", verb)
			}
			store, err := a.tracking(cmd.Context())
			if err != nil {
				return err
			}
			ctx, cancel := a.opCtx(cmd.Context())
			defer cancel()
			if !force {
				known, err := store.Types(ctx)
				if err != nil {
					return err
				}
				if !slices.Contains(known, typ) {
					return fmt.Errorf("%w; pass --force to %s a type that has no rows yet", unknownType(typ, known), verb)
				}
			}
			if verb == "pause" {
				err = store.Pause(ctx, typ)
			} else {
				err = store.Resume(ctx, typ)
			}
			if err != nil {
				return err
			}
			if verb == "pause" {
				fmt.Fprintf(a.out, "%s: paused: no new syncs start until `geoctl resume --type %s`\n", typ, typ)
			} else {
				fmt.Fprintf(a.out, "%s: resumed\n", typ)
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&typ, "type", "", "the replicable type")
	cmd.Flags().BoolVar(&force, "force", false, "accept a type the tracking database does not know yet")
	return cmd
}

func (a *app) failuresCmd() *cobra.Command {
	var (
		typ, after, output string
		limit              int
	)
	cmd := &cobra.Command{
		Use:   "failures",
		Short: "List rows whose sync or verification failed, with the reasons (paginated)",
		Long: `failures lists rows whose sync failed (state failed) or whose verification
failed, ordered by type and id, --limit at a time. When a page is full,
the last line gives the --after value of the next page.`,
		Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if limit <= 0 || limit > 10000 {
				return usagef("--limit %d: want 1 to 10000", limit)
			}
			if output != "table" && output != "json" {
				return usagef("-o %q: want table or json", output)
			}
			q := registry.FailedQuery{Replicable: typ, Limit: limit}
			if after != "" {
				k, err := parseAfter(after, typ)
				if err != nil {
					return err
				}
				q.After = k
			}
			store, err := a.tracking(cmd.Context())
			if err != nil {
				return err
			}
			ctx, cancel := a.opCtx(cmd.Context())
			defer cancel()
			rows, err := store.Failed(ctx, q)
			if err != nil {
				return err
			}
			next := ""
			if len(rows) == limit {
				last := rows[len(rows)-1]
				next = last.Replicable + ":" + strconv.FormatInt(last.ModelID, 10)
			}
			if output == "json" {
				return writeFailuresJSON(a, rows, next)
			}
			if len(rows) == 0 {
				fmt.Fprintln(a.out, "no failed rows")
				return nil
			}
			tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TYPE\tID\tSTATE\tVERIFICATION\tRETRIES\tNEXT RETRY\tREASON")
			for _, r := range rows {
				reason, retries, nextRetry := r.LastSyncFailure, r.RetryCount, r.RetryAt
				if r.State != registry.StateFailed {
					reason, retries, nextRetry = r.VerificationFailure, r.VerificationRetryCount, r.VerificationRetryAt
				}
				if r.MissingOnPrimary {
					reason = "[missing on primary] " + reason
				}
				if r.ChecksumMismatch {
					reason = "[checksum mismatch] " + reason
				}
				nr := "-"
				if !nextRetry.IsZero() {
					nr = nextRetry.UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%s\t%s\n", r.Replicable, r.ModelID, r.State, r.VerificationState,
					retries, nr, oneLine(reason))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if next != "" {
				fmt.Fprintf(a.out, "more: geoctl failures --after %s --limit %d\n", next, limit)
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&typ, "type", "", "only this replicable type")
	cmd.Flags().StringVar(&after, "after", "", "start after this row: TYPE:ID (or ID with --type), as printed at the end of the previous page")
	cmd.Flags().IntVar(&limit, "limit", 50, "rows per page (1 to 10000)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

// parseAfter reads --after: "TYPE:ID", or "ID" when --type is set.
func parseAfter(s, typ string) (registry.Key, error) { return parseCursor("--after", s, typ) }

// parseCursor reads a row cursor given as flag: "TYPE:ID", or "ID" when
// --type is set.
func parseCursor(flag, s, typ string) (registry.Key, error) {
	name, idText, found := strings.Cut(s, ":")
	if !found {
		if typ == "" {
			return registry.Key{}, usagef("%s %q: want TYPE:ID (or ID with --type)", flag, s)
		}
		name, idText = typ, s
	}
	id, err := strconv.ParseInt(idText, 10, 64)
	if err != nil || strategy.ValidateName(name) != nil {
		// A type that is not a valid name (":" from --type) would print a
		// next-page cursor that does not parse back.
		return registry.Key{}, usagef("%s %q: want TYPE:ID with a valid type name and a numeric ID", flag, s)
	}
	return registry.Key{Replicable: name, ModelID: id}, nil
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// failureJSON is one row of `failures -o json`.
type failureJSON struct {
	Replicable          string    `json:"replicable"`
	ModelID             int64     `json:"model_id"`
	State               string    `json:"state"`
	RetryCount          int       `json:"retry_count"`
	RetryAt             time.Time `json:"retry_at,omitzero"`
	LastSyncFailure     string    `json:"last_sync_failure,omitempty"`
	MissingOnPrimary    bool      `json:"missing_on_primary"`
	VerificationState   string    `json:"verification_state"`
	VerificationFailure string    `json:"verification_failure,omitempty"`
	ChecksumMismatch    bool      `json:"checksum_mismatch"`
	UpdatedAt           time.Time `json:"updated_at"`
}

func writeFailuresJSON(a *app, rows []registry.Row, next string) error {
	out := struct {
		Rows []failureJSON `json:"rows"`
		Next string        `json:"next_after,omitempty"`
	}{Rows: make([]failureJSON, len(rows)), Next: next}
	for i, r := range rows {
		out.Rows[i] = failureJSON{
			Replicable: r.Replicable, ModelID: r.ModelID, State: r.State.String(), RetryCount: r.RetryCount,
			RetryAt: r.RetryAt, LastSyncFailure: r.LastSyncFailure, MissingOnPrimary: r.MissingOnPrimary,
			VerificationState: r.VerificationState.String(), VerificationFailure: r.VerificationFailure,
			ChecksumMismatch: r.ChecksumMismatch, UpdatedAt: r.UpdatedAt,
		}
	}
	enc := json.NewEncoder(a.out)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
