package wiring_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/geoframework/geo/blob/dirblob"
	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/examples/upload"
	"github.com/geoframework/geo/examples/wiring"
	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/geotest/pgtest"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator/transfer"
)

var pg = pgtest.New(pgtest.Options{})

func TestMain(m *testing.M) { os.Exit(pg.Run(m)) }

// TestReadmeWiringReplicates runs the README's RunPrimary and RunSecondary
// as they stand, against real PostgreSQL, real HTTP on loopback and real
// directories: records created before the secondary starts (backfill) and
// while it runs (events), updated and deleted, end as an exact copy, and
// both sites stop when their context ends.
func TestReadmeWiringReplicates(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	primaryDB, trackingDB := pg.NewDatabase(t), pg.NewDatabase(t)
	if err := upload.CreateSchema(ctx, primaryDB); err != nil {
		t.Fatal(err)
	}
	// The application publishes from its first write on, so the outbox
	// exists before RunPrimary migrates it again (a no-op then).
	if err := registry.MigratePrimary(ctx, primaryDB); err != nil {
		t.Fatal(err)
	}
	primaryRoot, secondaryRoot := t.TempDir(), t.TempDir()
	secret := make([]byte, transfer.SecretSizeMin)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	creds := transfer.Credentials{Site: "readme", AccessKey: "readme", Secret: secret}

	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	defer srv.Close()
	primaryDone := make(chan error, 1)
	go func() {
		primaryDone <- wiring.RunPrimary(ctx, primaryDB, primaryRoot, transfer.NewStaticSecrets(creds), mux)
	}()

	// The application: it writes files to the primary's storage and
	// publishes with a Publisher of the same types (a Publisher holds only
	// their names).
	files, err := dirblob.Open(primaryRoot)
	if err != nil {
		t.Fatal(err)
	}
	defer files.Close()
	pub, err := events.NewPublisher([]string{upload.Name})
	if err != nil {
		t.Fatal(err)
	}
	app := upload.Uploads{DB: primaryDB, Storage: files, Publisher: pub}
	add := func(i int) int64 {
		t.Helper()
		u, err := app.Create(ctx, "Project", 7, fmt.Sprintf("f%d.txt", i), strings.NewReader(fmt.Sprintf("file %d", i)))
		if err != nil {
			t.Fatal(err)
		}
		return u.ID
	}
	var ids []int64
	for i := range 20 {
		ids = append(ids, add(i))
	}

	secondaryDone := make(chan error, 1)
	go func() {
		secondaryDone <- wiring.RunSecondary(ctx, primaryDB, trackingDB, secondaryRoot, srv.URL, creds)
	}()
	for i := 20; i < 30; i++ {
		ids = append(ids, add(i))
	}
	if _, err := app.Replace(ctx, ids[0], strings.NewReader("file 0, second version")); err != nil {
		t.Fatal(err)
	}
	if err := app.Delete(ctx, ids[1]); err != nil {
		t.Fatal(err)
	}

	copies, err := dirblob.Open(secondaryRoot)
	if err != nil {
		t.Fatal(err)
	}
	defer copies.Close()
	sites := geotest.Sites{Tracking: trackingDB, PrimaryStorage: files, SecondaryStorage: copies, SecondaryRoot: secondaryRoot}
	geotest.WaitFor(t, geotest.StallDefault, "the secondary is an exact copy", func() (bool, string) {
		d, err := geotest.CompareSites(ctx, sites, &upload.Strategy{DB: primaryDB})
		if err != nil {
			return false, err.Error()
		}
		return d.OK() && d.Records == 29, d.String()
	})

	cancel()
	for name, done := range map[string]chan error{"RunPrimary": primaryDone, "RunSecondary": secondaryDone} {
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("%s after its context ended: got %v, want nil", name, err)
			}
		case <-time.After(2 * time.Minute): // a hang guard, not a deadline
			t.Fatalf("%s did not return within 2 minutes of its context ending", name)
		}
	}
}
