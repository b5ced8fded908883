package xfer_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/geoframework/geo/internal/xfer"
)

// Run the geo and raw benchmarks in the same run and compare:
//
//	go test -run '^$' -bench 'Large|Small' -benchtime 3x ./blob/     (large)
//	go test -run '^$' -bench 'Small' -benchtime 2000x ./blob/        (small)
//
// Large: MB/s of one blob, landed durably (fsync + rename) and verified.
// Small: 4 KiB blobs/s at concurrency 8, each landed durably (file and
// directory fsync).

const (
	largeSize       = 256 << 20
	smallSize       = 4 << 10
	smallConcurrent = 8
)

func BenchmarkTransferLarge(b *testing.B) {
	p := newPrimary(b)
	sum := p.addLarge(1, largeSize)
	sec := newDir(b)
	d := p.downloader(b, nil)
	ctx := context.Background()
	b.SetBytes(largeSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		key := fmt.Sprintf("large/%d", i)
		if _, err := d.Download(ctx, testReplicable, 1, sec, key, sum); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		sec.Remove(ctx, key)
		b.StartTimer()
	}
}

// rawDurableCopy copies r into a temp file in dir through buf while
// hashing, fsyncs it, renames it to final and fsyncs dir: what a transfer
// must do at least, without geo.
func rawDurableCopy(r io.Reader, dir, final string, buf []byte) (string, error) {
	f, err := os.CreateTemp(dir, "raw-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	h := sha256.New()
	if _, err := io.CopyBuffer(io.MultiWriter(f, h), r, buf); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(f.Name(), final); err != nil {
		return "", err
	}
	df, err := os.Open(dir)
	if err != nil {
		return "", err
	}
	defer df.Close()
	return hex.EncodeToString(h.Sum(nil)), df.Sync()
}

func BenchmarkRawCopyLarge(b *testing.B) {
	p := newPrimary(b)
	p.addLarge(1, largeSize)
	src := filepath.Join(rootOf(p.store), "records/1")
	dst := b.TempDir()
	buf := make([]byte, 1<<20)
	b.SetBytes(largeSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f, err := os.Open(src)
		if err != nil {
			b.Fatal(err)
		}
		final := filepath.Join(dst, "copy")
		_, err = rawDurableCopy(struct{ io.Reader }{f}, dst, final, buf)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.Remove(final)
		b.StartTimer()
	}
}

// rawServer serves the files of root over plain HTTP, no auth, no checks.
func rawServer(b *testing.B, root string) (*httptest.Server, *http.Client) {
	srv := httptest.NewServer(http.FileServer(http.Dir(root)))
	b.Cleanup(srv.Close)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	return srv, &http.Client{Transport: tr}
}

func BenchmarkRawHTTPCopyLarge(b *testing.B) {
	p := newPrimary(b)
	p.addLarge(1, largeSize)
	srv, client := rawServer(b, rootOf(p.store))
	dst := b.TempDir()
	buf := make([]byte, 1<<20)
	b.SetBytes(largeSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := client.Get(srv.URL + "/records/1")
		if err != nil {
			b.Fatal(err)
		}
		final := filepath.Join(dst, "copy")
		_, err = rawDurableCopy(resp.Body, dst, final, buf)
		resp.Body.Close()
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.Remove(final)
		b.StartTimer()
	}
}

// parallel runs n operations over smallConcurrent goroutines and reports
// blobs/s.
func parallel(b *testing.B, op func(i int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	start := time.Now()
	for range smallConcurrent {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				if err := op(i); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "blobs/s")
}

func BenchmarkTransferSmall(b *testing.B) {
	p := newPrimary(b)
	const records = 64
	for id := int64(1); id <= records; id++ {
		p.add(id, randBytes(smallSize))
	}
	sec := newDir(b)
	d := p.downloader(b, func(c *xfer.DownloaderConfig) { c.Concurrency = smallConcurrent })
	ctx := context.Background()
	b.SetBytes(smallSize)
	b.ResetTimer()
	parallel(b, func(i int) error {
		id := int64(i%records) + 1
		_, err := d.Download(ctx, testReplicable, id, sec, fmt.Sprintf("small/%d/%d", i%16, i), "")
		return err
	})
}

func BenchmarkRawCopySmall(b *testing.B) {
	p := newPrimary(b)
	const records = 64
	for id := int64(1); id <= records; id++ {
		p.add(id, randBytes(smallSize))
	}
	srv, client := rawServer(b, rootOf(p.store))
	dst := b.TempDir()
	for i := range 16 {
		os.Mkdir(filepath.Join(dst, fmt.Sprint(i)), 0o755)
	}
	b.SetBytes(smallSize)
	b.ResetTimer()
	parallel(b, func(i int) error {
		resp, err := client.Get(fmt.Sprintf("%s/records/%d", srv.URL, i%records+1))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		dir := filepath.Join(dst, fmt.Sprint(i%16))
		buf := make([]byte, smallSize+1) // a buffer sized to the blob, as geo does
		_, err = rawDurableCopy(resp.Body, dir, filepath.Join(dir, fmt.Sprint(i)), buf)
		return err
	})
}
