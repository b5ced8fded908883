package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/geoframework/geo/blob"
)

// runVerify: re-verification throughput (MB/s) over N stored blobs against
// raw SHA-256 of the same files in the same run, both with the same
// bounded concurrency (default 2, one per core).
//
// geo's side is what the blob replicator's Verify does per row on
// re-verification: open the stored copy through *blob.Bucket (key
// validation and the driver), hash it with blob.SHA256Reader and compare
// with the primary's checksum. The two
// sides alternate for two rounds each, so page-cache and load effects hit
// both alike; each side's figure is its total bytes over its total time.
func runVerify(ctx context.Context, b *bench, res *result) error {
	n, size := b.o.n, b.o.size
	conc := b.o.concurrency
	if conc == 0 {
		conc = 2
	}
	b.logf("verify: writing %d blobs of %d bytes", n, size)
	if b.s3 != nil {
		// The files are written on disk, then uploaded to the bucket.
		if _, err := writeBlobs(ctx, b.primaryRoot, n, size); err != nil {
			return err
		}
		if err := uploadBlobs(ctx, b.primaryRoot, b.secondStore, n); err != nil {
			return err
		}
	} else if _, err := writeBlobs(ctx, b.secondaryRoot, n, size); err != nil {
		return err
	}
	sums := make([]string, n+1)

	raw := func(id int64) error {
		if b.s3 != nil {
			sum, m, err := b.s3.rawSHA256(ctx, itemKey(id), make([]byte, 1<<20))
			if err != nil {
				return err
			}
			if m != size || (sums[id] != "" && sums[id] != sum) {
				return fmt.Errorf("raw: %d changed", id)
			}
			sums[id] = sum
			return nil
		}
		f, err := os.Open(filepath.Join(b.secondaryRoot, filepath.FromSlash(itemKey(id))))
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		buf := make([]byte, 1<<20)
		if _, err := io.CopyBuffer(h, struct{ io.Reader }{f}, buf); err != nil {
			return err
		}
		sum := hex.EncodeToString(h.Sum(nil))
		if sums[id] != "" && sums[id] != sum {
			return fmt.Errorf("raw: %d changed", id)
		}
		sums[id] = sum
		return nil
	}
	geo := func(id int64) error {
		rd, err := b.secondStore.Open(ctx, itemKey(id))
		if err != nil {
			return err
		}
		defer rd.Close()
		sum, n, err := blob.SHA256Reader(ctx, rd)
		if err != nil {
			return err
		}
		if sum != sums[id] || n != size {
			return fmt.Errorf("verify %d: match %v size %d, want a match of %d bytes", id, sum == sums[id], n, size)
		}
		return nil
	}
	var rawTime, geoTime time.Duration
	for round := range 2 {
		d, err := forAll(ctx, n, conc, raw)
		if err != nil {
			return fmt.Errorf("raw round %d: %w", round, err)
		}
		rawTime += d
		err = profile(b.o, func() error {
			d, err = forAll(ctx, n, conc, geo)
			return err
		})
		if err != nil {
			return fmt.Errorf("geo round %d: %w", round, err)
		}
		geoTime += d
	}
	mb := 2 * float64(n) * float64(size) / 1e6
	rawRate, rate := mb/rawTime.Seconds(), mb/geoTime.Seconds()
	res.value, res.unit, res.limit = rate, "MB/s", rawRate
	res.add("blobs", "%d of %d bytes, concurrency %d, 2 rounds each (alternating)", n, size, conc)
	rawName := "raw SHA-256 of the files"
	if b.s3 != nil {
		rawName = "raw GET+SHA-256 of the objects"
	}
	res.add(rawName, "%.2fs  %.0f MB/s  (limit)", rawTime.Seconds(), rawRate)
	res.add("geo Replicator.Verify", "%.2fs  %.0f MB/s  (ratio %.2f; target >= 0.8)", geoTime.Seconds(), rate, rate/rawRate)
	res.add("note", "measures Replicator.Verify, what the verification engine calls per row, without the registry round trips")
	return nil
}

// forAll runs f for ids 1..n over conc workers and returns the elapsed time.
func forAll(ctx context.Context, n, conc int, f func(id int64) error) (time.Duration, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, conc)
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for {
				id := next.Add(1)
				if id > int64(n) || ctx.Err() != nil {
					return
				}
				if err := f(id); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	d := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return d, err
	}
	return d, ctx.Err()
}
