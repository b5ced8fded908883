package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/internal/testtype"
	"github.com/geoframework/geo/replicator"
)

// runRead: reads on a secondary (issue 27), each against its limit
// measured in the same run:
//
//   - fallback: Secondary.Open of n records the secondary has no row for
//     (created before it ever ran), read to the end: the read-through to
//     the primary (two lookups, a pending row made, a signed transfer with
//     the checksum checked). Limit: a raw GET of the same files from a
//     plain file server on loopback, hashed with SHA-256.
//   - local hit: Open of the same records once synced. Limit: os.Open +
//     read of the same files.
//   - WaitSynced: records created at -rate for -duration; for each, the
//     time from its creating transaction's commit to WaitSynced(its
//     Position) returning (the Position is looked up after the commit, so
//     that lookup counts in the figure). Limit: the same records' commit
//     to synced (last_synced_at) latency: a wait cannot end before the
//     sync it waits for.
//
// value is WaitSynced's p99 (ms), limit the commit-to-synced p99.
func runRead(ctx context.Context, b *bench, res *result) error {
	app, err := b.app()
	if err != nil {
		return err
	}
	size := b.o.size
	if size == 0 {
		size = 4 << 10
	}
	n := b.o.n
	res.add("load average at start", "%s", loadAvg())
	b.logf("read: creating %d records before the secondary runs", n)
	rng := rand.NewChaCha8([32]byte{7})
	data := make([]byte, size)
	ids := make([]int64, 0, n)
	for range n {
		_, _ = rng.Read(data)
		id, err := app.Create(ctx, 0, data)
		if err != nil {
			return err
		}
		ids = append(ids, id)
	}

	obs := newCounter(n)
	cfg := b.secondaryConfig(obs)
	cfg.NotifyURL = b.primaryURL
	sec, err := replicator.NewSecondary(cfg)
	if err != nil {
		return err
	}
	b.logf("read: %d reads through the primary", n)
	readOne := func(id int64, want replicator.ReadSource) error {
		rd, err := sec.Open(ctx, typeName, id, nil)
		if err != nil {
			return err
		}
		defer rd.Close()
		if rd.Source != want {
			return fmt.Errorf("read of %d from %s, want %s", id, rd.Source, want)
		}
		_, err = io.Copy(io.Discard, rd)
		return err
	}
	fallback, err := timeEach(ids, func(id int64) error { return readOne(id, replicator.ReadPrimary) })
	if err != nil {
		return fmt.Errorf("fallback reads: %w", err)
	}
	rawGet, err := rawGets(ctx, b, ids)
	if err != nil {
		return fmt.Errorf("raw GETs: %w", err)
	}

	// The read-throughs made the rows pending: Run syncs them.
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sec.Run(runCtx) }()
	var stopOnce sync.Once
	var runErr error
	stop := func() error {
		stopOnce.Do(func() {
			cancel()
			runErr = <-done
		})
		return runErr
	}
	defer func() { _ = stop() }()
	b.logf("read: waiting for the %d records to sync", n)
	if _, err := obs.wait(ctx, 2*time.Minute); err != nil {
		return err
	}
	b.logf("read: %d local reads", n)
	local, err := timeEach(ids, func(id int64) error { return readOne(id, replicator.ReadLocal) })
	if err != nil {
		return fmt.Errorf("local reads: %w", err)
	}
	keys := make(map[int64]string, len(ids))
	for _, id := range ids {
		if keys[id], err = b.typ.BlobKey(ctx, id); err != nil {
			return err
		}
	}
	rawFile, err := timeEach(ids, func(id int64) error {
		f, err := os.Open(filepath.Join(b.secondaryRoot, filepath.FromSlash(keys[id])))
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(io.Discard, f)
		return err
	})
	if err != nil {
		return fmt.Errorf("raw file reads: %w", err)
	}

	waits, synced, dropped, err := waitAtRate(ctx, b, app, sec, size)
	if err != nil {
		return err
	}
	res.add("load average at end", "%s", loadAvg())

	res.add("fallback read p50 / p99", "%.2f / %.2f ms  (raw GET + SHA-256 %.2f / %.2f ms; %d reads of %d bytes)",
		pct(fallback, 0.5), pct(fallback, 0.99), pct(rawGet, 0.5), pct(rawGet, 0.99), len(fallback), size)
	res.add("local hit p50 / p99", "%.3f / %.3f ms  (raw open + read %.3f / %.3f ms)",
		pct(local, 0.5), pct(local, 0.99), pct(rawFile, 0.5), pct(rawFile, 0.99))
	res.add("WaitSynced p50 / p99", "%.1f / %.1f ms after commit  (commit to synced %.1f / %.1f ms; %d writes at %d/s, %d ticks dropped)",
		pct(waits, 0.5), pct(waits, 0.99), pct(synced, 0.5), pct(synced, 0.99), len(waits), b.o.rate, dropped)
	res.value, res.unit, res.limit, res.lowerIsBetter = pct(waits, 0.99), "ms", pct(synced, 0.99), true
	return stop()
}

// waitAtRate creates records at -rate for -duration; each record is then
// awaited with WaitSynced beside its creator. It returns the commit-to-returned
// and the commit-to-synced latencies (ms) and the ticks the creators could
// not take.
func waitAtRate(ctx context.Context, b *bench, app *testtype.App, sec *replicator.Secondary, size int64) (waits, synced []float64, dropped int, err error) {
	total := int(float64(b.o.rate) * b.o.duration.Seconds())
	b.logf("read: creating %d records at %d/s, each awaited with WaitSynced", total, b.o.rate)
	var mu sync.Mutex
	committed := make(map[int64]time.Time, total)
	var firstErr error
	ticks := make(chan struct{}, 64)
	var wg, waiting sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			rng := rand.NewChaCha8([32]byte{byte(w), 27})
			data := make([]byte, size)
			for range ticks {
				_, _ = rng.Read(data)
				id, err := app.Create(ctx, 0, data)
				at := time.Now()
				var p events.Position
				if err == nil {
					p, err = lastPosition(ctx, b.primaryDB, id)
				}
				if err != nil {
					mu.Lock()
					firstErr = cmp.Or(firstErr, err)
					mu.Unlock()
					continue
				}
				// The wait runs beside the creator, which takes the next
				// tick: the rate holds however long waits take.
				waiting.Go(func() {
					wctx, cancel := context.WithTimeout(ctx, time.Minute)
					err := sec.WaitSynced(wctx, p)
					cancel()
					d := time.Since(at)
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						firstErr = cmp.Or(firstErr, err)
						return
					}
					committed[id] = at
					waits = append(waits, float64(d.Microseconds())/1000)
				})
			}
		})
	}
	interval := time.Second / time.Duration(b.o.rate)
	start := time.Now()
	for i := 0; i < total && ctx.Err() == nil; i++ {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		select {
		case ticks <- struct{}{}:
		default:
			dropped++
		}
	}
	close(ticks)
	wg.Wait()
	waiting.Wait()
	if firstErr != nil {
		return nil, nil, 0, firstErr
	}
	var rows []struct {
		ID       int64     `db:"model_id"`
		SyncedAt time.Time `db:"last_synced_at"`
	}
	if err := b.trackingDB.SelectContext(ctx, &rows, `SELECT model_id, last_synced_at FROM geo_registry WHERE replicable = $1 AND state = 2`, typeName); err != nil {
		return nil, nil, 0, err
	}
	for _, r := range rows {
		if c, ok := committed[r.ID]; ok {
			synced = append(synced, float64(r.SyncedAt.Sub(c).Microseconds())/1000)
		}
	}
	if len(synced) != len(committed) {
		return nil, nil, 0, fmt.Errorf("%d of %d awaited records synced when WaitSynced returned", len(synced), len(committed))
	}
	slices.Sort(waits)
	slices.Sort(synced)
	return waits, synced, dropped, nil
}

// lastPosition is the Position of record id's latest event.
func lastPosition(ctx context.Context, db *sqlx.DB, id int64) (events.Position, error) {
	var xid string
	var p events.Position
	if err := db.QueryRowContext(ctx, `SELECT xid::text, id FROM geo_events WHERE replicable = $1 AND model_id = $2 ORDER BY xid DESC, id DESC LIMIT 1`,
		typeName, id).Scan(&xid, &p.ID); err != nil {
		return p, err
	}
	x, err := strconv.ParseUint(xid, 10, 64)
	p.XID = x
	return p, err
}

// rawGets GETs each record's file from a plain file server over the
// primary's root on loopback and hashes it; it returns the latencies.
func rawGets(ctx context.Context, b *bench, ids []int64) ([]float64, error) {
	base, srv, err := serve(http.FileServer(http.Dir(b.primaryRoot)))
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	client := rawClient(1)
	defer client.CloseIdleConnections()
	keys := make(map[int64]string, len(ids))
	for _, id := range ids {
		if keys[id], err = b.typ.BlobKey(ctx, id); err != nil {
			return nil, err
		}
	}
	return timeEach(ids, func(id int64) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/"+keys[id], nil)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("raw GET %s: %s", keys[id], resp.Status)
		}
		_, err = io.Copy(sha256.New(), resp.Body)
		return err
	})
}

// timeEach runs f for each id in turn and returns the sorted latencies
// in milliseconds.
func timeEach(ids []int64, f func(int64) error) ([]float64, error) {
	out := make([]float64, 0, len(ids))
	for _, id := range ids {
		start := time.Now()
		if err := f(id); err != nil {
			return nil, err
		}
		out = append(out, float64(time.Since(start).Nanoseconds())/1e6)
	}
	slices.Sort(out)
	return out, nil
}

// pct is the p-quantile of sorted values (0 for none).
func pct(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}
