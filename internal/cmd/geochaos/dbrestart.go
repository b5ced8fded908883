package main

import (
	"context"
	"fmt"
	"time"

	"github.com/geoframework/geo/blob/dirblob"
	"github.com/geoframework/geo/geotest/pgtest"
)

// runDBRestart: the tracking database and the primary database live on
// two PostgreSQL servers. While the secondary syncs and the primary keeps
// changing data, the tracking server crashes and restarts (pg_ctl restart
// -m immediate: every connection is cut, in-flight transactions roll back,
// and the claims and lease renewals committed asynchronously but not yet
// written are lost: the secondary still believes it holds those rows),
// then the primary's server is restarted (-m fast). The secondary is never
// restarted: it must ride through both (claims, settles, lease renewals
// and the event cursor fail for a while and are retried; settles of lost
// claims are refused and their rows claimed again) and converge to an
// exact copy.
func runDBRestart(ctx context.Context, o options) error {
	const name = "db-restart"
	n := o.size(o.n, 300, 3000)
	seedN := n * 4 / 5
	e, w, err := seededEnv(ctx, o, name, envConfig{separateClusters: true}, seedN, false)
	if err != nil {
		return err
	}
	defer e.close()
	storage, err := dirblob.Open(e.SecondaryRoot)
	if err != nil {
		return err
	}
	defer storage.Close()
	sec, err := startSecondary(e.secondaryConfig(storage))
	if err != nil {
		return err
	}
	defer sec.stop()

	stopChurn := make(chan struct{})
	churnErr := make(chan error, 1)
	go func() { churnErr <- w.churn(ctx, stopChurn, 3*time.Millisecond, false) }()

	restart := func(what string, c *pgtest.Cluster, crash bool, share float64) error {
		// Mid-run: wait until share of the rows are synced (at most 60s),
		// counting the seeded records' rows even before the first
		// consistency pass has created them.
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			if s, t := e.progress(ctx); t > 0 && float64(s) >= share*float64(max(t, int64(seedN))) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		synced, total := e.progress(ctx)
		start := time.Now()
		how, do := "fast", c.Restart
		if crash {
			how, do = "immediate", c.Crash
		}
		if err := do(ctx); err != nil {
			return fmt.Errorf("restart the %s server: %w", what, err)
		}
		o.logf(name, "restarted the %s server (pg_ctl restart -m %s) in %.1fs at %d/%d rows synced", what, how, time.Since(start).Seconds(), synced, total)
		return nil
	}
	if err := restart("tracking database's", e.trackingCluster, true, 0.3); err != nil {
		return err
	}
	if err := restart("primary database's", e.primaryCluster, false, 0.6); err != nil {
		return err
	}
	// Let the application finish creating the rest while the secondary
	// recovers.
	for !w.createdAtLeast(n-seedN) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	close(stopChurn)
	if err := <-churnErr; err != nil {
		return err
	}
	o.logf(name, "application %s; waiting for convergence (the secondary was not restarted)", w)
	d, took, cerr := e.waitConverged(ctx, o.timeout)
	if cerr != nil {
		summary(o.out, name, d, took)
		return cerr
	}
	if err := sec.stop(); err != nil {
		return fmt.Errorf("secondary: %w", err)
	}
	if d, err = e.compare(ctx); err != nil {
		return err
	}
	return summary(o.out, name, d, took)
}

// progress returns how many registry rows are synced, of how many, or
// -1s when the tracking database does not answer.
func (e *env) progress(ctx context.Context) (synced, total int64) {
	if err := e.TrackingDB.QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE state = 2), count(*) FROM geo_registry`).Scan(&synced, &total); err != nil {
		return -1, -1
	}
	return synced, total
}
