package replicator_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/geoframework/geo/blob/dirblob"
	"github.com/geoframework/geo/examples/upload"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/replicator/transfer"
)

// The primary site, beside the application: migrate geo's tables in the
// application's database, register the types, serve the transfer
// endpoint (over TLS) and run the primary's checksums and outbox
// retention. The application publishes its events with p.Publisher() in
// its own transactions.
func ExampleNewPrimary() {
	ctx := context.Background()
	db, err := sqlx.Open("postgres", "postgres://app@primary-db/app?binary_parameters=yes")
	if err != nil {
		log.Fatal(err)
	}
	if err := registry.MigratePrimary(ctx, db); err != nil {
		log.Fatal(err)
	}
	files, err := dirblob.Open("/srv/app/files")
	if err != nil {
		log.Fatal(err)
	}
	defer files.Close()

	set := replicator.NewSet()
	set.MustRegister(&upload.Strategy{DB: db})    // the primary's adapter: no scope
	secret := []byte(os.Getenv("GEO_EU1_SECRET")) // at least transfer.SecretSizeMin random bytes
	p, err := replicator.NewPrimary(replicator.PrimaryConfig{
		Strategies: set,
		DB:         db,
		Storage:    files,
		Secrets:    transfer.NewStaticSecrets(transfer.Credentials{Site: "eu-1", AccessKey: "eu-1", Secret: secret}),
	})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(transfer.TransferPathPrefix, p.Handler())
	go func() { log.Fatal(http.ListenAndServeTLS(":8443", "cert.pem", "key.pem", mux)) }()
	if err := p.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
}

// A secondary site: its own tracking database (migrated here), a
// read-only handle to the primary's database (a streaming standby), its
// own storage, and the credentials the primary knows it by. Run backfills,
// follows the events, syncs, verifies and repairs until ctx ends; run as
// many processes on one tracking database as you like.
func ExampleNewSecondary() {
	ctx := context.Background()
	tracking, err := sqlx.Open("postgres", "postgres://geo@eu1-db/geo_tracking?binary_parameters=yes")
	if err != nil {
		log.Fatal(err)
	}
	if err := registry.MigrateTracking(ctx, tracking); err != nil {
		log.Fatal(err)
	}
	replica, err := sqlx.Open("postgres", "postgres://geo_ro@eu1-standby/app?binary_parameters=yes&sslmode=verify-full")
	if err != nil {
		log.Fatal(err)
	}
	files, err := dirblob.Open("/srv/geo/files")
	if err != nil {
		log.Fatal(err)
	}
	defer files.Close()

	set := replicator.NewSet()
	// The same type names as the primary's; a scope here is selective sync.
	set.MustRegister(&upload.Strategy{DB: replica, ModelTypes: []string{"Project"}})
	s, err := replicator.NewSecondary(replicator.SecondaryConfig{
		Strategies:  set,
		Tracking:    tracking,
		Primary:     replica,
		PrimaryURL:  "https://primary.example.com",
		Credentials: transfer.Credentials{Site: "eu-1", AccessKey: "eu-1", Secret: []byte(os.Getenv("GEO_EU1_SECRET"))},
		Storage:     files,
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := s.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
}

// A configuration geo refuses fails at start-up with an error matching
// ErrInvalidConfig that names the field; a zero field takes its named
// default (LeaseDefault here). NewSecondary checks the fields before it
// uses a database, so this example runs without one.
func ExampleSecondaryConfig() {
	tracking, _ := sqlx.Open("postgres", "postgres://localhost/geo_tracking") // opens no connection yet
	replica, _ := sqlx.Open("postgres", "postgres://localhost/app")
	root, err := os.MkdirTemp("", "geo-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(root)
	files, err := dirblob.Open(root)
	if err != nil {
		log.Fatal(err)
	}
	defer files.Close()
	set := replicator.NewSet()
	set.MustRegister(&upload.Strategy{DB: replica})
	cfg := replicator.SecondaryConfig{
		Strategies: set, Tracking: tracking, Primary: replica, Storage: files,
		PrimaryURL:  "https://primary.example.com",
		Credentials: transfer.Credentials{Site: "eu-1", AccessKey: "eu-1", Secret: make([]byte, transfer.SecretSizeMin)},
		Lease:       500 * time.Millisecond,
	}
	_, err = replicator.NewSecondary(cfg)
	fmt.Println(errors.Is(err, replicator.ErrInvalidConfig))
	fmt.Println(err)
	fmt.Println(replicator.LeaseDefault)
	// Output:
	// true
	// replicator: invalid configuration: SecondaryConfig.Lease 500ms is below the 1s minimum
	// 30s
}
