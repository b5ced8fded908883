package ui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/geoframework/geo/replicator"
)

// Readiness checks, as /readyz lists them and /readyz/{check} names them.
const (
	// CheckTracking: the tracking database answers.
	CheckTracking = "tracking-database"
	// CheckPrimary: the primary's database (or its standby) answers.
	CheckPrimary = "primary-database"
	// CheckConsumer: a live secondary process holds the event consumer
	// (its heartbeat row says so).
	CheckConsumer = "consumer"
	// CheckEventLag: the event lag is known and at most
	// Config.ReadyMaxEventLag.
	CheckEventLag = "event-lag"
)

// check is one named readiness check.
type check struct {
	name string
	run  func(ctx context.Context) error
}

// readyChecks returns the checks of this handler's configuration: the
// databases it has, and on a secondary the consumer and its lag, which
// share one status report.
func (h *Handler) readyChecks() []check {
	var out []check
	if h.cfg.Tracking != nil {
		out = append(out, check{CheckTracking, h.cfg.Tracking.PingContext})
	}
	if h.cfg.Primary != nil {
		out = append(out, check{CheckPrimary, h.cfg.Primary.PingContext})
	}
	if h.cfg.Tracking == nil {
		return out
	}
	var (
		once sync.Once
		st   replicator.Status
		err  error
	)
	status := func(ctx context.Context) (replicator.Status, error) {
		once.Do(func() {
			opts := h.cfg.Status
			opts.TopFailures = -1 // not needed: skip the query
			st, err = replicator.ReadStatus(ctx, h.cfg.Tracking, h.cfg.Types, opts)
		})
		return st, err
	}
	out = append(out,
		check{CheckConsumer, func(ctx context.Context) error {
			st, err := status(ctx)
			if err != nil {
				return fmt.Errorf("no status report: %w", err)
			}
			for _, p := range st.Processes {
				if p.Alive && slices.Contains(p.Roles, replicator.RoleConsumer) {
					return nil
				}
			}
			return fmt.Errorf("no live secondary process holds the event consumer (%d processes alive)", st.ProcessesAlive)
		}},
		check{CheckEventLag, func(ctx context.Context) error {
			st, err := status(ctx)
			if err != nil {
				return fmt.Errorf("no status report: %w", err)
			}
			ev := st.Events
			if !ev.LagKnown {
				return fmt.Errorf("the event lag is unknown (source %s)", ev.Source)
			}
			if lag := time.Duration(ev.LagSeconds * float64(time.Second)); lag > h.cfg.ReadyMaxEventLag {
				return fmt.Errorf("event lag %s (%d events) exceeds %s", dur(lag), ev.LagEvents, dur(h.cfg.ReadyMaxEventLag))
			}
			return nil
		}},
	)
	return out
}

// healthz answers 200 "ok" while the process serves requests: liveness,
// which no database outage should fail (a restart would not fix it).
func (h *Handler) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if _, ok := r.URL.Query()["verbose"]; ok {
		fmt.Fprint(w, "[+]ping ok\nhealthz check passed\n")
		return
	}
	fmt.Fprint(w, "ok")
}

// readyz runs the readiness checks (or the one the path names; those of
// ?exclude=NAME are skipped) concurrently, each bounded by QueryTimeout,
// and answers 200 "ok" when all pass, 503 Service Unavailable listing
// every check otherwise; ?verbose lists them on success too.
func (h *Handler) readyz(w http.ResponseWriter, r *http.Request) {
	checks := h.readyChecks()
	if name := r.PathValue("check"); name != "" {
		i := slices.IndexFunc(checks, func(c check) bool { return c.name == name })
		if i < 0 {
			http.Error(w, "no such readiness check: "+name, http.StatusNotFound)
			return
		}
		checks = checks[i : i+1]
	}
	exclude := r.URL.Query()["exclude"]
	checks = slices.DeleteFunc(checks, func(c check) bool { return slices.Contains(exclude, c.name) })
	ctx, cancel := h.ctx(r)
	defer cancel()
	errs := make([]error, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() { errs[i] = c.run(ctx) })
	}
	wg.Wait()
	var b strings.Builder
	failed := false
	for i, c := range checks {
		if errs[i] != nil {
			failed = true
			fmt.Fprintf(&b, "[-]%s failed: %v\n", c.name, errs[i])
		} else {
			fmt.Fprintf(&b, "[+]%s ok\n", c.name)
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if failed {
		h.log.Warn("ui: readyz failed: " + strings.ReplaceAll(strings.TrimSpace(b.String()), "\n", "; "))
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "%sreadyz check failed\n", b.String())
		return
	}
	if _, ok := r.URL.Query()["verbose"]; ok {
		fmt.Fprintf(w, "%sreadyz check passed\n", b.String())
		return
	}
	fmt.Fprint(w, "ok")
}

// statusJSON answers the status report as `geoctl status -o json` prints
// it (replicator.Status, snake_case).
func (h *Handler) statusJSON(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if h.cfg.Tracking == nil {
		http.Error(w, "no tracking database: the status report is a secondary's", http.StatusNotFound)
		return
	}
	ctx, cancel := h.ctx(r)
	defer cancel()
	st, err := replicator.ReadStatus(ctx, h.cfg.Tracking, h.cfg.Types, h.cfg.Status)
	if err != nil {
		code := http.StatusServiceUnavailable
		if errors.Is(err, context.Canceled) {
			code = http.StatusRequestTimeout
		}
		http.Error(w, "status: "+err.Error(), code)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(st)
}
