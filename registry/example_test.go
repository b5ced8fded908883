package registry_test

import (
	"context"
	"log"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
)

// A sync worker's loop body: claim due rows, sync each, settle it. The
// settle publishes the staged bytes under the row lock, or reports that the
// claim went stale (the record changed or was deleted meanwhile).
func Example() {
	ctx := context.Background()
	db, err := sqlx.Open("postgres", "postgres://localhost/geo_tracking?search_path=geo&binary_parameters=yes")
	if err != nil {
		log.Fatal(err)
	}
	if err := registry.MigrateTracking(ctx, db); err != nil {
		log.Fatal(err)
	}
	store, err := regstore.NewStore(db, regstore.Options{})
	if err != nil {
		log.Fatal(err)
	}
	owner := "host-a:1234:worker" // unique per live process
	claims, err := store.Claim(ctx, regstore.ClaimParams{Lease: regstore.Lease{Owner: owner, Duration: 30*time.Second}, Limits: []regstore.TypeLimit{{Replicable: "package_file", Limit: 100}}})
	if err != nil {
		log.Fatal(err)
	}
	for _, c := range claims {
		// ... download record c.ModelID into a staging file, hashing it ...
		res := regstore.SyncedResult{BlobKey: "packages/1/file.tgz", Size: 42, Checksum: "ab12..."}
		ok, err := store.SettleSynced(ctx, owner, c, res, func(ctx context.Context) error {
			return nil // rename the staging file to res.BlobKey and fsync
		})
		switch {
		case err != nil:
			_, _ = store.SettleFailed(ctx, owner, c, err.Error(), false)
		case !ok:
			// stale claim: remove the staging file; the row syncs again
		}
	}
}
