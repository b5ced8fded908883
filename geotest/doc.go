// Package geotest is the conformance suite an adopter runs for a new blob
// type, and the two-site test world it stands on.
//
// An adopter's whole test for a new type is one call of [RunBlobStrategy]
// from its own _test.go file:
//
//	func TestConformance(t *testing.T) {
//		geotest.RunBlobStrategy(t, geotest.Harness{
//			Setup:    myapp.CreateSchema,
//			Strategy: func(db *sqlx.DB) strategy.BlobStrategy { return &myapp.Strategy{DB: db} },
//			Create:   ..., Update: ..., Delete: ..., // the application's own code paths
//		})
//	}
//
// The suite builds everything itself against real parts: PostgreSQL (the
// server named by GEO_TEST_DATABASE_URL, or a throwaway cluster started
// with initdb and pg_ctl; see geotest/pgtest), a primary and a tracking
// database, the primary's transfer endpoint on loopback, and storage
// directories. Each subtest is named after the contract clause it checks
// ("adapter/ids_ascending_and_paged", "races/R1_update_during_sync"...)
// and fails with "clause: got X, want Y". Run it with -race.
//
// The suite is meant for the adopter's CI, which is often a loaded
// machine, so its waits are tied to progress, not to wall time: a wait
// fails when what it watches shows no change for [Harness].Stall
// ([StallDefault], a minute), and a clause that keeps progressing runs on
// until its watchdog, Harness.Timeout ([ClauseTimeoutDefault], 10
// minutes), which fails a hung clause instead of hanging CI. [WaitFor]
// gives the adopter's own tests the same kind of wait.
//
// Object storage. By default both sites keep their blobs in directories.
// Harness.Storage (and WorldConfig.Storage) puts either site, or both, in
// a bucket on an S3 server instead: a throwaway versitygw started by
// geotest/s3test, or the bucket named by GEO_TEST_S3_URL. Run the suite in
// each pairing an adopter deploys, for instance every one of
// ObjectStorage():
//
//	for _, st := range geotest.ObjectStorage() {
//		t.Run(st.String(), func(t *testing.T) {
//			h := harness // as above
//			h.Storage = st
//			geotest.RunBlobStrategy(t, h)
//		})
//	}
//
// A content-addressed type, whose keys are shared by records with equal
// bytes and come back after a delete, sets Harness.KeysMayCollide: the
// keys/* clauses then check that equal bytes give equal keys, and that a
// key shared by two records, reused after a delete or swapped between
// records never loses a file (examples/lfs). Without it they skip.
//
// [World], [World.Compare], [CompareSites] and [WaitFor] are the same kit
// geo's own tests use, exported for adopters who want scenario tests of
// their own: [WorldConfig].WrapPrimary counts, holds or fails transfers at
// the primary, PrimaryNow sets the primary's clock, Logger captures both
// sites' logs, and a [Diff] tells a record that never arrived from one
// whose stale copy was kept.
//
// geotest is for tests; it is not a production component.
package geotest
