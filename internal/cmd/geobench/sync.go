package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lib/pq"

	"github.com/geoframework/geo/internal/regstore"
)

// defaultSyncCapacity is replicator.SecondaryConfig.SyncCapacityPerType's
// default.
const defaultSyncCapacity = 32

// writeBlobs writes items 1..n's bytes (size pseudo-random bytes each)
// into root at their keys, in parallel and without fsync: setup, not
// measured. Reads in the measured phases come from the page cache for geo
// and raw alike. It returns each item's SHA-256 (hex), sums[id-1].
func writeBlobs(ctx context.Context, root string, n int, size int64) (sums []string, err error) {
	sums = make([]string, n)
	for d := range 100 {
		if err := os.MkdirAll(filepath.Join(root, typeTable, fmt.Sprint(d)), 0o755); err != nil {
			return nil, err
		}
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Go(func() {
			rng := rand.NewChaCha8([32]byte{byte(w), 1})
			buf := make([]byte, min(size, 4<<20))
			for {
				id := next.Add(1)
				if id > int64(n) || ctx.Err() != nil {
					return
				}
				f, err := os.Create(filepath.Join(root, filepath.FromSlash(itemKey(id))))
				if err != nil {
					errs <- err
					return
				}
				h := sha256.New()
				for left := size; left > 0; {
					chunk := buf[:min(left, int64(len(buf)))]
					_, _ = rng.Read(chunk)
					h.Write(chunk)
					if _, err := f.Write(chunk); err != nil {
						f.Close()
						errs <- err
						return
					}
					left -= int64(len(chunk))
				}
				if err := f.Close(); err != nil {
					errs <- err
					return
				}
				sums[id-1] = hex.EncodeToString(h.Sum(nil))
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, fmt.Errorf("write blobs: %w", err)
	}
	return sums, ctx.Err()
}

// primaryChecksums records sums (items 1..n, as writeBlobs returns them)
// as the primary's verified checksums: the steady state of a primary
// whose verification engine checksums records as they are written, long
// before a secondary syncs them. Syncs then compare with them (R6) and
// settle verified, and the endpoint serves without hashing first.
func (b *bench) primaryChecksums(ctx context.Context, sums []string, size int64) error {
	ids := make([]int64, len(sums))
	for i := range ids {
		ids[i] = int64(i + 1)
	}
	_, err := b.primaryDB.ExecContext(ctx, `
INSERT INTO geo_checksums (replicable, model_id, state, checksum, size, verified_at)
SELECT $1, k.id, 2, k.sum, $4, now() FROM unnest($2::bigint[], $3::text[]) AS k(id, sum)`,
		typeName, pq.Array(ids), pq.Array(sums), size)
	if err != nil {
		return fmt.Errorf("primary checksums: %w", err)
	}
	// Statistics, as a table in use has them (and as the items table and
	// the registry get): without them the planner found a generic plan of
	// the secondaries' checksum lookup dearer than a custom one and planned
	// every other lookup afresh.
	if _, err := b.primaryDB.ExecContext(ctx, `VACUUM ANALYZE geo_checksums`); err != nil {
		return fmt.Errorf("primary checksums: %w", err)
	}
	return nil
}

// pendingRows creates pending registry rows for items 1..n.
func (b *bench) pendingRows(ctx context.Context, n int) error {
	store, err := regstore.NewStore(b.trackingDB, regstore.Options{})
	if err != nil {
		return err
	}
	ids := make([]int64, 0, 10000)
	for id := int64(1); id <= int64(n); id++ {
		ids = append(ids, id)
		if len(ids) == cap(ids) || id == int64(n) {
			if _, err := store.InsertMissing(ctx, typeName, ids); err != nil {
				return err
			}
			ids = ids[:0]
		}
	}
	_, err = b.trackingDB.ExecContext(ctx, `VACUUM ANALYZE geo_registry`)
	return err
}

// quiesce writes every dirty page out (sync(2)) before a measured phase,
// so neither phase pays for the set-up's unsynced writes (or for the other
// phase's): with ext4's ordered journal, an fsync can wait for unrelated
// dirty data, and the raw loop's figure varied 2x with it.
func quiesce() { syscall.Sync() }

// rawDurableCopy copies r into a temporary file in dir through buf while
// hashing it, fsyncs the file, renames it to final and fsyncs dir: the
// least any durable, verified transfer must do, without geo.
func rawDurableCopy(r io.Reader, dir, final string, buf []byte) (string, int64, error) {
	f, err := os.CreateTemp(dir, ".raw-*")
	if err != nil {
		return "", 0, err
	}
	defer os.Remove(f.Name())
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(f, h), r, buf)
	if err != nil {
		f.Close()
		return "", n, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", n, err
	}
	if err := f.Close(); err != nil {
		return "", n, err
	}
	if err := os.Rename(f.Name(), final); err != nil {
		return "", n, err
	}
	df, err := os.Open(dir)
	if err != nil {
		return "", n, err
	}
	defer df.Close()
	return hex.EncodeToString(h.Sum(nil)), n, df.Sync()
}

// rawClient is a plain HTTP client keeping conc idle connections.
func rawClient(conc int) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 2 * conc
	tr.MaxIdleConnsPerHost = conc
	tr.DisableCompression = true
	return &http.Client{Transport: tr}
}

// rawFetchAll GETs items 1..n from a plain file server over root with conc
// workers and lands each durably under dst. It returns the elapsed time.
func rawFetchAll(ctx context.Context, root, dst string, n, conc int, bufSize int) (time.Duration, int64, error) {
	base, srv, err := serve(http.FileServer(http.Dir(root)))
	if err != nil {
		return 0, 0, err
	}
	defer srv.Close()
	for d := range 100 {
		if err := os.MkdirAll(filepath.Join(dst, typeTable, fmt.Sprint(d)), 0o755); err != nil {
			return 0, 0, err
		}
	}
	client := rawClient(conc)
	defer client.CloseIdleConnections()
	var next, total atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, conc)
	start := time.Now()
	for range conc {
		wg.Go(func() {
			buf := make([]byte, bufSize)
			for {
				id := next.Add(1)
				if id > int64(n) || ctx.Err() != nil {
					return
				}
				key := itemKey(id)
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/"+key, nil)
				resp, err := client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				if resp.StatusCode != http.StatusOK {
					resp.Body.Close()
					errs <- fmt.Errorf("raw GET %s: %s", key, resp.Status)
					return
				}
				final := filepath.Join(dst, filepath.FromSlash(key))
				_, m, err := rawDurableCopy(resp.Body, filepath.Dir(final), final, buf)
				resp.Body.Close()
				if err != nil {
					errs <- err
					return
				}
				total.Add(m)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return 0, 0, err
	}
	return elapsed, total.Load(), ctx.Err()
}

// runSyncSmall: N pending rows to synced end to end (claim, HTTP transfer
// with auth, atomic durable write, checksum, settle), against a raw loop
// at the same concurrency that GETs the same files over loopback HTTP and
// writes each with SHA-256 + fsync + rename (+ directory fsync), no
// database.
func runSyncSmall(ctx context.Context, b *bench, res *result) error {
	n, size := b.o.n, b.o.size
	conc := b.o.concurrency
	if conc == 0 {
		conc = defaultSyncCapacity
	}
	b.logf("sync-small: creating %d records of %d bytes", n, size)
	if err := b.insertItems(ctx, n); err != nil {
		return err
	}
	sums, err := writeBlobs(ctx, b.primaryRoot, n, size)
	if err != nil {
		return err
	}
	if err := b.primaryChecksums(ctx, sums, size); err != nil {
		return err
	}
	if err := b.pendingRows(ctx, n); err != nil {
		return err
	}

	quiesce()
	b.logf("sync-small: raw loop")
	rawName := "raw GET+SHA-256+fsync+rename"
	var rawElapsed time.Duration
	if b.s3 != nil {
		rawName = "raw GET+SHA-256+PUT to S3"
		rawElapsed, _, err = b.s3.rawFetchAllToS3(ctx, b.primaryRoot, n, conc)
	} else {
		rawElapsed, _, err = rawFetchAll(ctx, b.primaryRoot, filepath.Join(b.dir, "raw"), n, conc, int(size)+1)
	}
	if err != nil {
		return fmt.Errorf("raw: %w", err)
	}
	rawRate := float64(n) / rawElapsed.Seconds()

	quiesce()
	b.logf("sync-small: geo")
	obs := newCounter(n)
	cfg := b.secondaryConfig(obs)
	cfg.SyncCapacityPerType = conc
	var elapsed time.Duration
	err = profile(b.o, func() error {
		start := time.Now()
		sec, err := b.start(cfg)
		if err != nil {
			return err
		}
		end, err := obs.wait(ctx, 30*time.Minute)
		if err != nil {
			return err
		}
		elapsed = end.Sub(start)
		b.logf("sync-small: geo done, stopping")
		return sec.stop()
	})
	if err != nil {
		return err
	}
	if err := b.checkSynced(ctx, n); err != nil {
		return err
	}
	rate := float64(n) / elapsed.Seconds()
	res.value, res.unit, res.limit = rate, "blobs/s", rawRate
	res.add("records", "%d of %d bytes, concurrency %d", n, size, conc)
	res.add(rawName, "%.2fs  %.0f blobs/s  (limit)", rawElapsed.Seconds(), rawRate)
	target := "0.5"
	if b.s3 != nil {
		target = "0.7"
	}
	res.add("geo pending to synced", "%.2fs  %.0f blobs/s  (ratio %.2f; target >= %s)", elapsed.Seconds(), rate, rate/rawRate, target)
	res.add("failed attempts", "%d", obs.failed.Load())
	return nil
}

// checkSynced checks that every one of the n rows is synced.
func (b *bench) checkSynced(ctx context.Context, n int) error {
	var synced int64
	if err := b.trackingDB.GetContext(ctx, &synced,
		`SELECT count(*) FROM geo_registry WHERE replicable = $1 AND state = 2`, typeName); err != nil {
		return err
	}
	if synced != int64(n) {
		return fmt.Errorf("%d rows synced, want %d", synced, n)
	}
	return nil
}

// runSyncLarge: one blob end to end against a raw HTTP GET + SHA-256 +
// fsync copy of the same file in the same run.
func runSyncLarge(ctx context.Context, b *bench, res *result) error {
	size := b.o.size
	b.logf("sync-large: creating one record of %d bytes", size)
	if err := b.insertItems(ctx, 1); err != nil {
		return err
	}
	sums, err := writeBlobs(ctx, b.primaryRoot, 1, size)
	if err != nil {
		return err
	}
	if err := b.primaryChecksums(ctx, sums, size); err != nil {
		return err
	}
	if err := b.pendingRows(ctx, 1); err != nil {
		return err
	}
	quiesce()
	b.logf("sync-large: raw copy")
	rawName := "raw GET+SHA-256+fsync copy"
	var rawElapsed time.Duration
	var got int64
	if b.s3 != nil {
		rawName = "raw GET+SHA-256+multipart PUT to S3"
		rawElapsed, got, err = b.s3.rawFetchAllToS3(ctx, b.primaryRoot, 1, 1)
	} else {
		rawElapsed, got, err = rawFetchAll(ctx, b.primaryRoot, filepath.Join(b.dir, "raw"), 1, 1, 1<<20)
	}
	if err != nil {
		return fmt.Errorf("raw: %w", err)
	}
	if got != size {
		return fmt.Errorf("raw: copied %d bytes, want %d", got, size)
	}
	rawRate := float64(size) / 1e6 / rawElapsed.Seconds()
	// The raw copy is no longer needed: free its page cache and disk.
	_ = os.RemoveAll(filepath.Join(b.dir, "raw"))

	quiesce()
	b.logf("sync-large: geo")
	obs := newCounter(1)
	cfg := b.secondaryConfig(obs)
	var elapsed time.Duration
	err = profile(b.o, func() error {
		start := time.Now()
		sec, err := b.start(cfg)
		if err != nil {
			return err
		}
		end, err := obs.wait(ctx, 30*time.Minute)
		if err != nil {
			return err
		}
		elapsed = end.Sub(start)
		return sec.stop()
	})
	if err != nil {
		return err
	}
	if err := b.checkSynced(ctx, 1); err != nil {
		return err
	}
	rate := float64(size) / 1e6 / elapsed.Seconds()
	res.value, res.unit, res.limit = rate, "MB/s", rawRate
	res.add("blob", "%d bytes", size)
	res.add(rawName, "%.2fs  %.0f MB/s  (limit)", rawElapsed.Seconds(), rawRate)
	res.add("geo pending to synced", "%.2fs  %.0f MB/s  (ratio %.2f; target >= 0.8)", elapsed.Seconds(), rate, rate/rawRate)
	return nil
}
