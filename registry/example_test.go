package registry_test

import (
	"context"
	"fmt"
	"log"

	"github.com/jmoiron/sqlx"

	"github.com/geoframework/geo/registry"
)

// An operator's tool: migrate the tracking database, look at one type's
// failures, and resync the failed rows in batches with a progress line.
func Example() {
	ctx := context.Background()
	db, err := sqlx.Open("postgres", "postgres://localhost/geo_tracking?search_path=geo&binary_parameters=yes")
	if err != nil {
		log.Fatal(err)
	}
	if err := registry.MigrateTracking(ctx, db); err != nil {
		log.Fatal(err)
	}
	store, err := registry.NewStore(db, registry.Options{})
	if err != nil {
		log.Fatal(err)
	}
	top, err := store.TopFailures(ctx, []string{"package_file"}, 5, 1000)
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range top["package_file"].Sync {
		fmt.Printf("%6d  %s\n", r.Count, r.Reason)
	}
	p, err := store.ResyncBatches(ctx, "package_file", registry.BatchOptions{
		OnlyFailed: true,
		Progress: func(p registry.BatchProgress) error {
			fmt.Printf("resynced %d rows (up to id %d)\n", p.Changed, p.After)
			return nil
		},
	})
	if err != nil {
		log.Fatalf("resync stopped after id %d: %v", p.After, err)
	}
}
