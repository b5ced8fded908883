package geotest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jmoiron/sqlx"

	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/geotest/s3test"
	"github.com/geoframework/geo/internal/testtype"
	"github.com/geoframework/geo/strategy"
)

// TestCompareThroughTheStorage: World.Compare finds extra blobs in the
// secondary storage's own listing and temporary data where that storage
// keeps it, on a directory as on S3 (an object put behind geo's back, a
// multipart upload left open), so a secondary on object storage is
// compared as exactly as one on a disk. Both sites on each kind, so the
// primary's storage is read through either backend too.
func TestCompareThroughTheStorage(t *testing.T) {
	srv := s3test.New()
	t.Cleanup(func() { _ = srv.Stop() })
	for _, st := range []geotest.Storage{{}, {Primary: geotest.StorageS3, Secondary: geotest.StorageS3}} {
		t.Run(st.String(), func(t *testing.T) {
			ctx := context.Background()
			var typ *testtype.Type
			w := geotest.NewWorld(t, geotest.WorldConfig{
				Server: pg, Storage: st, S3: srv,
				Setup: func(ctx context.Context, db *sqlx.DB) error {
					_, err := db.ExecContext(ctx, testtype.Schema("cmp_items"))
					return err
				},
				Strategies: func(db *sqlx.DB) []strategy.BlobStrategy {
					typ = &testtype.Type{TypeName: "cmp_item", Table: "cmp_items", DB: db}
					return []strategy.BlobStrategy{typ}
				},
			})
			if (w.SecondaryBucket != nil) != (st.Secondary == geotest.StorageS3) || (w.SecondaryRoot == "") != (st.Secondary == geotest.StorageS3) {
				t.Fatalf("World on %s: SecondaryBucket %v, SecondaryRoot %q", st, w.SecondaryBucket, w.SecondaryRoot)
			}
			app := &testtype.App{Type: typ, Storage: w.PrimaryStorage, Publisher: w.Primary.Publisher()}
			for i := range 5 {
				if _, err := app.Create(ctx, 0, []byte(strings.Repeat("x", 100*i))); err != nil {
					t.Fatal(err)
				}
			}
			sec := &testtype.Type{TypeName: "cmp_item", Table: "cmp_items", DB: w.PrimaryDB}
			r := w.Start(w.SecondaryConfig(sec))
			diff := func() geotest.Diff {
				t.Helper()
				d, err := w.Compare(ctx, sec)
				if err != nil {
					t.Fatal(err)
				}
				return d
			}
			geotest.WaitFor(t, time.Minute, "the secondary converges", func() (bool, string) {
				d := diff()
				return d.OK(), d.String()
			})
			if err := r.Stop(); err != nil {
				t.Fatal(err)
			}
			if d := diff(); d.Records != 5 {
				t.Fatalf("diff %v: want 5 records", d)
			}

			put := func(key string) {
				t.Helper()
				wr, err := w.SecondaryStorage.Create(ctx, key, nil)
				if err != nil {
					t.Fatal(err)
				}
				wr.Write([]byte("not geo's"))
				if err := wr.Commit(ctx); err != nil {
					t.Fatal(err)
				}
			}
			put("stray/blob")
			if d := diff(); d.Extra != 1 || d.OK() || !strings.Contains(d.String(), "extra blob stray/blob") {
				t.Fatalf("after a stray blob: diff %v, want extra=1 naming it", d)
			}
			if err := w.SecondaryStorage.Remove(ctx, "stray/blob"); err != nil {
				t.Fatal(err)
			}
			if d := diff(); !d.OK() {
				t.Fatalf("stray blob removed: diff %v, want none", d)
			}
			if w.SecondaryBucket == nil {
				return
			}
			b := w.SecondaryBucket
			up, err := b.Client().CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(b.Name), Key: aws.String(b.Prefix + "open/upload")})
			if err != nil {
				t.Fatal(err)
			}
			if d := diff(); d.TempFiles != 1 || d.OK() || !strings.Contains(d.String(), "multipart upload of "+b.Prefix+"open/upload") {
				t.Fatalf("with a multipart upload open: diff %v, want temp=1 naming it", d)
			}
			if _, err := b.Client().AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(b.Name), Key: up.Key, UploadId: up.UploadId}); err != nil {
				t.Fatal(err)
			}
			if d := diff(); !d.OK() {
				t.Fatalf("upload aborted: diff %v, want none", d)
			}
		})
	}
}
