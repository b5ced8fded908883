package xfer_test

import (
	"context"
	"fmt"
	"log"
	"net/http/httptest"
	"os"

	"github.com/geoframework/geo/blob/dirblob"
	"github.com/geoframework/geo/internal/xfer"
	"github.com/geoframework/geo/replicator/transfer"
	"github.com/geoframework/geo/strategy"
)

// A primary serves one record; a secondary fetches it, verifies it, and
// commits it into its own storage.
func ExampleDownloader_Fetch() {
	ctx := context.Background()
	primaryDir, _ := os.MkdirTemp("", "primary")
	secondaryDir, _ := os.MkdirTemp("", "secondary")
	defer os.RemoveAll(primaryDir)
	defer os.RemoveAll(secondaryDir)
	primary, _ := dirblob.Open(primaryDir)
	defer primary.Close()
	secondary, _ := dirblob.Open(secondaryDir)
	defer secondary.Close()

	w, _ := primary.Create(ctx, "packages/1.tgz", nil)
	w.Write([]byte("hello, geo"))
	_, sum := w.Written()
	w.Commit(ctx)

	creds := transfer.Credentials{Site: "eu-west", AccessKey: "AKEU1", Secret: []byte("0123456789abcdef0123456789abcdef")}
	h, err := xfer.NewHandler(xfer.HandlerConfig{
		Secrets: transfer.NewStaticSecrets(creds),
		Resolve: func(ctx context.Context, replicable string, id int64) (xfer.Source, error) {
			if replicable != "package_file" {
				return xfer.Source{}, strategy.ErrUnknownReplicable
			}
			if id != 1 {
				return xfer.Source{}, strategy.ErrNotFound
			}
			r, err := primary.Open(ctx, "packages/1.tgz")
			if err != nil {
				return xfer.Source{}, strategy.ErrBlobMissing
			}
			return xfer.Source{Body: r, Size: r.Size(), ModTime: r.ModTime(), Checksum: sum}, nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	d, err := xfer.NewDownloader(xfer.DownloaderConfig{BaseURL: srv.URL, Credentials: creds})
	if err != nil {
		log.Fatal(err)
	}
	res, err := d.Fetch(ctx, "package_file", 1, secondary, "packages/1.tgz", "")
	if err != nil {
		log.Fatal(err)
	}
	// ... lock the registry row, check nothing changed, then:
	if err := res.Writer.Commit(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Size, res.Checksum == res.PrimaryChecksum)

	_, err = d.Fetch(ctx, "package_file", 2, secondary, "packages/2.tgz", "")
	fmt.Println(err)
	// Output:
	// 10 true
	// transfer: fetch package_file/2: primary answered 404 record_not_found: no such record
}
