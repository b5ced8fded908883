package gitrepo_test

import (
	"context"
	"errors"
	"log"
	"net/http"

	"github.com/geoframework/geo/internal/gitrepo"
)

// The primary serves one repository per request, behind the engine's own
// token check, and checksums repositories for its verification.
func ExampleServer_Serve() {
	ctx := context.Background()
	g, err := gitrepo.New(ctx, nil)
	if err != nil {
		log.Fatal(err) // errors.Is(err, gitrepo.ErrGitMissing): apt-get install git
	}
	srv, err := gitrepo.NewServer(g, "/srv/primary/repositories", nil)
	if err != nil {
		log.Fatal(err)
	}
	http.HandleFunc("/geo/v1/repos/{replicable}/{id}/git/", func(w http.ResponseWriter, r *http.Request) {
		// The engine checks the token (bound to replicable and id) and
		// resolves the record to its repository path; then:
		relPath := "@hashed/ab/cd/1.git"
		srv.Serve(w, r, relPath)
	})
	sum, err := srv.Checksum(ctx, "@hashed/ab/cd/1.git")
	_, _ = sum, err
}

// The secondary skips the download when its copy already verifies, else
// fetches into a stage outside any lock and commits it under the row lock.
func ExampleStore_Fetch() {
	ctx := context.Background()
	g, err := gitrepo.New(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	store, err := gitrepo.OpenStore(ctx, g, "/srv/secondary/repositories", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	const relPath = "@hashed/ab/cd/1.git"
	primarySum := "…" // the primary's stored checksum
	if store.Verify(ctx, relPath, primarySum, gitrepo.VerifyConnectivity) == nil {
		return // synced without a download
	}
	st, err := store.Fetch(ctx, gitrepo.FetchParams{
		RelPath:       relPath,
		URL:           "https://primary.example.com/geo/v1/repos/project_repository/1/git",
		Authorization: "Bearer <token>",
	})
	if err != nil {
		log.Fatal(err)
	}
	if st.Checksum() != primarySum {
		st.Abort() // R6: a mismatch is a failure
		return
	}
	// Under the row lock, with the claim still current:
	if err := st.Commit(ctx); errors.Is(err, gitrepo.ErrStale) {
		return // the copy changed meanwhile: sync again
	} else if err != nil {
		log.Fatal(err)
	}
}
