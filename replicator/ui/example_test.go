package ui_test

import (
	"log"
	"net/http"

	"github.com/jmoiron/sqlx"

	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/replicator/ui"
)

// The status page mounted on a secondary application's own mux, under
// /admin/geo/, behind the application's login; actions only for its
// admins. The health endpoints are under the same prefix.
func ExampleNew() {
	var (
		tracking *sqlx.DB              // the secondary's tracking database
		replica  *sqlx.DB              // a read-only handle to the primary's database
		sec      *replicator.Secondary // the secondary running in this process
	)
	// The application's own authentication and roles.
	requireLogin := func(h http.Handler) http.Handler { return h }
	isAdmin := func(r *http.Request) bool { return r.Header.Get("X-Role") == "admin" }

	page, err := ui.New(ui.Config{
		Tracking:  tracking,
		Primary:   replica,
		Authorize: isAdmin,
		Waker:     sec,
		Title:     "geo · eu-west",
	})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/admin/geo/", requireLogin(http.StripPrefix("/admin/geo", page)))
	log.Fatal(http.ListenAndServe(":8080", mux))
}
