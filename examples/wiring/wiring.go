// Package wiring is the whole wiring of a primary site and a secondary
// site, as the README shows it: [RunPrimary] beside the application on the
// primary, [RunSecondary] on each secondary, for the type of uploads
// (examples/upload). Its test runs both against a real PostgreSQL and
// checks that the secondary becomes an exact copy, and that the code
// blocks of the README and of [Adding a blob type] are excerpts of files
// that compile (this one among them).
//
// [Adding a blob type]: https://github.com/geoframework/geo/blob/main/docs/adding-a-blob-type.md
package wiring

import (
	"context"
	"net/http"

	"github.com/jmoiron/sqlx"

	"github.com/geoframework/geo/blob/dirblob"
	"github.com/geoframework/geo/examples/upload"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/replicator/transfer"
)

// README: begin

// RunPrimary runs on the primary, beside the application: db is its database, root its files.
func RunPrimary(ctx context.Context, db *sqlx.DB, root string, secrets transfer.Secrets, mux *http.ServeMux) error {
	if err := registry.MigratePrimary(ctx, db); err != nil { // the outbox and the checksums
		return err
	}
	files, err := dirblob.Open(root) // or cloudblob.OpenBucket(ctx, "s3://...")
	if err != nil {
		return err
	}
	defer files.Close()
	set := replicator.NewSet()
	set.MustRegister(&upload.Strategy{DB: db}) // every type, unscoped
	p, err := replicator.NewPrimary(replicator.PrimaryConfig{Strategies: set, DB: db, Storage: files, Secrets: secrets})
	if err != nil {
		return err
	}
	mux.Handle(transfer.TransferPathPrefix, p.Handler()) // the transfer endpoint: serve it over TLS
	// The application publishes in its own transactions: p.Publisher().Publish(ctx, tx, ...).
	return p.Run(ctx) // checksums, outbox retention
}

// RunSecondary runs on a secondary: replica is a standby of the primary's database.
func RunSecondary(ctx context.Context, replica, tracking *sqlx.DB, root, primaryURL string, creds transfer.Credentials) error {
	if err := registry.MigrateTracking(ctx, tracking); err != nil { // the registry
		return err
	}
	files, err := dirblob.Open(root) // this site's copies
	if err != nil {
		return err
	}
	defer files.Close()
	set := replicator.NewSet()
	set.MustRegister(&upload.Strategy{DB: replica}) // the same types; a scope here is selective sync
	s, err := replicator.NewSecondary(replicator.SecondaryConfig{Strategies: set, Tracking: tracking,
		Primary: replica, PrimaryURL: primaryURL, Credentials: creds, Storage: files})
	if err != nil {
		return err
	}
	return s.Run(ctx) // backfill, events, syncs, verification, until ctx ends
}

// README: end
