package replicator_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/blob/dirblob"
	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/geotest/pgtest"
	"github.com/geoframework/geo/internal/testtype"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/replicator/transfer"
)

// failoverPair is a primary site on a throwaway cluster of its own and a
// secondary site whose read-only handle is a real streaming standby of it:
// what promotion needs, since pg_promote() acts on a standby.
type failoverPair struct {
	t       *testing.T
	log     *zap.Logger
	old     *pgtest.Cluster // the primary's PostgreSQL
	standby *pgtest.Cluster
	oldDB   *sqlx.DB
	sbyDB   *sqlx.DB // the secondary's standby; the new primary's after promotion

	oldStorage, secStorage *blob.Bucket
	creds                  transfer.Credentials
	oldPrimary             *replicator.Primary
	oldHTTP                *httptest.Server
	stopOld                func()
	app                    *testtype.App // the application on the old primary

	tracking *sqlx.DB
}

// newFailoverPair starts the primary's cluster, its standby, the primary
// site (transfer endpoint and Run) and the secondary's tracking database.
// It skips when no throwaway cluster can be started.
func newFailoverPair(t *testing.T) *failoverPair {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // a hang guard
	defer cancel()
	old, err := pgtest.StartCluster(ctx, pgtest.Options{Settings: pgtest.RewindSettings()}) // it may rejoin
	if err != nil {
		t.Fatalf("no throwaway cluster (needs initdb/pg_ctl: apt-get install postgresql): %v", err)
	}
	t.Cleanup(func() { _ = old.Stop() })
	f := &failoverPair{t: t, old: old, log: zap.NewNop()}
	if os.Getenv("GEO_VERBOSE") != "" {
		f.log = zaptest.NewLogger(t)
	}
	f.oldDB = openDB(t, old.URL("postgres"))
	require.NoError(t, registry.MigratePrimary(ctx, f.oldDB))
	_, err = f.oldDB.ExecContext(ctx, testtype.Schema("items"))
	require.NoError(t, err)
	f.standby, err = old.StartStandby(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.standby.Stop() })
	f.sbyDB = openDB(t, f.standby.URL("postgres"))

	dir := t.TempDir()
	f.oldStorage = openDir(t, filepath.Join(dir, "old-primary"))
	f.secStorage = openDir(t, filepath.Join(dir, "secondary"))
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	f.creds = transfer.Credentials{Site: "secondary-1", AccessKey: "failover-key", Secret: secret}
	items := &testtype.Type{TypeName: "item", Table: "items", DB: f.oldDB}
	f.oldPrimary, f.oldHTTP, f.stopOld = startPrimary(t, items, f.oldDB, f.oldStorage, f.creds, nil, f.log.Named("old-primary"))
	f.app = &testtype.App{Type: items, Storage: f.oldStorage, Publisher: f.oldPrimary.Publisher()}
	f.tracking = pg.NewDatabase(t)
	require.NoError(t, registry.MigrateTracking(ctx, f.tracking))
	return f
}

func openDB(t *testing.T, url string) *sqlx.DB {
	t.Helper()
	db, err := sqlx.Open("postgres", url)
	require.NoError(t, err)
	db.SetMaxOpenConns(20)
	t.Cleanup(func() { db.Close() })
	return db
}

func openDir(t *testing.T, root string) *blob.Bucket {
	t.Helper()
	b, err := dirblob.Open(root)
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	return b
}

// startPrimary runs a primary site over db and storage: NewPrimary, its Run
// and its transfer endpoint. stop ends both (idempotent).
func startPrimary(t *testing.T, s *testtype.Type, db *sqlx.DB, storage *blob.Bucket, creds transfer.Credentials,
	obs replicator.Observer, log *zap.Logger) (*replicator.Primary, *httptest.Server, func()) {
	t.Helper()
	set := replicator.NewSet()
	require.NoError(t, set.Register(s))
	p, err := replicator.NewPrimary(replicator.PrimaryConfig{Strategies: set, DB: db, Storage: storage,
		Secrets: transfer.NewStaticSecrets(creds), Logger: log, Observer: obs, PollInterval: 50 * time.Millisecond})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	srv := httptest.NewServer(p.Handler())
	var once sync.Once
	stop := func() {
		once.Do(func() {
			srv.Close()
			cancel()
			if err := <-done; err != nil {
				t.Logf("primary stopped: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return p, srv, stop
}

// runSecondary runs a secondary of the item type until the returned stop.
func runSecondary(t *testing.T, cfg replicator.SecondaryConfig) (*replicator.Secondary, func()) {
	t.Helper()
	sec, err := replicator.NewSecondary(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sec.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			require.NoError(t, <-done)
		})
	}
	t.Cleanup(stop)
	return sec, stop
}

func (f *failoverPair) secondaryConfig(tracking, primaryDB *sqlx.DB, url string, storage *blob.Bucket) replicator.SecondaryConfig {
	set := replicator.NewSet()
	require.NoError(f.t, set.Register(&testtype.Type{TypeName: "item", Table: "items", DB: primaryDB}))
	return replicator.SecondaryConfig{Strategies: set, Tracking: tracking, Primary: primaryDB, PrimaryURL: url,
		Credentials: f.creds, Storage: storage, Logger: f.log.Named("secondary"),
		PollInterval: 100 * time.Millisecond, EventPollInterval: 50 * time.Millisecond,
		Lease: geotest.TestLease, ShutdownGrace: 5 * time.Second, TransferTimeout: geotest.TestTransferTimeout,
		ConsistencyInterval: time.Hour, ChecksumWait: 200 * time.Millisecond}
}

// waitReplayed waits until the standby replayed everything the old
// primary wrote so far.
func (f *failoverPair) waitReplayed() {
	f.t.Helper()
	ctx := context.Background()
	var target string
	require.NoError(f.t, f.oldDB.GetContext(ctx, &target, `SELECT pg_current_wal_lsn()::text`))
	geotest.WaitFor(f.t, stall, "standby replays the primary's WAL", func() (bool, string) {
		var done bool
		var at string
		err := f.sbyDB.QueryRowContext(ctx, `SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn, pg_last_wal_replay_lsn()::text`, target).Scan(&done, &at)
		if err != nil {
			return false, err.Error()
		}
		return done, "replayed " + at + ", want " + target
	})
}

// counts returns the registry's rows of db: synced and verified, and all.
func registryCounts(t *testing.T, db *sqlx.DB) (verified, synced, all int) {
	t.Helper()
	require.NoError(t, db.QueryRowContext(context.Background(), `SELECT
  count(*) FILTER (WHERE state = 2 AND verification_state = 2), count(*) FILTER (WHERE state = 2), count(*)
FROM geo_registry`).Scan(&verified, &synced, &all))
	return verified, synced, all
}

// TestPromoteStandby runs an unplanned failover with real parts: the
// application writes on the primary while the secondary (reading a
// streaming standby) syncs; then, with the secondary stopped, records are
// created and one updated that the secondary never gets; the preflight
// must list exactly those as lost and stale and refuse; forced, Promote
// runs pg_promote() and keeps only the checksums this site verified; the
// primary side started on the promoted database with this site's storage
// recomputes only the others, serves a record written after the failover
// to a fresh secondary.
func TestPromoteStandby(t *testing.T) {
	t.Parallel()
	f := newFailoverPair(t)
	ctx := context.Background()

	// The application writes throughout the first sync.
	sec, stopSec := runSecondary(t, f.secondaryConfig(f.tracking, f.sbyDB, f.oldHTTP.URL, f.secStorage))
	var created []int64
	for i := range 40 {
		id, err := f.app.Create(ctx, 0, payload(i, 200+i*10))
		require.NoError(t, err)
		created = append(created, id)
	}
	f.waitReplayed()
	geotest.WaitFor(t, stall, "the secondary syncs and verifies every record", func() (bool, string) {
		v, s, n := registryCounts(t, f.tracking)
		lag, err := events.ReadLag(ctx, f.sbyDB, sec.EventStats().Cursor, time.Now())
		if err != nil {
			return false, err.Error()
		}
		return v == len(created) && lag.Events == 0, fmt.Sprintf("verified %d synced %d rows %d of %d; events behind %d", v, s, n, len(created), lag.Events)
	})
	stopSec()

	// Written on the primary while the secondary is down: lost (three
	// creates) and stale (an update) if the primary is lost now.
	var lost []int64
	for i := range 3 {
		id, err := f.app.Create(ctx, 0, payload(100+i, 300))
		require.NoError(t, err)
		lost = append(lost, id)
	}
	staleID := created[7]
	require.NoError(t, f.app.UpdateInPlace(ctx, staleID, payload(999, 321)))
	// The old primary checksums everything before it dies, so the
	// checksum step's counts are exact.
	geotest.WaitFor(t, stall, "the old primary checksums every record", func() (bool, string) {
		var n int
		require.NoError(t, f.oldDB.GetContext(ctx, &n, `SELECT count(*) FROM geo_checksums WHERE state = 2`))
		return n == len(created)+len(lost), fmt.Sprintf("%d of %d", n, len(created)+len(lost))
	})
	f.waitReplayed()

	cfg := replicator.PromoteConfig{Tracking: f.tracking, Standby: f.sbyDB, Logger: f.log.Named("promote")}
	rep, err := replicator.Preflight(ctx, cfg)
	require.NoError(t, err)
	require.True(t, rep.Standby.InRecovery, "standby in recovery")
	require.Empty(t, rep.ProcessesAlive, "the stopped secondary's heartbeat row is gone")
	require.Len(t, rep.Types, 1)
	tp := rep.Types[0]
	require.Equal(t, "item", tp.Replicable)
	require.EqualValues(t, len(created)+len(lost), tp.PrimaryRecords, "primary records")
	require.EqualValues(t, len(lost), tp.Lost, "lost")
	require.EqualValues(t, len(lost), tp.Untracked, "untracked")
	require.Equal(t, []replicator.PromoteRecord{{lost[0], "not tracked on this site"}, {lost[1], "not tracked on this site"}, {lost[2], "not tracked on this site"}}, tp.LostList)
	require.EqualValues(t, 1, tp.Stale, "stale")
	require.Equal(t, staleID, tp.StaleList[0].ID, "stale record")
	require.EqualValues(t, len(created)-1, tp.Verified, "verified with the primary's checksum")
	require.EqualValues(t, len(created)-1, tp.ChecksumsKeep, "checksums to keep")
	require.EqualValues(t, len(lost)+1, rep.Events.LagEvents, "events not applied")
	require.Len(t, rep.Events.Pending, len(lost)+1)
	require.Equal(t, replicator.PromoteEvent{Position: rep.Events.Pending[3].Position, Replicable: "item", Op: "updated", ModelID: staleID}, rep.Events.Pending[3])
	require.True(t, rep.Refused())
	require.Contains(t, rep.Reasons, "item: 3 records would be lost (no copy on this site: 3 untracked, 0 failed, 0 missing on the primary)")

	// Refused without Force; a forced dry run changes nothing either.
	_, err = replicator.Promote(ctx, cfg)
	require.ErrorIs(t, err, replicator.ErrPromotionRefused)
	dry := cfg
	dry.Force, dry.DryRun, dry.PromoteStandby = true, true, true
	_, err = replicator.Promote(ctx, dry)
	require.NoError(t, err)
	var inRecovery bool
	require.NoError(t, f.sbyDB.GetContext(ctx, &inRecovery, `SELECT pg_is_in_recovery()`))
	require.True(t, inRecovery, "still a standby after a refusal and a dry run")
	// Without PromoteStandby the tool leaves pg_promote() to the operator.
	manual := cfg
	manual.Force = true
	_, err = replicator.Promote(ctx, manual)
	require.ErrorIs(t, err, replicator.ErrStandbyInRecovery)

	// The primary is lost.
	f.stopOld()
	require.NoError(t, f.old.Stop())

	var regBefore []struct {
		ID  int64     `db:"model_id"`
		Sum string    `db:"verification_checksum"`
		At  time.Time `db:"verified_at"`
	}
	require.NoError(t, f.tracking.SelectContext(ctx, &regBefore, `SELECT model_id, verification_checksum, verified_at
FROM geo_registry WHERE state = 2 AND verification_state = 2 AND model_id <> $1 ORDER BY model_id`, staleID))
	forced := cfg
	forced.Force, forced.PromoteStandby = true, true
	rep, err = replicator.Promote(ctx, forced)
	require.NoError(t, err)
	require.True(t, rep.Promoted && rep.PromotedByTool, "promoted by pg_promote()")
	require.EqualValues(t, len(created)-1, rep.ChecksumsKept["item"], "checksums kept")
	require.EqualValues(t, len(lost)+1, rep.ChecksumsReset["item"], "checksums made pending")

	type ckRow struct {
		ID    int64     `db:"model_id"`
		State int16     `db:"state"`
		Gen   int64     `db:"gen"`
		Sum   *string   `db:"checksum"`
		At    time.Time `db:"verified_at"`
	}
	readCk := func() map[int64]ckRow {
		var rows []ckRow
		require.NoError(t, f.sbyDB.SelectContext(ctx, &rows, `SELECT model_id, state, gen, checksum, coalesce(verified_at, 'epoch') AS verified_at FROM geo_checksums`))
		m := map[int64]ckRow{}
		for _, r := range rows {
			m[r.ID] = r
		}
		return m
	}
	after := readCk()
	for _, r := range regBefore {
		ck := after[r.ID]
		require.Equal(t, int16(2), ck.State, "kept checksum %d: state", r.ID)
		require.NotNil(t, ck.Sum)
		require.Equal(t, r.Sum, *ck.Sum, "kept checksum %d: this site's verified checksum", r.ID)
		require.WithinDuration(t, r.At, ck.At, time.Millisecond, "kept checksum %d: verified_at is this site's", r.ID)
	}
	for _, id := range append([]int64{staleID}, lost...) {
		require.Equal(t, int16(0), after[id].State, "checksum of %d made pending", id)
		require.Nil(t, after[id].Sum, "checksum of %d cleared", id)
	}

	// The primary side starts on the promoted site with its own storage.
	newItems := &testtype.Type{TypeName: "item", Table: "items", DB: f.sbyDB}
	served := &geotest.TransferLog{}
	newPrimary, newHTTP, _ := startPrimary(t, newItems, f.sbyDB, f.secStorage, f.creds, served, f.log.Named("new-primary"))
	geotest.WaitFor(t, stall, "the new primary computes the reset checksums", func() (bool, string) {
		now := readCk()
		settled := 0
		for _, id := range append([]int64{staleID}, lost...) {
			if s := now[id].State; s == 2 || s == 3 {
				settled++
			}
		}
		return settled == len(lost)+1, fmt.Sprintf("%d of %d settled", settled, len(lost)+1)
	})
	now := readCk()
	for _, r := range regBefore {
		require.Equal(t, after[r.ID], now[r.ID], "kept checksum %d recomputed", r.ID)
	}
	for _, id := range lost {
		require.Equal(t, int16(3), now[id].State, "checksum of lost record %d: failed (its bytes are not here)", id)
	}
	require.Equal(t, int16(2), now[staleID].State, "checksum of the stale record: this site's bytes")

	// Written after the failover, and served to a fresh secondary.
	newApp := &testtype.App{Type: newItems, Storage: f.secStorage, Publisher: newPrimary.Publisher()}
	data := payload(4242, 777)
	newID, err := newApp.Create(ctx, 0, data)
	require.NoError(t, err)
	tracking2 := pg.NewDatabase(t)
	require.NoError(t, registry.MigrateTracking(ctx, tracking2))
	storage2 := openDir(t, filepath.Join(t.TempDir(), "secondary-2"))
	cfg2 := f.secondaryConfig(tracking2, f.sbyDB, newHTTP.URL, storage2)
	cfg2.ConsistencyInterval = 0
	_, _ = runSecondary(t, cfg2)
	geotest.WaitFor(t, stall, "a fresh secondary of the new primary syncs every record it has", func() (bool, string) {
		v, s, n := registryCounts(t, tracking2)
		var missing int
		require.NoError(t, tracking2.GetContext(ctx, &missing, `SELECT count(*) FROM geo_registry WHERE state = 3 AND missing_on_primary`))
		want := len(created) + 1 // the lost three fail: missing on the new primary
		return s == want && missing == len(lost), fmt.Sprintf("verified %d synced %d rows %d missing on the primary %d, want %d synced, %d missing", v, s, n, missing, want, len(lost))
	})
	key, err := newItems.BlobKey(ctx, newID)
	require.NoError(t, err)
	r, err := storage2.Open(ctx, key)
	require.NoError(t, err)
	got, err := io.ReadAll(r)
	r.Close()
	require.NoError(t, err)
	require.Equal(t, data, got, "the record written after the failover")
	require.GreaterOrEqual(t, served.Count("item", newID), 1, "served by the new primary")
	row, err := registry.NewStore(tracking2, registry.Options{})
	require.NoError(t, err)
	lr, err := row.Get(ctx, "item", lost[0])
	require.NoError(t, err)
	require.True(t, lr.MissingOnPrimary, "a lost record is missing on the new primary")

}
