package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"

	"github.com/geoframework/geo/internal/testtype"
)

// eventLagTarget is the p99 commit-to-synced target in milliseconds.
const eventLagTarget = 500

// warmDrainMax bounds how long the warm-up goes on, after -warmup, waiting
// for the secondary to catch up with it.
const warmDrainMax = 10 * time.Second

// runEventLag: records created through the application (row, bytes and
// "created" event in one transaction) at a steady rate while the secondary
// runs; value = p99 of the time from each creating transaction's commit to
// its registry row's settle (last_synced_at, taken in the settle
// transaction, which then publishes the bytes and commits).
//
// The secondary runs with geo's defaults plus NotifyURL (the primary's
// database, for LISTEN: a wake-up hint; polling every 250 ms stays the
// correctness path). Records created during the first -warmup at the same
// rate (while connection pools fill, statements get prepared and caches
// warm) are synced like the others but not counted: the figure is the
// steady state.
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
	for !sec.sec.EventStats().Active {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	// The first consistency pass runs at start; let it finish, so that
	// every record below reaches the secondary through its event (a row
	// the pass inserted for a record just created could be synced, then
	// marked pending again by the record's event and synced twice).
	if _, err := waitPasses(ctx, sec.sec, 1, time.Minute); err != nil {
		return err
	}
	warm := int(float64(b.o.rate) * b.o.warmup.Seconds())
	total := int(float64(b.o.rate) * b.o.duration.Seconds())
	b.logf("event-lag: creating %d records at %d/s for %v after a %v warm-up", total, b.o.rate, b.o.duration, b.o.warmup)

	var mu sync.Mutex
	committed := make(map[int64]time.Time, total)
	warmed := make(map[int64]bool, warm)
	measuring := false
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
				switch {
				case err != nil:
					createErr = err
				case measuring:
					committed[id] = at
				default:
					warmed[id] = true
				}
				mu.Unlock()
			}
		})
	}
	var lagging int
	interval := time.Second / time.Duration(b.o.rate)
	// The warm-up lasts -warmup, then goes on at the same rate until the
	// secondary has caught up with it (at most warmDrainMax more): no more
	// than a tenth of a second's records (or 10) of the warm-up left
	// unsynced. A secondary just started syncs slowly at first
	// (connections, prepared statements, caches), and the backlog it
	// builds then would otherwise be measured as the steady state's lag.
	warmStart := time.Now()
	var drained time.Duration
	backlog := 0
	nextCheck := warmStart.Add(b.o.warmup)
	for i := 0; ctx.Err() == nil; i++ {
		if d := time.Until(warmStart.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		if i >= warm && !time.Now().Before(nextCheck) {
			mu.Lock()
			ids := make([]int64, 0, len(warmed))
			for id := range warmed {
				ids = append(ids, id)
			}
			mu.Unlock()
			var synced int
			if err := b.trackingDB.GetContext(ctx, &synced, `SELECT count(*) FROM geo_registry
WHERE replicable = $1 AND state = 2 AND model_id = ANY($2)`, typeName, pq.Array(ids)); err != nil {
				close(ticks) // the creators stop
				wg.Wait()
				return fmt.Errorf("warm-up: %w", err)
			}
			backlog = len(ids) - synced
			drained = time.Since(warmStart)
			if backlog <= max(10, b.o.rate/10) || drained >= b.o.warmup+warmDrainMax {
				break
			}
			nextCheck = time.Now().Add(100 * time.Millisecond)
		}
		select {
		case ticks <- struct{}{}:
		default:
		}
	}
	err = profile(b.o, func() error {
		// Ticks sent in the warm-up may still be in a creator's hands:
		// those count as warm-up (measuring is read under mu), a small
		// overlap at the boundary.
		mu.Lock()
		measuring = true
		mu.Unlock()
		start := time.Now()
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
		res.add("warm-up", "%d records in %.1fs before, not counted (%d of them not yet synced when the measure began)",
			len(warmed), drained.Seconds(), backlog)
		res.add("created", "%d records of %d bytes in %.1fs (%.0f/s; target rate %d/s)",
			len(committed), size, createdIn.Seconds(), float64(len(committed))/createdIn.Seconds(), b.o.rate)
		if createErr != nil {
			return fmt.Errorf("create: %w", createErr)
		}
		// Wait for the tail to sync.
		// The registry decides: a record synced twice (an event after a
		// claim) counts twice in the observer.
		want := int64(len(committed) + len(warmed))
		deadline := time.Now().Add(2 * time.Minute)
		for {
			if obs.synced.Load() >= want {
				var synced int64
				if err := b.trackingDB.GetContext(ctx, &synced,
					`SELECT count(*) FROM geo_registry WHERE replicable = $1 AND state = 2`, typeName); err != nil {
					return err
				}
				if synced >= want {
					break
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%d of %d records synced 2 minutes after the last create", obs.synced.Load(), want)
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
	if len(rows) != len(committed)+len(warmed) {
		return fmt.Errorf("%d rows synced, want %d", len(rows), len(committed)+len(warmed))
	}
	lags := make([]float64, 0, len(rows))
	for _, r := range rows {
		c, ok := committed[r.ID]
		if !ok {
			if warmed[r.ID] {
				continue
			}
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

	// The machine's own limit for this scenario: how fast the application
	// alone creates records (bytes durably written, row and event in one
	// transaction) with the secondary stopped, as many creators, for 3 s.
	// On one machine the application and both sites share the cores.
	alone, err := appAlone(ctx, app, size, 3*time.Second)
	if err != nil {
		return fmt.Errorf("application alone: %w", err)
	}
	res.add("application alone", "%.0f creates/s with the secondary stopped (32 creators, 3 s): the most this machine creates", alone)
	return nil
}

// appAlone creates records as fast as 32 creators can for d and returns
// the rate.
func appAlone(ctx context.Context, app *testtype.App, size int64, d time.Duration) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var n atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	start := time.Now()
	for w := range 32 {
		wg.Go(func() {
			rng := rand.NewChaCha8([32]byte{byte(w), 3})
			data := make([]byte, size)
			for ctx.Err() == nil {
				_, _ = rng.Read(data)
				if _, err := app.Create(ctx, 0, data); err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}
