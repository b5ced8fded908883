package lfs_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/geoframework/geo/examples/lfs"
	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/geotest/s3test"
	"github.com/geoframework/geo/strategy"
)

func objects(a geotest.App) lfs.Objects {
	return lfs.Objects{DB: a.DB, Storage: a.Storage, Publisher: a.Publisher}
}

func oid(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func store(project int64) func(context.Context, geotest.App, []byte) (int64, error) {
	return func(ctx context.Context, a geotest.App, b []byte) (int64, error) {
		return objects(a).Store(ctx, project, oid(b), int64(len(b)), bytes.NewReader(b))
	}
}

func TestConformance(t *testing.T) { geotest.RunBlobStrategy(t, harness()) }

// TestConformanceObjectStorage runs the suite with the sites on S3
// (versitygw): both, and each alone.
func TestConformanceObjectStorage(t *testing.T) {
	srv := s3test.New()
	t.Cleanup(func() { _ = srv.Stop() })
	for _, st := range geotest.ObjectStorage() {
		t.Run(st.String(), func(t *testing.T) {
			h := harness()
			h.Storage, h.S3 = st, srv
			geotest.RunBlobStrategy(t, h)
		})
	}
}

func harness() geotest.Harness {
	return geotest.Harness{
		Setup:    lfs.CreateSchema,
		Strategy: func(db *sqlx.DB) strategy.BlobStrategy { return &lfs.Strategy{DB: db} },
		Create:   store(1),
		Update: func(ctx context.Context, a geotest.App, id int64, b []byte) error {
			return objects(a).Repoint(ctx, id, oid(b), int64(len(b)), bytes.NewReader(b))
		},
		Delete:           func(ctx context.Context, a geotest.App, id int64) error { return objects(a).Delete(ctx, id) },
		ScopedStrategy:   func(db *sqlx.DB) strategy.BlobStrategy { return &lfs.Strategy{DB: db, ProjectIDs: []int64{1}} },
		CreateOutOfScope: store(2),
		// Objects are content-addressed: records with equal bytes share a
		// key, and a key comes back when its bytes do.
		KeysMayCollide: true,
	}
}

// TestCollectIsAtomicWithStore deletes the last record naming an object
// while another record of the same content is stored, many times over:
// the store may find the file present and skip writing it, so the
// delete's Collect must not remove it once the store's row commits (the
// oid's advisory lock). Every record left must have its bytes.
func TestCollectIsAtomicWithStore(t *testing.T) {
	w := geotest.NewWorld(t, geotest.WorldConfig{
		Setup:      lfs.CreateSchema,
		Strategies: func(db *sqlx.DB) []strategy.BlobStrategy { return []strategy.BlobStrategy{&lfs.Strategy{DB: db}} },
	})
	o := lfs.Objects{DB: w.PrimaryDB, Storage: w.PrimaryStorage, Publisher: w.Primary.Publisher()}
	ctx := context.Background()
	b := []byte("the same object, stored and deleted again and again")
	id, err := o.Store(ctx, 1, oid(b), int64(len(b)), bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	rounds := 300
	if testing.Short() {
		rounds = 50
	}
	for i := range rounds {
		var next int64
		errs := make(chan error, 2)
		go func() { errs <- o.Delete(ctx, id) }()
		go func() {
			var err error
			next, err = o.Store(ctx, 1, oid(b), int64(len(b)), bytes.NewReader(b))
			errs <- err
		}()
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: %v", i, err)
			}
		}
		if _, err := w.PrimaryStorage.Stat(ctx, lfs.Key(oid(b))); err != nil {
			t.Fatalf("round %d: record %d's bytes after a concurrent delete of record %d: got %v, want them stored", i, next, id, err)
		}
		id = next
	}
}
