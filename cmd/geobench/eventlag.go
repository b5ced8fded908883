package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// eventLagTarget is the p99 commit-to-synced target in milliseconds.
const eventLagTarget = 500

// runEventLag: records created through the application (row, bytes and
// "created" event in one transaction) at a steady rate while the secondary
// runs; value = p99 of the time from each creating transaction's commit to
// its registry row's settle (last_synced_at, taken in the settle
// transaction, which then publishes the bytes and commits).
//
// The secondary runs with geo's defaults plus NotifyURL (the primary's
// database, for LISTEN: a wake-up hint; polling every 250 ms stays the
// correctness path).
func runEventLag(ctx context.Context, b *bench, res *result) error {
	app, err := b.app()
	if err != nil {
		return err
	}
	size := b.o.size
	if size == 0 {
		size = 4 << 10
	}
	obs := newCounter(-1)
	cfg := b.secondaryConfig(obs)
	cfg.NotifyURL = b.primaryURL
	sec, err := b.start(cfg)
	if err != nil {
		return err
	}
	for !sec.sec.Consumer().Stats().Active {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	total := int(float64(b.o.rate) * b.o.duration.Seconds())
	b.logf("event-lag: creating %d records at %d/s for %v", total, b.o.rate, b.o.duration)

	var mu sync.Mutex
	committed := make(map[int64]time.Time, total)
	var createErr error
	ticks := make(chan struct{}, 64)
	var wg sync.WaitGroup
	// Enough creators that a slow commit (file fsync + WAL flush) never
	// holds the rate back.
	for w := range 32 {
		wg.Go(func() {
			rng := rand.NewChaCha8([32]byte{byte(w), 2})
			data := make([]byte, size)
			for range ticks {
				_, _ = rng.Read(data)
				id, err := app.Create(ctx, 0, data)
				at := time.Now()
				mu.Lock()
				if err != nil {
					createErr = err
				} else {
					committed[id] = at
				}
				mu.Unlock()
			}
		})
	}
	var lagging int
	err = profile(b.o, func() error {
		start := time.Now()
		interval := time.Second / time.Duration(b.o.rate)
		for i := range total {
			due := start.Add(time.Duration(i) * interval)
			if d := time.Until(due); d > 0 {
				time.Sleep(d)
			}
			select {
			case ticks <- struct{}{}:
			default:
				lagging++
			}
			if ctx.Err() != nil {
				break
			}
		}
		close(ticks)
		wg.Wait()
		createdIn := time.Since(start)
		res.add("created", "%d records of %d bytes in %.1fs (%.0f/s; target rate %d/s)",
			len(committed), size, createdIn.Seconds(), float64(len(committed))/createdIn.Seconds(), b.o.rate)
		if createErr != nil {
			return fmt.Errorf("create: %w", createErr)
		}
		// Wait for the tail to sync.
		deadline := time.Now().Add(2 * time.Minute)
		for obs.synced.Load() < int64(len(committed)) {
			if time.Now().After(deadline) {
				return fmt.Errorf("%d of %d records synced 2 minutes after the last create", obs.synced.Load(), len(committed))
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(10 * time.Millisecond):
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := sec.stop(); err != nil {
		return err
	}

	var rows []struct {
		ID       int64     `db:"model_id"`
		SyncedAt time.Time `db:"last_synced_at"`
	}
	if err := b.trackingDB.SelectContext(ctx, &rows, `
SELECT model_id, last_synced_at FROM geo_registry WHERE replicable = $1 AND state = 2`, typeName); err != nil {
		return err
	}
	if len(rows) != len(committed) {
		return fmt.Errorf("%d rows synced, want %d", len(rows), len(committed))
	}
	lags := make([]float64, 0, len(rows))
	for _, r := range rows {
		c, ok := committed[r.ID]
		if !ok {
			return fmt.Errorf("synced row %d was never created", r.ID)
		}
		lags = append(lags, float64(r.SyncedAt.Sub(c).Microseconds())/1000)
	}
	slices.Sort(lags)
	pct := func(p float64) float64 { return lags[min(len(lags)-1, int(p*float64(len(lags))))] }
	p99 := pct(0.99)
	res.value, res.unit, res.limit, res.lowerIsBetter = p99, "ms", eventLagTarget, true
	res.add("commit to synced p50", "%.1f ms", pct(0.50))
	res.add("commit to synced p90", "%.1f ms", pct(0.90))
	res.add("commit to synced p99", "%.1f ms  (target <= %d ms)", p99, eventLagTarget)
	res.add("commit to synced max", "%.1f ms", lags[len(lags)-1])
	res.add("creator ticks dropped", "%d (creators busy: the rate was not held)", lagging)
	res.add("failed sync attempts", "%d", obs.failed.Load())
	return nil
}
