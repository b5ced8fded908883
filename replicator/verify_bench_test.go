package replicator_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/internal/testtype"
	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/strategy"
)

// BenchmarkVerify measures the secondary's re-verification (claim, primary
// checksums through the replica, read + SHA-256 of the local copies with
// VerifyConcurrency 4, settle) in MB/s and files/s, beside, in the same
// run, the raw SHA-256 speed of the machine (the same bytes hashed in
// memory on one core) and a raw read + SHA-256 of the same files at the
// same concurrency (the I/O-inclusive ceiling).
//
//	go test -run '^$' -bench BenchmarkVerify -benchtime 5x ./replicator/
func BenchmarkVerify(b *testing.B) {
	for _, tc := range []struct {
		name  string
		files int
		size  int
	}{
		{"1MiB", 128, 1 << 20},
		{"4KiB", 2000, 4 << 10},
	} {
		b.Run(tc.name, func(b *testing.B) { benchVerify(b, tc.files, tc.size) })
	}
}

func benchVerify(b *testing.B, files, size int) {
	ctx := context.Background()
	w := geotest.NewWorld(b, geotest.WorldConfig{
		Server: pg,
		Setup: func(ctx context.Context, db *sqlx.DB) error {
			_, err := db.ExecContext(ctx, testtype.Schema("items"))
			return err
		},
		Strategies: func(db *sqlx.DB) []strategy.BlobStrategy {
			return []strategy.BlobStrategy{&testtype.Type{TypeName: "item", Table: "items", DB: db}}
		},
	})
	// Local copies and matching rows, written directly: the benchmark is
	// about verification, not sync.
	ids := make([]int64, files)
	keys := make([]string, files)
	sums := make([]string, files)
	paths := make([]string, files)
	for i := range ids {
		ids[i] = int64(i + 1)
		keys[i] = fmt.Sprintf("bench/%d/%d", i%100, i)
		data := payload(i, size)
		s := sha256.Sum256(data)
		sums[i] = hex.EncodeToString(s[:])
		wr, err := w.SecondaryStorage.Create(ctx, keys[i], nil)
		require.NoError(b, err)
		_, err = wr.Write(data)
		require.NoError(b, err)
		require.NoError(b, wr.Commit(ctx))
		paths[i] = filepath.Join(w.SecondaryRoot, filepath.FromSlash(keys[i]))
	}
	_, err := w.TrackingDB.ExecContext(ctx, `
INSERT INTO geo_registry (replicable, model_id, state, blob_key, blob_size, verification_state, verified_at)
SELECT 'item', id, 2, key, $3, 2, now() FROM unnest($1::bigint[], $2::text[]) AS t(id, key)`,
		pq.Array(ids), pq.Array(keys), size)
	require.NoError(b, err)
	_, err = w.PrimaryDB.ExecContext(ctx, `
INSERT INTO geo_checksums (replicable, model_id, state, checksum, size, verified_at)
SELECT 'item', id, 2, sum, $3, now() FROM unnest($1::bigint[], $2::text[]) AS t(id, sum)`,
		pq.Array(ids), pq.Array(sums), size)
	require.NoError(b, err)
	cfg := w.SecondaryConfig(&testtype.Type{TypeName: "item", Table: "items", DB: w.PrimaryDB})
	cfg.VerifyConcurrency = 4
	sec, err := replicator.NewSecondary(cfg)
	require.NoError(b, err)

	// Raw SHA-256 of the same bytes in memory, one core.
	data := make([][]byte, files)
	for i := range data {
		data[i], err = os.ReadFile(paths[i])
		require.NoError(b, err)
	}
	start := time.Now()
	for _, d := range data {
		sha256.Sum256(d)
	}
	rawMem := time.Since(start)
	// Raw read + SHA-256 of the same files, 4 at a time.
	start = time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for _, p := range paths {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f, err := os.Open(p)
			if err != nil {
				return
			}
			defer f.Close()
			h := sha256.New()
			buf := make([]byte, 1<<20)
			for {
				n, err := f.Read(buf)
				h.Write(buf[:n])
				if err != nil {
					break
				}
			}
		}()
	}
	wg.Wait()
	rawFiles := time.Since(start)

	total := float64(files) * float64(size)
	b.SetBytes(int64(files) * int64(size))
	b.ResetTimer()
	var elapsed time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		_, err := sec.ReverifyAll(ctx, "item", false)
		require.NoError(b, err)
		b.StartTimer()
		t0 := time.Now()
		n, err := replicator.VerifyDueNow(ctx, sec)
		elapsed += time.Since(t0)
		require.NoError(b, err)
		require.Equal(b, files, n)
	}
	b.StopTimer()
	var ok int
	require.NoError(b, w.TrackingDB.GetContext(ctx, &ok, `SELECT count(*) FROM geo_registry WHERE verification_state = 2`))
	require.Equal(b, files, ok, "every copy verified")
	per := elapsed.Seconds() / float64(b.N)
	b.ReportMetric(total/per/1e6, "verify_MB/s")
	b.ReportMetric(float64(files)/per, "verify_files/s")
	b.ReportMetric(total/rawMem.Seconds()/1e6, "raw_sha256_1core_MB/s")
	b.ReportMetric(total/rawFiles.Seconds()/1e6, "raw_read_sha256_c4_MB/s")
	b.ReportMetric(float64(files)/rawFiles.Seconds(), "raw_read_sha256_c4_files/s")
}
