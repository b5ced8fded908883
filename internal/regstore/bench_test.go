package regstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"golang.org/x/sync/errgroup"

	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
)

const benchBatch = 10000

// benchDB opens a fresh migrated database, with lib/pq's
// binary_parameters=yes when binary is set.
func benchDB(b *testing.B, binary bool) *sqlx.DB {
	b.Helper()
	u := pg.NewDatabaseURL(b)
	if binary {
		u += "&binary_parameters=yes"
	}
	db, err := sqlx.Open("postgres", u)
	if err != nil {
		b.Fatal(err)
	}
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(16)
	b.Cleanup(func() { db.Close() })
	if err := registry.MigrateTracking(context.Background(), db); err != nil {
		b.Fatal(err)
	}
	return db
}

func reportRows(b *testing.B, rows int) {
	b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
}

var paramModes = []struct {
	name   string
	binary bool
}{{"text", false}, {"binary_parameters", true}}

// BenchmarkUpsertPendingBatch measures backfill: InsertMissing of 10,000
// new ids per statement. Compare with BenchmarkRawUnnestInsert.
func BenchmarkUpsertPendingBatch(b *testing.B) {
	for _, mode := range paramModes {
		b.Run(mode.name, func(b *testing.B) {
			ctx := context.Background()
			s, err := regstore.NewStore(benchDB(b, mode.binary), regstore.Options{})
			if err != nil {
				b.Fatal(err)
			}
			batch := make([]int64, benchBatch)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for j := range batch {
					batch[j] = int64(i*benchBatch + j + 1)
				}
				n, err := s.InsertMissing(ctx, "package_file", batch)
				if err != nil || n != benchBatch {
					b.Fatalf("InsertMissing = %d, %v; want %d", n, err, benchBatch)
				}
			}
			reportRows(b, b.N*benchBatch)
		})
	}
}

// BenchmarkRawUnnestInsert is the raw-SQL reference for
// BenchmarkUpsertPendingBatch: the same rows into the same table by
// INSERT ... SELECT unnest, written by hand, where InsertMissing uses COPY
// (DESIGN.md §11 measured ≈ 320k rows/s for the INSERT into a bare table).
func BenchmarkRawUnnestInsert(b *testing.B) {
	ctx := context.Background()
	db := benchDB(b, false)
	batch := make([]int64, benchBatch)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range batch {
			batch[j] = int64(i*benchBatch + j + 1)
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO geo_registry (replicable, model_id)
SELECT 'package_file', unnest($1::bigint[]) ON CONFLICT DO NOTHING`, pq.Array(batch)); err != nil {
			b.Fatal(err)
		}
	}
	reportRows(b, b.N*benchBatch)
}

// BenchmarkClaim measures the sync engine's database work: claim batches of
// 100 rows, then settle each (SettleSynced, one transaction per row, 8 at a
// time, as workers do). "claim-only" measures the claim statement alone.
func BenchmarkClaim(b *testing.B) {
	const batch = 100
	for _, mode := range paramModes {
		for _, settle := range []bool{true, false} {
			name := mode.name + "/claim+settle"
			if !settle {
				name = mode.name + "/claim-only"
			}
			b.Run(name, func(b *testing.B) {
				ctx := context.Background()
				db := benchDB(b, mode.binary)
				s, err := regstore.NewStore(db, regstore.Options{})
				if err != nil {
					b.Fatal(err)
				}
				// Rows to claim, behind a larger set of synced ones.
				total := b.N*batch + 50000
				all := ids(1, int64(total))
				if _, err := s.InsertMissing(ctx, "package_file", all); err != nil {
					b.Fatal(err)
				}
				if _, err := db.ExecContext(ctx, `UPDATE geo_registry SET state = 2 WHERE model_id > $1`, b.N*batch); err != nil {
					b.Fatal(err)
				}
				if _, err := db.ExecContext(ctx, `VACUUM ANALYZE geo_registry`); err != nil {
					b.Fatal(err)
				}
				limits := []regstore.TypeLimit{{Replicable: "package_file", Limit: batch}}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					cs, err := s.Claim(ctx, regstore.ClaimParams{Lease: regstore.Lease{Owner: "bench", Duration: time.Minute}, Limits: limits})
					if err != nil || len(cs) != batch {
						b.Fatalf("Claim = %d rows, %v; want %d", len(cs), err, batch)
					}
					if !settle {
						continue
					}
					var g errgroup.Group
					g.SetLimit(8)
					for _, c := range cs {
						g.Go(func() error {
							_, err := s.SettleSynced(ctx, "bench", c, regstore.SyncedResult{BlobKey: "k", Size: 1, Checksum: "ab", PrimaryChecksum: "ab"}, nil)
							return err
						})
					}
					if err := g.Wait(); err != nil {
						b.Fatal(err)
					}
				}
				reportRows(b, b.N*batch)
			})
		}
	}
}

// claimedRows inserts n pending rows behind 50,000 synced ones and claims
// the n pending ones for owner "bench" in claims of batch rows each.
func claimedRows(b *testing.B, s *regstore.Store, db *sqlx.DB, n, batch int) [][]regstore.Claim {
	b.Helper()
	ctx := context.Background()
	if _, err := s.InsertMissing(ctx, "package_file", ids(1, int64(n+50000))); err != nil {
		b.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `UPDATE geo_registry SET state = 2 WHERE model_id > $1`, n); err != nil {
		b.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `VACUUM ANALYZE geo_registry`); err != nil {
		b.Fatal(err)
	}
	var all [][]regstore.Claim
	limits := []regstore.TypeLimit{{Replicable: "package_file", Limit: batch}}
	for got := 0; got < n; {
		cs, err := s.Claim(ctx, regstore.ClaimParams{Lease: regstore.Lease{Owner: "bench", Duration: time.Hour}, Limits: limits})
		if err != nil || len(cs) == 0 {
			b.Fatalf("Claim = %d rows, %v", len(cs), err)
		}
		got += len(cs)
		all = append(all, cs)
	}
	return all
}

// BenchmarkSettle measures settling claimed rows synced (the registry side
// of a sync, no bytes): "one-by-one" is SettleSynced, one transaction per
// row, 8 at a time as workers do; "batch" is SettleSyncedBatch of 100 rows
// per transaction, the sync engine's group commit.
func BenchmarkSettle(b *testing.B) {
	const batch = 100
	res := regstore.SyncedResult{BlobKey: "k", Size: 1, Checksum: "ab", PrimaryChecksum: "ab"}
	for _, mode := range paramModes {
		b.Run(mode.name+"/one-by-one", func(b *testing.B) {
			ctx := context.Background()
			db := benchDB(b, mode.binary)
			s, err := regstore.NewStore(db, regstore.Options{})
			if err != nil {
				b.Fatal(err)
			}
			claims := claimedRows(b, s, db, b.N*batch, batch)
			b.ResetTimer()
			for _, cs := range claims {
				var g errgroup.Group
				g.SetLimit(8)
				for _, c := range cs {
					g.Go(func() error {
						ok, err := s.SettleSynced(ctx, "bench", c, res, nil)
						if err == nil && !ok {
							b.Error("not settled")
						}
						return err
					})
				}
				if err := g.Wait(); err != nil {
					b.Fatal(err)
				}
			}
			reportRows(b, b.N*batch)
		})
		b.Run(mode.name+"/batch", func(b *testing.B) {
			ctx := context.Background()
			db := benchDB(b, mode.binary)
			s, err := regstore.NewStore(db, regstore.Options{})
			if err != nil {
				b.Fatal(err)
			}
			claims := claimedRows(b, s, db, b.N*batch, batch)
			b.ResetTimer()
			for _, cs := range claims {
				items := make([]regstore.SettleItem, len(cs))
				for i, c := range cs {
					items[i] = regstore.SettleItem{Claim: c, Result: res}
				}
				for _, o := range s.SettleSyncedBatch(ctx, "bench", items) {
					if o.Err != nil || !o.Settled {
						b.Fatalf("SettleSyncedBatch: %+v", o)
					}
				}
			}
			reportRows(b, b.N*batch)
		})
	}
}

// BenchmarkSettleFailed measures recording failed syncs (SettleFailed, one
// transaction per row, 8 at a time as workers do): the one settle that
// writes the failure indexes (geo_registry_failed_due, and
// geo_registry_new_failures on a row's first failure).
func BenchmarkSettleFailed(b *testing.B) {
	const batch = 100
	reason := "transfer: fetch package_file/123456: primary answered 503 Service Unavailable"
	for _, mode := range paramModes {
		b.Run(mode.name, func(b *testing.B) {
			ctx := context.Background()
			db := benchDB(b, mode.binary)
			s, err := regstore.NewStore(db, regstore.Options{})
			if err != nil {
				b.Fatal(err)
			}
			claims := claimedRows(b, s, db, b.N*batch, batch)
			b.ResetTimer()
			for _, cs := range claims {
				var g errgroup.Group
				g.SetLimit(8)
				for _, c := range cs {
					g.Go(func() error {
						ok, err := s.SettleFailed(ctx, "bench", c, reason, false)
						if err == nil && !ok {
							b.Error("not settled")
						}
						return err
					})
				}
				if err := g.Wait(); err != nil {
					b.Fatal(err)
				}
			}
			reportRows(b, b.N*batch)
		})
	}
}
