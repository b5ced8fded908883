package replicator

import (
	"context"
	"os"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/geoframework/geo/registry"
)

// Heartbeat defaults and bounds (SecondaryConfig.HeartbeatInterval).
const (
	// HeartbeatIntervalDefault is SecondaryConfig.HeartbeatInterval's
	// default: a process that stops beating is reported dead after
	// registry.ProcessDeadAfterBeats of them (30s).
	HeartbeatIntervalDefault = 10 * time.Second
	// HeartbeatIntervalMin is the smallest HeartbeatInterval accepted.
	HeartbeatIntervalMin = 100 * time.Millisecond
	// DeadProcessRetention is how long the heartbeat row of a dead process
	// (one that stopped without a graceful shutdown) is kept, and shown as
	// dead, before a live process deletes it.
	DeadProcessRetention = 24 * time.Hour
)

// Roles: the singleton loops a process may hold, as its heartbeat row
// and ProcessStatus.Roles name them.
const (
	// RoleConsumer: the event consumer.
	RoleConsumer = "consumer"
	// RoleConsistency: the consistency (backfill) pass.
	RoleConsistency = "consistency"
	// RoleExistence: the existence scan.
	RoleExistence = "existence"
)

// heartbeat writes this process's row of geo_processes every
// HeartbeatInterval while Run runs, and removes it when Run ends.
type heartbeat struct {
	s       *Secondary
	host    string
	pid     int
	version string

	started     time.Time
	consistency atomic.Bool // the consistency pass's lock is held
	existence   atomic.Bool // the existence scan's lock is held
	failing     bool        // the last beat failed (logged once per streak)
}

func newHeartbeat(s *Secondary) *heartbeat {
	host, _ := os.Hostname()
	return &heartbeat{s: s, host: host, pid: os.Getpid(), version: buildVersion()}
}

// holding returns fn wrapped so that flag is set while fn runs (while
// pglock.Run holds the lock fn runs under).
func holding(flag *atomic.Bool, fn func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		flag.Store(true)
		defer flag.Store(false)
		return fn(ctx)
	}
}

// process is this process's row as of now.
func (h *heartbeat) process() registry.Process {
	s := h.s
	p := registry.Process{
		Owner: s.cfg.Owner, Host: h.host, PID: h.pid, Version: h.version, StartedAt: h.started,
		Interval: s.cfg.HeartbeatInterval, Types: s.cfg.Strategies.Names(), Roles: []string{},
		InFlight: s.sync.Running(), Backfill: map[string]registry.ProcessBackfill{},
	}
	if cs := s.consumer.Stats(); cs.Active {
		p.Roles = append(p.Roles, RoleConsumer)
		p.EventLag = &registry.ProcessEventLag{Seconds: cs.LagSeconds, Events: cs.LagEvents, FellBehind: cs.FellBehind}
	}
	if h.consistency.Load() {
		p.Roles = append(p.Roles, RoleConsistency)
	}
	if h.existence.Load() {
		p.Roles = append(p.Roles, RoleExistence)
	}
	for name, pr := range s.Progress() {
		p.Backfill[name] = registry.ProcessBackfill{
			Running: pr.Running, PassStarted: pr.PassStarted, Done: pr.Done, Total: pr.Total,
			Inserted: pr.Inserted, Removed: pr.Removed, Rate: pr.Rate, ETASeconds: pr.ETA.Seconds(),
			LastFinished: pr.LastFinished, Passes: pr.Passes,
		}
	}
	return p
}

// beat writes the row once, pruning dead rows older than
// DeadProcessRetention.
func (h *heartbeat) beat(ctx context.Context) {
	pruned, err := h.s.store.Heartbeat(ctx, h.process(), DeadProcessRetention)
	log := h.s.cfg.Logger
	switch {
	case err != nil && ctx.Err() == nil:
		if !h.failing {
			log.Warn("heartbeat failed: other readers see this process as dead if it keeps failing", zap.Error(err))
		}
		h.failing = true
	case err == nil:
		if h.failing {
			log.Info("heartbeat written again")
		}
		h.failing = false
		if pruned > 0 {
			log.Info("removed the heartbeat rows of processes dead for longer than the retention",
				zap.Int64("rows", pruned), zap.Duration("retention", DeadProcessRetention))
		}
	}
}

// run beats at once and then every HeartbeatInterval until ctx ends.
func (h *heartbeat) run(ctx context.Context) {
	h.beat(ctx)
	t := time.NewTicker(h.s.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			h.beat(ctx)
		}
	}
}

// remove deletes the row after a graceful shutdown; if that fails, the
// row ages into a dead one.
func (h *heartbeat) remove() {
	ctx, cancel := context.WithTimeout(context.Background(), heartbeatRemoveTimeout)
	defer cancel()
	if err := h.s.store.RemoveProcess(ctx, h.s.cfg.Owner); err != nil {
		h.s.cfg.Logger.Warn("removing this process's heartbeat row at shutdown failed: it shows as dead until pruned", zap.Error(err))
	}
}

// geoModule is this module's path, looked up in the build information.
const geoModule = "github.com/geoframework/geo"

// buildVersion names the build: geo's module version (and VCS revision
// when geo is the main module) and the Go version, e.g. "geo v1.2.0
// go1.24.2"; "geo unknown" without build information.
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "geo unknown"
	}
	v := ""
	if bi.Main.Path == geoModule {
		v = bi.Main.Version
		for _, st := range bi.Settings {
			if st.Key == "vcs.revision" && len(st.Value) >= 12 {
				v += " " + st.Value[:12]
			}
		}
	}
	for _, d := range bi.Deps {
		if d.Path == geoModule {
			v = d.Version
		}
	}
	if v == "" {
		v = "unknown"
	}
	return strings.TrimSpace("geo " + v + " " + bi.GoVersion)
}
