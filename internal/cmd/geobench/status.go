package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
)

// statusTarget is the status target in milliseconds.
const statusTarget = 100

// runStatus: the time of the status report over N registry rows, as
// replicator.ReadStatus builds it for geoctl and Secondary.Status for a
// running secondary (counts, oldest pending, top failures, new failures,
// pauses, event cursor), median of 5 calls after a warm-up call.
func runStatus(ctx context.Context, b *bench, res *result) error {
	n := b.o.n
	b.logf("status: creating %d registry rows", n)
	// A settled registry: 97% synced and verified, 1% each pending,
	// failed and synced-but-unverified.
	if _, err := b.trackingDB.ExecContext(ctx, `
INSERT INTO geo_registry (replicable, model_id, state, verification_state, last_synced_at, blob_key, blob_size,
  verification_checksum, verified_at, retry_count, retry_at, last_sync_failure)
SELECT $1, g,
  CASE WHEN g % 100 = 0 THEN 0 WHEN g % 100 = 1 THEN 3 ELSE 2 END,
  CASE WHEN g % 100 IN (0, 1, 2) THEN 0 ELSE 2 END,
  CASE WHEN g % 100 > 1 THEN now() END,
  CASE WHEN g % 100 > 1 THEN 'k/' || g END,
  CASE WHEN g % 100 > 1 THEN 4096 END,
  CASE WHEN g % 100 > 2 THEN md5(g::text) || md5(g::text) END,
  CASE WHEN g % 100 > 2 THEN now() END,
  CASE WHEN g % 100 = 1 THEN 1 ELSE 0 END,
  CASE WHEN g % 100 = 1 THEN now() + interval '1 hour' END,
  CASE WHEN g % 100 = 1 THEN 'primary answered 500' END
FROM generate_series(1, $2::bigint) g`, typeName, n); err != nil {
		return err
	}
	if _, err := b.trackingDB.ExecContext(ctx, `VACUUM ANALYZE geo_registry`); err != nil {
		return err
	}
	var times []float64
	var counts registry.Counts
	err := profile(b.o, func() error {
		for i := range 6 {
			start := time.Now()
			st, err := replicator.ReadStatus(ctx, b.trackingDB, []string{typeName}, replicator.StatusOptions{})
			if err != nil {
				return err
			}
			if i > 0 { // the first call warms the cache
				times = append(times, float64(time.Since(start).Microseconds())/1000)
			}
			for _, ts := range st.Types {
				if ts.Replicable == typeName {
					counts = ts.Counts
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if counts.Total != int64(n) {
		return fmt.Errorf("counts: total %d, want %d", counts.Total, n)
	}
	sorted := slices.Clone(times)
	slices.Sort(sorted)
	median := sorted[len(sorted)/2]
	res.value, res.unit, res.limit, res.lowerIsBetter = median, "ms", statusTarget, true
	res.add("registry rows", "%d (synced %d, pending %d, failed %d, verified %d)",
		counts.Total, counts.Synced, counts.Pending, counts.Failed, counts.VerificationSucceeded)
	res.add("ReadStatus", "median %.1f ms of %v ms (target <= %d ms)", median, times, statusTarget)
	return nil
}
