package geotest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/geotest/pgtest"
	"github.com/geoframework/geo/geotest/s3test"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/strategy"
)

// App is what the harness's application functions get: the primary's
// database, its blob storage, and the publisher to call inside the same
// transaction as the application's own change.
type App struct {
	DB        *sqlx.DB
	Storage   *blob.Bucket
	Publisher *events.Publisher
}

// Harness describes an adopter's blob type to the conformance suite: the
// adapter, and the application's own code paths that create, update and
// delete a record on the primary. Functions marked required must be set;
// optional ones turn on more clauses.
type Harness struct {
	// Setup creates the application's tables in a fresh primary database.
	// Required.
	Setup func(ctx context.Context, db *sqlx.DB) error
	// Strategy returns the adapter reading db: the primary's database on
	// the primary, a read-only handle to it on the secondary. Required.
	Strategy func(db *sqlx.DB) strategy.BlobStrategy
	// Create stores a new record holding data and publishes its created
	// event in the same transaction; it returns the record's id. Required.
	Create func(ctx context.Context, app App, data []byte) (int64, error)
	// Update replaces record id's bytes with data and publishes an updated
	// event. Nil declares the type immutable: the update clauses skip.
	Update func(ctx context.Context, app App, id int64, data []byte) error
	// Delete removes record id and publishes a deleted event carrying the
	// blob key, and removes its bytes unless another record still names
	// them (KeysMayCollide). Required.
	Delete func(ctx context.Context, app App, id int64) error
	// KeysMayCollide declares that the type's keys may be shared by
	// records with equal bytes and reused after a delete (a
	// content-addressed layout: LFS objects at their oid, registry blobs
	// at their digest). The suite then checks that equal bytes give equal
	// keys and different bytes different keys (records naming one key at
	// the same time name the same bytes), and runs the keys/* clauses:
	// a key shared by two records, reused after a delete, and swapped
	// between records. False (keys distinct for distinct records, never
	// reused) skips them and checks instead that keys are distinct.
	KeysMayCollide bool
	// ScopedStrategy returns the adapter narrowed to a scope (selective
	// sync), and CreateOutOfScope stores a record outside that scope. Both
	// nil: the scope clause skips.
	ScopedStrategy   func(db *sqlx.DB) strategy.BlobStrategy
	CreateOutOfScope func(ctx context.Context, app App, data []byte) (int64, error)
	// Server provides PostgreSQL; nil means one for this run
	// (GEO_TEST_DATABASE_URL or a throwaway cluster).
	Server *pgtest.Server
	// Storage chooses where each site keeps its blobs in every clause's
	// World (WorldConfig.Storage): directories by default; ObjectStorage
	// lists the pairings with S3. S3 provides the S3 server; nil means one
	// for this run (a throwaway versitygw or GEO_TEST_S3_URL).
	Storage Storage
	S3      *s3test.Server
	// Timeout bounds each clause (the watchdog): a hang guard, not a
	// deadline a slow machine must meet. 0 means ClauseTimeoutDefault.
	Timeout time.Duration
	// Stall fails a wait within a clause whose condition shows no
	// progress (it reports no state it has not reported before) for this long; a
	// wait that keeps progressing runs on until the clause's Timeout. 0
	// means StallDefault.
	Stall time.Duration
}

// ClauseTimeoutDefault is Harness.Timeout's default: long enough that a
// clause progressing on a loaded 2-core CI runner (several test packages
// at once, -race) is never cut, short enough that a hung one ends the run.
const ClauseTimeoutDefault = 10 * time.Minute

// StallDefault is Harness.Stall's default: the longest a wait accepts no
// visible change, on a loaded machine, before it fails the clause.
const StallDefault = time.Minute

// T is the part of *testing.T the suite uses. It is a seam: the suite's own
// tests run it with a double to check that broken adapters fail the right
// clause.
type T interface {
	TB
	Name() string
	// Run runs f as a subtest named name, like (*testing.T).Run.
	Run(name string, f func(t T)) bool
}

// RunBlobStrategy runs the conformance suite for the blob type described
// by h against real PostgreSQL, a real HTTP transfer endpoint on loopback
// and real files. Each subtest is named after the contract clause it
// checks; a failure reads "clause: got X, want Y". Call it from a test in
// the adopter's own package, and run that test with -race.
func RunBlobStrategy(t *testing.T, h Harness) {
	t.Helper()
	Run(testingT{t}, h)
}

// Run is RunBlobStrategy over the T seam.
func Run(t T, h Harness) {
	t.Helper()
	if h.Setup == nil || h.Strategy == nil || h.Create == nil || h.Delete == nil {
		t.Fatalf("geotest: Harness needs Setup, Strategy, Create and Delete")
		return
	}
	if h.Server == nil {
		h.Server = pgtest.New(pgtest.Options{})
		t.Cleanup(func() { _ = h.Server.Stop() })
	}
	if h.Storage.UsesS3() && h.S3 == nil {
		h.S3 = s3test.New()
		t.Cleanup(func() { _ = h.S3.Stop() })
	}
	if h.Timeout == 0 {
		h.Timeout = ClauseTimeoutDefault
	}
	if h.Stall == 0 {
		h.Stall = StallDefault
	}
	s := &suite{h: h}
	for _, c := range []struct {
		name string
		f    func(c *clause)
	}{
		{"adapter/ids_ascending_and_paged", s.idsAscendingAndPaged},
		{"adapter/not_found_after_delete", s.notFoundAfterDelete},
		{"adapter/keys_valid_and_stable", s.keysValidAndStable},
		{"adapter/batch_keys_agree", s.batchKeysAgree},
		{"sync/created", s.created},
		{"sync/updated", s.updated},
		{"sync/deleted", s.deleted},
		{"backfill/preexisting_records", s.backfill},
		{"consistency/orphans_removed", s.orphans},
		{"scope/respected", s.scope},
		{"failure/missing_on_primary", s.missingOnPrimary},
		{"integrity/corruption_in_transit_rejected", s.corruptInTransit},
		{"integrity/corruption_at_rest_repaired", s.corruptAtRest},
		{"integrity/verified_against_primary_checksum", s.verifiedAgainstPrimaryChecksum},
		{"blobs/empty", s.empty},
		{"blobs/large", s.large},
		{"retries/backoff_grows", s.backoffGrows},
		{"races/R1_update_during_sync", s.updateDuringSync},
		{"races/R2_delete_during_sync", s.deleteDuringSync},
		{"keys/equal_bytes_equal_keys", s.equalBytesEqualKeys},
		{"keys/shared_by_two_records", s.sharedByTwoRecords},
		{"keys/reused_after_delete", s.reusedAfterDelete},
		{"keys/swap", s.swap},
	} {
		c := c
		t.Run(c.name, func(t T) { s.run(t, c.name, c.f) })
	}
}

type suite struct{ h Harness }

// clauseCtx is what every conformance clause has, blob or repository:
// the T to report on, the clause's name for messages, a context ending at
// the clause's deadline, and the Stall its waits allow.
type clauseCtx struct {
	T
	name  string
	ctx   context.Context
	stall time.Duration
}

// failf fails the clause with "clause: got X, want Y" style messages.
func (c *clauseCtx) failf(format string, args ...any) {
	c.Helper()
	c.Fatalf("%s: %s", c.name, fmt.Sprintf(format, args...))
}

func (c *clauseCtx) check(err error, what string) {
	c.Helper()
	if err != nil {
		c.failf("%s: %v", what, err)
	}
}

// waitFor waits until cond holds; it fails the clause when cond gives no
// explanation it has not given before for the Stall (no progress), or at
// the clause's deadline.
func (c *clauseCtx) waitFor(what string, cond func() (bool, string)) {
	c.Helper()
	// Stop waiting a little before the clause's deadline, so the last look
	// at the state (in the failure message) still has a live context.
	deadline, _ := c.ctx.Deadline()
	limit := max(time.Until(deadline)-5*time.Second, time.Second)
	if err := eventually(c.stall, limit, true, cond); err != nil {
		c.failf("%s: %v", what, err)
	}
}

// runClause executes one clause under a watchdog: its context ends after
// timeout (every wait in the suites honours it), and if the clause is
// still running a minute later the process panics with the clause's name
// rather than hang CI.
func runClause(t T, name string, timeout, stall time.Duration, f func(c clauseCtx)) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-done:
		case <-time.After(timeout + time.Minute):
			panic(fmt.Sprintf("geotest: clause %s hung past its watchdog (%v)", name, timeout))
		}
	}()
	f(clauseCtx{T: t, name: name, ctx: ctx, stall: stall})
}

// clause is one blob clause's context.
type clause struct {
	clauseCtx
	h Harness
}

func (s *suite) run(t T, name string, f func(c *clause)) {
	runClause(t, name, s.h.Timeout, s.h.Stall, func(cc clauseCtx) { f(&clause{clauseCtx: cc, h: s.h}) })
}

// world builds a fresh primary for the clause.
func (c *clause) world() (*World, App) {
	c.Helper()
	w := NewWorld(c, WorldConfig{
		Server:     c.h.Server,
		Storage:    c.h.Storage,
		S3:         c.h.S3,
		Setup:      c.h.Setup,
		Strategies: func(db *sqlx.DB) []strategy.BlobStrategy { return []strategy.BlobStrategy{c.h.Strategy(db)} },
	})
	return w, App{DB: w.PrimaryDB, Storage: w.PrimaryStorage, Publisher: w.Primary.Publisher()}
}

// secondaryConfig is a secondary whose consistency pass runs only when
// triggered, so event-driven clauses prove the events path.
func (c *clause) secondaryConfig(w *World, s strategy.BlobStrategy) replicator.SecondaryConfig {
	cfg := w.SecondaryConfig(s)
	cfg.ConsistencyInterval = time.Hour
	return cfg
}

// synced waits until record id is synced with bytes equal to want.
func (c *clause) waitSynced(w *World, sec strategy.BlobStrategy, id int64, want []byte) {
	c.Helper()
	wantSum := sum(want)
	c.waitFor(fmt.Sprintf("record %d synced", id), func() (bool, string) {
		got, state := c.secondaryBytes(w, sec, id)
		if state != registry.StateSynced.String() {
			return false, fmt.Sprintf("got state %s, want synced", state)
		}
		if sum(got) != wantSum {
			return false, fmt.Sprintf("got %d bytes sha %.12s, want %d bytes sha %.12s", len(got), sum(got), len(want), wantSum)
		}
		return true, ""
	})
}

// secondaryBytes returns the secondary's copy of id and its row state.
func (c *clause) secondaryBytes(w *World, sec strategy.BlobStrategy, id int64) ([]byte, string) {
	store, _ := registry.NewStore(w.TrackingDB, registry.Options{})
	row, err := store.Get(c.ctx, sec.Name(), id)
	if err != nil {
		return nil, "no row (" + err.Error() + ")"
	}
	key, err := sec.BlobKey(c.ctx, id)
	if err != nil {
		return nil, "key: " + err.Error()
	}
	r, err := w.SecondaryStorage.Open(c.ctx, key)
	if err != nil {
		return nil, row.State.String() + " without file"
	}
	defer r.Close()
	b, _ := io.ReadAll(r)
	return b, row.State.String()
}

// waitGone waits until record id has no row on the secondary and nothing
// at key.
func (c *clause) waitGone(w *World, name string, id int64, key string) {
	c.Helper()
	store, _ := registry.NewStore(w.TrackingDB, registry.Options{})
	c.waitFor(fmt.Sprintf("record %d removed from the secondary", id), func() (bool, string) {
		_, err := store.Get(c.ctx, name, id)
		if err == nil {
			return false, "got a registry row, want none"
		}
		if _, err := w.SecondaryStorage.Stat(c.ctx, key); err == nil {
			return false, "got a file at " + key + ", want none"
		}
		return true, ""
	})
}

func (c *clause) converged(w *World, sec strategy.BlobStrategy) {
	c.Helper()
	c.waitFor("secondary is an exact copy", func() (bool, string) {
		d, err := w.Compare(c.ctx, sec)
		if err != nil {
			return false, err.Error()
		}
		return d.OK(), "got " + d.String() + ", want no difference"
	})
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// data returns n deterministic bytes that differ by seed.
func data(seed, n int) []byte {
	b := make([]byte, n)
	x := uint32(seed*2654435761 + 1)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// --- adapter clauses ---

func (s *suite) idsAscendingAndPaged(c *clause) {
	w, app := c.world()
	var created []int64
	for i := 0; i < 25; i++ {
		id, err := c.h.Create(c.ctx, app, data(i, 10))
		c.check(err, "create")
		created = append(created, id)
	}
	st := c.h.Strategy(w.PrimaryDB)
	var all []int64
	var after int64
	for pages := 0; ; pages++ {
		ids, err := st.IDs(c.ctx, after, 10)
		c.check(err, "IDs")
		if len(ids) > 10 {
			c.failf("IDs(after=%d, limit=10) returned %d ids, want at most 10", after, len(ids))
		}
		for i, id := range ids {
			if id <= after || (i > 0 && id <= ids[i-1]) {
				c.failf("IDs(after=%d, limit=10) = %v: got id %d out of order, want strictly ascending ids greater than after", after, ids, id)
			}
		}
		all = append(all, ids...)
		if len(ids) < 10 || pages > 10 {
			break
		}
		after = ids[len(ids)-1]
	}
	sort.Slice(created, func(i, j int) bool { return created[i] < created[j] })
	if fmt.Sprint(all) != fmt.Sprint(created) {
		c.failf("paging through IDs: got %v, want the created ids %v", all, created)
	}
	one, err := st.IDs(c.ctx, 0, 1)
	c.check(err, "IDs")
	if len(one) != 1 || one[0] != created[0] {
		c.failf("IDs(after=0, limit=1): got %v, want [%d]", one, created[0])
	}
	none, err := st.IDs(c.ctx, created[len(created)-1], 10)
	c.check(err, "IDs")
	if len(none) != 0 {
		c.failf("IDs(after=last id): got %v, want none", none)
	}
}

func (s *suite) notFoundAfterDelete(c *clause) {
	w, app := c.world()
	id, err := c.h.Create(c.ctx, app, data(1, 10))
	c.check(err, "create")
	st := c.h.Strategy(w.PrimaryDB)
	if _, err := st.BlobKey(c.ctx, id); err != nil {
		c.failf("BlobKey(%d) of an existing record: got error %v, want a key", id, err)
	}
	c.check(c.h.Delete(c.ctx, app, id), "delete")
	if _, err := st.BlobKey(c.ctx, id); !errors.Is(err, strategy.ErrNotFound) {
		c.failf("BlobKey(%d) after delete: got error %v, want one matching strategy.ErrNotFound", id, err)
	}
	if _, err := st.BlobKey(c.ctx, id+1_000_000); !errors.Is(err, strategy.ErrNotFound) {
		c.failf("BlobKey(%d) of an id never created: got error %v, want one matching strategy.ErrNotFound", id+1_000_000, err)
	}
}

func (s *suite) keysValidAndStable(c *clause) {
	w, app := c.world()
	st := c.h.Strategy(w.PrimaryDB)
	seen := map[string]int64{}
	for i := 0; i < 10; i++ {
		id, err := c.h.Create(c.ctx, app, data(i, 10))
		c.check(err, "create")
		k1, err := st.BlobKey(c.ctx, id)
		c.check(err, "BlobKey")
		if err := strategy.ValidateKey(k1); err != nil {
			c.failf("BlobKey(%d) = %q: got an invalid key (%v), want a relative slash-separated key", id, k1, err)
		}
		k2, err := st.BlobKey(c.ctx, id)
		c.check(err, "BlobKey")
		if k1 != k2 {
			c.failf("BlobKey(%d) twice: got %q then %q, want the same key", id, k1, k2)
		}
		// Records of a type whose keys cannot collide have distinct keys;
		// keys/equal_bytes_equal_keys checks the other kind.
		if other, dup := seen[k1]; dup && !c.h.KeysMayCollide {
			c.failf("BlobKey: records %d and %d got the same key %q, want distinct keys (or Harness.KeysMayCollide)", other, id, k1)
		}
		seen[k1] = id
		if _, err := app.Storage.Stat(c.ctx, k1); err != nil {
			c.failf("record %d's bytes at its key %q on the primary: got %v, want the bytes Create stored", id, k1, err)
		}
	}
	if st.Name() != c.h.Strategy(w.PrimaryDB).Name() {
		c.failf("Name: got %q then %q, want a stable name", st.Name(), c.h.Strategy(w.PrimaryDB).Name())
	}
}

// batchKeysAgree checks the optional strategy.BatchKeyer: BlobKeys gives
// every record BlobKey gives a key for, that same key, and leaves out
// deleted records, ids never created and (when the harness has a scope)
// records out of scope.
func (s *suite) batchKeysAgree(c *clause) {
	w, app := c.world()
	st := c.h.Strategy(w.PrimaryDB)
	if _, ok := st.(strategy.BatchKeyer); !ok {
		c.Skip("the strategy does not implement strategy.BatchKeyer")
		return
	}
	var ids []int64
	for i := range 5 {
		id, err := c.h.Create(c.ctx, app, data(i, 10))
		c.check(err, "create")
		ids = append(ids, id)
	}
	c.check(c.h.Delete(c.ctx, app, ids[2]), "delete")
	never := ids[4] + 1_000_000
	// Out of order, as the engine may ask.
	ask := []int64{ids[4], never, ids[0], ids[2], ids[3], ids[1]}
	agree := func(st strategy.BlobStrategy, what string) {
		got, err := st.(strategy.BatchKeyer).BlobKeys(c.ctx, ask)
		c.check(err, what+" BlobKeys")
		for _, id := range ask {
			want, err := st.BlobKey(c.ctx, id)
			key, listed := got[id]
			switch {
			case errors.Is(err, strategy.ErrNotFound) && listed:
				c.failf("%s BlobKeys(%d): got key %q, want it left out (BlobKey: %v)", what, id, key, err)
			case err != nil && !errors.Is(err, strategy.ErrNotFound):
				c.failf("%s BlobKey(%d): got error %v", what, id, err)
			case err == nil && listed && key != want:
				c.failf("%s BlobKeys(%d): got %q, want %q (BlobKey's)", what, id, key, want)
			case err == nil && !listed:
				// Allowed by the contract (BlobKey is asked again), but
				// an adapter that leaves out existing records gains
				// nothing from BlobKeys: report it.
				c.failf("%s BlobKeys(%d): got nothing, want %q (BlobKey's)", what, id, want)
			}
		}
		for id := range got {
			if !slices.Contains(ask, id) {
				c.failf("%s BlobKeys: got id %d, which was not asked", what, id)
			}
		}
	}
	agree(st, "unscoped")
	if c.h.ScopedStrategy != nil && c.h.CreateOutOfScope != nil {
		out, err := c.h.CreateOutOfScope(c.ctx, app, data(9, 10))
		c.check(err, "create out of scope")
		ask = append(ask, out)
		agree(c.h.ScopedStrategy(w.PrimaryDB), "scoped")
	}
}

// --- sync clauses (event-driven: the consistency pass is not triggered) ---

func (s *suite) created(c *clause) {
	w, app := c.world()
	sec := c.h.Strategy(w.PrimaryDB)
	w.Start(c.secondaryConfig(w, sec))
	for i := 0; i < 5; i++ {
		b := data(100+i, 1000*i+1)
		id, err := c.h.Create(c.ctx, app, b)
		c.check(err, "create")
		c.waitSynced(w, sec, id, b)
	}
	c.converged(w, sec)
}

func (s *suite) updated(c *clause) {
	if c.h.Update == nil {
		c.Skip("Harness.Update is nil: the type is immutable")
		return
	}
	w, app := c.world()
	sec := c.h.Strategy(w.PrimaryDB)
	w.Start(c.secondaryConfig(w, sec))
	id, err := c.h.Create(c.ctx, app, data(1, 2000))
	c.check(err, "create")
	c.waitSynced(w, sec, id, data(1, 2000))
	for v := 2; v < 4; v++ {
		b := data(v, 1500+v)
		c.check(c.h.Update(c.ctx, app, id, b), "update")
		c.waitSynced(w, sec, id, b)
	}
	c.converged(w, sec)
}

func (s *suite) deleted(c *clause) {
	w, app := c.world()
	sec := c.h.Strategy(w.PrimaryDB)
	w.Start(c.secondaryConfig(w, sec))
	id, err := c.h.Create(c.ctx, app, data(1, 2000))
	c.check(err, "create")
	keep, err := c.h.Create(c.ctx, app, data(2, 10))
	c.check(err, "create")
	c.waitSynced(w, sec, id, data(1, 2000))
	key, err := sec.BlobKey(c.ctx, id)
	c.check(err, "BlobKey")
	c.check(c.h.Delete(c.ctx, app, id), "delete")
	c.waitGone(w, sec.Name(), id, key)
	c.waitSynced(w, sec, keep, data(2, 10))
	c.converged(w, sec)
}

func (s *suite) backfill(c *clause) {
	w, app := c.world()
	want := map[int64][]byte{}
	for i := 0; i < 30; i++ {
		b := data(i, 100*i)
		id, err := c.h.Create(c.ctx, app, b)
		c.check(err, "create")
		want[id] = b
	}
	// The consumer starts at the end of the log: only backfill covers these.
	sec := c.h.Strategy(w.PrimaryDB)
	r := w.Start(c.secondaryConfig(w, sec))
	r.TriggerConsistency()
	for id, b := range want {
		c.waitSynced(w, sec, id, b)
	}
	c.converged(w, sec)
}

func (s *suite) orphans(c *clause) {
	w, app := c.world()
	sec := c.h.Strategy(w.PrimaryDB)
	id, err := c.h.Create(c.ctx, app, data(1, 100))
	c.check(err, "create")
	// An orphan: a registry row and a file for a record the primary does not
	// have (its deleted event was lost).
	orphan := id + 1_000_000
	store, _ := registry.NewStore(w.TrackingDB, registry.Options{})
	// The registry has no public way to make a row for a record that does
	// not exist (that is the point of an orphan): insert it as the
	// consistency pass would.
	_, err = w.TrackingDB.ExecContext(c.ctx,
		`INSERT INTO geo_registry (replicable, model_id, created_at, updated_at) VALUES ($1, $2, now(), now())`, sec.Name(), orphan)
	c.check(err, "insert orphan row")
	r := w.Start(c.secondaryConfig(w, sec))
	r.TriggerConsistency()
	c.waitSynced(w, sec, id, data(1, 100))
	c.waitFor("orphan row removed", func() (bool, string) {
		_, err := store.Get(c.ctx, sec.Name(), orphan)
		return errors.Is(err, registry.ErrNotFound), fmt.Sprintf("got %v, want no row for orphan %d", err, orphan)
	})
	c.converged(w, sec)
}

func (s *suite) scope(c *clause) {
	if c.h.ScopedStrategy == nil || c.h.CreateOutOfScope == nil {
		c.Skip("Harness.ScopedStrategy or CreateOutOfScope is nil: the type has no scope")
		return
	}
	w, app := c.world()
	in, err := c.h.Create(c.ctx, app, data(1, 100))
	c.check(err, "create")
	out, err := c.h.CreateOutOfScope(c.ctx, app, data(2, 100))
	c.check(err, "create out of scope")
	scoped := c.h.ScopedStrategy(w.PrimaryDB)
	if _, err := scoped.BlobKey(c.ctx, out); !errors.Is(err, strategy.ErrNotFound) {
		c.failf("scoped BlobKey(%d) of an out-of-scope record: got %v, want strategy.ErrNotFound", out, err)
	}
	r := w.Start(c.secondaryConfig(w, scoped))
	r.TriggerConsistency()
	c.waitSynced(w, scoped, in, data(1, 100))
	// And an out-of-scope record created while running (its event arrives).
	out2, err := c.h.CreateOutOfScope(c.ctx, app, data(3, 100))
	c.check(err, "create out of scope")
	in2, err := c.h.Create(c.ctx, app, data(4, 100))
	c.check(err, "create")
	c.waitSynced(w, scoped, in2, data(4, 100))
	c.converged(w, scoped)
	for _, id := range []int64{out, out2} {
		if n := w.Transfers.Count(scoped.Name(), id); n != 0 {
			c.failf("transfers of out-of-scope record %d: got %d, want 0", id, n)
		}
	}
}

func (s *suite) missingOnPrimary(c *clause) {
	w, app := c.world()
	id, err := c.h.Create(c.ctx, app, data(1, 100))
	c.check(err, "create")
	sec := c.h.Strategy(w.PrimaryDB)
	key, err := sec.BlobKey(c.ctx, id)
	c.check(err, "BlobKey")
	c.check(w.PrimaryStorage.Remove(c.ctx, key), "remove the primary's bytes")
	r := w.Start(c.secondaryConfig(w, sec))
	r.TriggerConsistency()
	store := r.Store()
	c.waitFor("missing on primary recorded", func() (bool, string) {
		row, err := store.Get(c.ctx, sec.Name(), id)
		if err != nil {
			return false, err.Error()
		}
		return row.State == registry.StateFailed && row.MissingOnPrimary && row.RetryCount >= 1,
			fmt.Sprintf("got state %s missing_on_primary %v retry_count %d, want failed, true, >= 1", row.State, row.MissingOnPrimary, row.RetryCount)
	})
	if _, err := w.SecondaryStorage.Stat(c.ctx, key); err == nil {
		c.failf("file at %s for a record missing on the primary: got one, want none", key)
	}
}

// flipper serves the primary's handler but flips one byte of every body
// while on.
type flipper struct {
	next http.Handler
	mu   sync.Mutex
	on   bool
	hits int
}

func (f *flipper) set(on bool) { f.mu.Lock(); f.on = on; f.mu.Unlock() }

func (f *flipper) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	on := f.on
	if on {
		f.hits++
	}
	f.mu.Unlock()
	if !on || r.Method != http.MethodGet {
		f.next.ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	f.next.ServeHTTP(rec, r)
	body := rec.Body.Bytes()
	if len(body) > 0 {
		body[len(body)/2] ^= 0x40
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(body)
}

func (s *suite) corruptInTransit(c *clause) {
	w, app := c.world()
	fl := &flipper{next: w.Primary.Handler(), on: true}
	srv := httptest.NewServer(fl)
	c.Cleanup(srv.Close)
	sec := c.h.Strategy(w.PrimaryDB)
	cfg := c.secondaryConfig(w, sec)
	cfg.PrimaryURL = srv.URL
	cfg.Retry = strategy.Backoff{Base: 50 * time.Millisecond, Max: 200 * time.Millisecond, Jitter: -1}
	r := w.Start(cfg)
	b := data(7, 5000)
	id, err := c.h.Create(c.ctx, app, b)
	c.check(err, "create")
	key, err := sec.BlobKey(c.ctx, id)
	c.check(err, "BlobKey")
	c.waitFor("corrupted transfers fail", func() (bool, string) {
		row, err := r.Store().Get(c.ctx, sec.Name(), id)
		if err != nil {
			return false, err.Error()
		}
		if row.State == registry.StateSynced {
			c.failf("a corrupted transfer: got state synced, want failed")
		}
		return row.State == registry.StateFailed && row.RetryCount >= 2, fmt.Sprintf("got state %s retry_count %d, want failed twice", row.State, row.RetryCount)
	})
	if _, err := w.SecondaryStorage.Stat(c.ctx, key); err == nil {
		c.failf("file at %s after corrupted transfers: got one, want none", key)
	}
	fl.set(false)
	c.waitSynced(w, sec, id, b)
	c.converged(w, sec)
}

// verifiedAgainstPrimaryChecksum: the primary checksums a record (with
// the adapter's strategy.Checksummer when it has one, else by reading the
// bytes) and gets the SHA-256 of the bytes the application stored; a
// secondary started after that syncs the record against that checksum and
// settles it verified at once, with the same checksum.
func (s *suite) verifiedAgainstPrimaryChecksum(c *clause) {
	w, app := c.world()
	b := data(21, 3000)
	id, err := c.h.Create(c.ctx, app, b)
	c.check(err, "create")
	sec := c.h.Strategy(w.PrimaryDB)
	sums, err := registry.NewChecksums(w.PrimaryDB)
	c.check(err, "checksum store")
	want := sum(b)
	c.waitFor(fmt.Sprintf("the primary's checksum of record %d", id), func() (bool, string) {
		got, err := sums.Checksum(c.ctx, sec.Name(), id)
		if err != nil {
			return false, err.Error()
		}
		if got != "" && got != want {
			c.failf("the primary's checksum of record %d: got %s, want %s (the SHA-256 of the bytes Create stored)", id, got, want)
			return true, ""
		}
		return got == want, fmt.Sprintf("got %q, want %s", got, want)
	})
	r := w.Start(c.secondaryConfig(w, sec))
	c.waitSynced(w, sec, id, b)
	row, err := r.Store().Get(c.ctx, sec.Name(), id)
	c.check(err, "registry row")
	if row.VerificationState != registry.VerificationSucceeded || row.VerificationChecksum != want {
		c.failf("row of record %d synced against the primary's checksum: got verification %s with checksum %q, want %s with %s",
			id, row.VerificationState, row.VerificationChecksum, registry.VerificationSucceeded, want)
	}
}

func (s *suite) corruptAtRest(c *clause) {
	w, app := c.world()
	sec := c.h.Strategy(w.PrimaryDB)
	cfg := c.secondaryConfig(w, sec)
	cfg.ReverifyInterval = 200 * time.Millisecond
	cfg.Retry = strategy.Backoff{Base: 50 * time.Millisecond, Max: 200 * time.Millisecond, Jitter: -1}
	r := w.Start(cfg)
	b := data(9, 4000)
	id, err := c.h.Create(c.ctx, app, b)
	c.check(err, "create")
	c.waitSynced(w, sec, id, b)
	key, err := sec.BlobKey(c.ctx, id)
	c.check(err, "BlobKey")
	// Behind the engine's back, through the storage itself: a directory's
	// file or an S3 object alike.
	raw, err := readBlob(c.ctx, w.SecondaryStorage, key)
	c.check(err, "read the secondary's copy")
	raw[len(raw)/2] ^= 0x01
	c.check(writeBlob(c.ctx, w.SecondaryStorage, key, raw), "corrupt the secondary's copy")
	before := w.Transfers.Count(sec.Name(), id)
	c.waitFor("corruption at rest detected and repaired", func() (bool, string) {
		got, state := c.secondaryBytes(w, sec, id)
		if bytes.Equal(got, b) && w.Transfers.Count(sec.Name(), id) > before {
			return true, ""
		}
		return false, fmt.Sprintf("got state %s and %s bytes, want a re-download restoring the primary's bytes", state, map[bool]string{true: "correct", false: "corrupted"}[bytes.Equal(got, b)])
	})
	_ = r
	c.converged(w, sec)
}

// readBlob returns the bytes stored at key.
func readBlob(ctx context.Context, st *blob.Bucket, key string) ([]byte, error) {
	r, err := st.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// writeBlob stores b at key.
func writeBlob(ctx context.Context, st *blob.Bucket, key string, b []byte) error {
	w, err := st.Create(ctx, key, nil)
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		w.Abort()
		return err
	}
	return w.Commit(ctx)
}

func (s *suite) empty(c *clause) {
	w, app := c.world()
	sec := c.h.Strategy(w.PrimaryDB)
	w.Start(c.secondaryConfig(w, sec))
	id, err := c.h.Create(c.ctx, app, []byte{})
	c.check(err, "create")
	c.waitSynced(w, sec, id, []byte{})
	c.converged(w, sec)
}

func (s *suite) large(c *clause) {
	w, app := c.world()
	sec := c.h.Strategy(w.PrimaryDB)
	w.Start(c.secondaryConfig(w, sec))
	b := data(33, 32<<20)
	id, err := c.h.Create(c.ctx, app, b)
	c.check(err, "create")
	c.waitSynced(w, sec, id, b)
	c.converged(w, sec)
}

// failing answers 503 to every transfer while on.
type failing struct {
	next http.Handler
	mu   sync.Mutex
	on   bool
}

func (f *failing) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	on := f.on
	f.mu.Unlock()
	if on {
		http.Error(w, "primary overloaded", http.StatusServiceUnavailable)
		return
	}
	f.next.ServeHTTP(w, r)
}

// fakeClock is a clock the clause moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeClock) Now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now }
func (f *fakeClock) add(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

func (s *suite) backoffGrows(c *clause) {
	w, app := c.world()
	fl := &failing{next: w.Primary.Handler(), on: true}
	srv := httptest.NewServer(fl)
	c.Cleanup(srv.Close)
	sec := c.h.Strategy(w.PrimaryDB)
	clock := &fakeClock{now: time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)}
	cfg := c.secondaryConfig(w, sec)
	cfg.PrimaryURL = srv.URL
	cfg.Now = clock.Now
	r := w.Start(cfg)
	b := data(5, 300)
	id, err := c.h.Create(c.ctx, app, b)
	c.check(err, "create")
	// The created event must be consumed before failures are counted: a
	// late delivery (event visibility waits for every older transaction
	// of the cluster) marks the row pending again and, rightly, restarts
	// its retry count, which would make this clause wait for a count the
	// fake clock never reaches. Two polls after the create, with nothing
	// left after the cursor, the event has been handled.
	polls := r.EventStats().Polls
	c.waitFor("created event consumed", func() (bool, string) {
		st := r.EventStats()
		return st.Polls >= polls+2 && st.LagEvents == 0,
			fmt.Sprintf("consumer: %d polls since the create, %d events after its cursor", st.Polls-polls, st.LagEvents)
	})
	store := r.Store()
	var prev time.Duration
	for n := 1; n <= 4; n++ {
		var row registry.Row
		c.waitFor(fmt.Sprintf("failure %d recorded", n), func() (bool, string) {
			row, err = store.Get(c.ctx, sec.Name(), id)
			if err != nil {
				return false, err.Error()
			}
			return row.State == registry.StateFailed && row.RetryCount == n, fmt.Sprintf("got state %s retry_count %d, want failed and %d", row.State, row.RetryCount, n)
		})
		delay := row.RetryAt.Sub(clock.Now())
		if delay <= prev {
			c.failf("delay before retry %d: got %v after %v, want it to grow across consecutive failures", n+1, delay, prev)
		}
		if delay > time.Hour {
			c.failf("delay before retry %d: got %v, want at most the 1h cap", n+1, delay)
		}
		prev = delay
		clock.add(delay + time.Second)
		r.Wake()
	}
	fl.mu.Lock()
	fl.on = false
	fl.mu.Unlock()
	c.waitSynced(w, sec, id, b)
	row, err := store.Get(c.ctx, sec.Name(), id)
	c.check(err, "registry row")
	if row.RetryCount != 0 {
		c.failf("retry_count after success: got %d, want 0", row.RetryCount)
	}
}

// holder holds one record's transfer after its first byte until released.
type holder struct {
	next    http.Handler
	path    string
	arrived chan struct{}
	release chan struct{}
	once    sync.Once
}

func (h *holder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != h.path || r.Method != http.MethodGet {
		h.next.ServeHTTP(w, r)
		return
	}
	first := false
	h.once.Do(func() { first = true })
	if !first {
		h.next.ServeHTTP(w, r)
		return
	}
	h.next.ServeHTTP(&heldWriter{ResponseWriter: w, h: h}, r)
}

type heldWriter struct {
	http.ResponseWriter
	h    *holder
	done bool
}

func (hw *heldWriter) Write(p []byte) (int, error) {
	if hw.done || len(p) < 2 {
		return hw.ResponseWriter.Write(p)
	}
	hw.done = true
	n, err := hw.ResponseWriter.Write(p[:1])
	if f, ok := hw.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	close(hw.h.arrived)
	<-hw.h.release
	if err != nil {
		return n, err
	}
	m, err := hw.ResponseWriter.Write(p[1:])
	return n + m, err
}

func (c *clause) inFlight(w *World, name string, id int64) (*holder, string) {
	h := &holder{next: w.Primary.Handler(), path: fmt.Sprintf("/geo/v1/blobs/%s/%d", name, id),
		arrived: make(chan struct{}), release: make(chan struct{})}
	srv := httptest.NewServer(h)
	c.Cleanup(srv.Close)
	c.Cleanup(func() {
		select {
		case <-h.release:
		default:
			close(h.release)
		}
	})
	return h, srv.URL
}

func (c *clause) waitArrived(h *holder) {
	c.Helper()
	select {
	case <-h.arrived:
	case <-c.ctx.Done():
		c.failf("the sync never reached the primary: got no transfer, want one in flight")
	}
}

func (s *suite) updateDuringSync(c *clause) {
	if c.h.Update == nil {
		c.Skip("Harness.Update is nil: the type is immutable")
		return
	}
	w, app := c.world()
	sec := c.h.Strategy(w.PrimaryDB)
	old := data(1, 64<<10)
	id, err := c.h.Create(c.ctx, app, old)
	c.check(err, "create")
	h, url := c.inFlight(w, sec.Name(), id)
	cfg := c.secondaryConfig(w, sec)
	cfg.PrimaryURL = url
	r := w.Start(cfg)
	r.TriggerConsistency()
	c.waitArrived(h)
	held, err := r.Store().Get(c.ctx, sec.Name(), id)
	c.check(err, "registry row of the sync in flight")
	if held.State != registry.StateStarted {
		c.failf("row of the sync in flight: got state %s, want started", held.State)
	}
	nu := data(2, 60<<10)
	c.check(c.h.Update(c.ctx, app, id, nu), "update")
	// The event makes the row pending with a new generation while the old
	// sync still runs (another worker may claim it again at once).
	c.waitFor("the update's event reaches the registry during the sync", func() (bool, string) {
		row, err := r.Store().Get(c.ctx, sec.Name(), id)
		return err == nil && row.Seq != held.Seq, fmt.Sprintf("got seq %d (%v), want a new generation", row.Seq, err)
	})
	close(h.release)
	c.waitSynced(w, sec, id, nu)
	c.converged(w, sec)
}

func (s *suite) deleteDuringSync(c *clause) {
	w, app := c.world()
	sec := c.h.Strategy(w.PrimaryDB)
	id, err := c.h.Create(c.ctx, app, data(1, 64<<10))
	c.check(err, "create")
	key, err := sec.BlobKey(c.ctx, id)
	c.check(err, "BlobKey")
	h, url := c.inFlight(w, sec.Name(), id)
	cfg := c.secondaryConfig(w, sec)
	cfg.PrimaryURL = url
	r := w.Start(cfg)
	r.TriggerConsistency()
	c.waitArrived(h)
	c.check(c.h.Delete(c.ctx, app, id), "delete")
	c.waitFor("the deleted event removes the row during the sync", func() (bool, string) {
		_, err := r.Store().Get(c.ctx, sec.Name(), id)
		return errors.Is(err, registry.ErrNotFound), fmt.Sprintf("got %v, want no row", err)
	})
	close(h.release)
	// Let the in-flight sync finish and settle, then nothing may remain.
	c.waitFor("the interrupted sync ends", func() (bool, string) {
		n := 0
		for _, t := range w.Transfers.All() {
			if t.ModelID == id {
				n++
			}
		}
		return n >= 1, "got no finished transfer"
	})
	c.waitGone(w, sec.Name(), id, key)
	c.converged(w, sec)
	_ = strings.TrimSpace
}

// --- shared and reused keys (Harness.KeysMayCollide) ---

// swapRounds is how many rounds keys/swap runs: odd rounds let the
// shared key settle before A leaves it, even ones change both records at
// once.
const swapRounds = 4

// needCollidingKeys skips a keys/* clause for a type whose keys cannot
// collide, and says why.
func (c *clause) needCollidingKeys() {
	c.Helper()
	if !c.h.KeysMayCollide {
		c.Skip("Harness.KeysMayCollide is false: the type's keys are distinct for distinct records and never reused, so no key is shared")
	}
}

// key returns BlobKey(id) of st, failing the clause on an error.
func (c *clause) key(st strategy.BlobStrategy, id int64) string {
	c.Helper()
	k, err := st.BlobKey(c.ctx, id)
	c.check(err, fmt.Sprintf("BlobKey(%d)", id))
	return k
}

// primaryHolds fails the clause unless the primary's storage holds want
// at key; what says whose bytes they are and when, and hint what the
// application must do for them to be there.
func (c *clause) primaryHolds(app App, key string, want []byte, what, hint string) {
	c.Helper()
	got, _, err := sha(c.ctx, app.Storage, key)
	switch {
	case errors.Is(err, blob.ErrNotExist):
		c.failf("%s: got no bytes at %q on the primary, want %d bytes sha %.12s (%s)", what, key, len(want), sum(want), hint)
	case err != nil:
		c.failf("%s: reading %q on the primary: got %v, want its bytes", what, key, err)
	case got != sum(want):
		c.failf("%s: got sha %.12s at %q on the primary, want sha %.12s", what, got, key, sum(want))
	}
}

// syncedFilesIntact fails the clause when a synced row of ids names a
// key whose file on the secondary is absent, or holds other bytes than
// written says the application stored there. A row is judged only when
// it reads the same (state, generation, key, last sync) before and after
// its file is read, so a settle that moved it meanwhile is not taken for
// a loss: a row being re-synced is claimed (started) first, in a
// transaction of its own, before any of its bytes move.
func (c *clause) syncedFilesIntact(w *World, store *registry.Store, name string, ids []int64, written map[string]string, when string) {
	c.Helper()
	for _, id := range ids {
		before, err := store.Get(c.ctx, name, id)
		if err != nil || before.State != registry.StateSynced {
			continue
		}
		got, _, ferr := sha(c.ctx, w.SecondaryStorage, before.BlobKey)
		after, err := store.Get(c.ctx, name, id)
		if err != nil || after.State != before.State || after.Seq != before.Seq || after.BlobKey != before.BlobKey ||
			!after.LastSyncedAt.Equal(before.LastSyncedAt) {
			continue
		}
		want := written[before.BlobKey]
		switch {
		case errors.Is(ferr, blob.ErrNotExist):
			c.failf("record %d synced at %q %s: got no file there on the secondary, want its bytes (sha %.12s)", id, before.BlobKey, when, want)
		case ferr != nil:
			c.failf("record %d synced at %q %s: reading the secondary's file: got %v, want its bytes", id, before.BlobKey, when, ferr)
		case want != "" && got != want:
			c.failf("record %d synced at %q %s: got sha %.12s on the secondary, want sha %.12s (what the application stored there)", id, before.BlobKey, when, got, want)
		}
	}
}

// waitSyncedIntact is waitSynced for each of want's records, checking on
// every look that no synced row of ids lost its file (syncedFilesIntact).
func (c *clause) waitSyncedIntact(w *World, sec strategy.BlobStrategy, store *registry.Store, ids []int64, want map[int64][]byte, written map[string]string, when string) {
	c.Helper()
	for _, id := range ids {
		b := want[id]
		c.waitFor(fmt.Sprintf("record %d synced %s", id, when), func() (bool, string) {
			c.syncedFilesIntact(w, store, sec.Name(), ids, written, when)
			got, state := c.secondaryBytes(w, sec, id)
			if state != registry.StateSynced.String() {
				return false, fmt.Sprintf("got state %s, want synced", state)
			}
			if sum(got) != sum(b) {
				return false, fmt.Sprintf("got %d bytes sha %.12s, want %d bytes sha %.12s", len(got), sum(got), len(b), sum(b))
			}
			return true, ""
		})
	}
}

// syncedWith reports whether record id is synced on the secondary with
// bytes want, and otherwise what it is.
func (c *clause) syncedWith(w *World, sec strategy.BlobStrategy, id int64, want []byte) (bool, string) {
	got, state := c.secondaryBytes(w, sec, id)
	switch {
	case state != registry.StateSynced.String():
		return false, "state " + state
	case !bytes.Equal(got, want):
		return false, fmt.Sprintf("state synced with %d bytes sha %.12s", len(got), sum(got))
	}
	return true, ""
}

// waitEventConsumed waits until r's event consumer has saved a cursor at
// or past the last event of op published for record id.
func (c *clause) waitEventConsumed(w *World, r *Running, name string, op events.Op, id int64) {
	c.Helper()
	var xid string
	var eid int64
	err := w.PrimaryDB.QueryRowContext(c.ctx, `SELECT xid::text, id FROM geo_events
		WHERE replicable = $1 AND op = $2 AND model_id = $3 ORDER BY xid DESC, id DESC LIMIT 1`, name, int16(op), id).Scan(&xid, &eid)
	c.check(err, fmt.Sprintf("the %v event of record %d in the outbox", op, id))
	x, err := strconv.ParseUint(xid, 10, 64)
	c.check(err, "the event's transaction id")
	c.waitFor(fmt.Sprintf("the %v event of record %d consumed", op, id), func() (bool, string) {
		cur := r.EventStats().Cursor
		return cur.XID > x || (cur.XID == x && cur.ID >= eid),
			fmt.Sprintf("got the consumer's cursor at (%d, %d), want at or past the event's (%d, %d)", cur.XID, cur.ID, x, eid)
	})
}

// equalBytesEqualKeys: records created with equal bytes get one key, and
// records with different bytes different keys (records naming one key at
// the same time name the same bytes); an update to bytes another record
// has moves the record to that record's key.
func (s *suite) equalBytesEqualKeys(c *clause) {
	c.needCollidingKeys()
	w, app := c.world()
	st := c.h.Strategy(w.PrimaryDB)
	x, y := data(31, 700), data(32, 700)
	a, err := c.h.Create(c.ctx, app, x)
	c.check(err, "create")
	b, err := c.h.Create(c.ctx, app, x)
	c.check(err, "create")
	o, err := c.h.Create(c.ctx, app, y)
	c.check(err, "create")
	ka, kb, ko := c.key(st, a), c.key(st, b), c.key(st, o)
	if ka != kb {
		c.failf("BlobKey of records %d and %d, created with equal bytes: got %q and %q, want one key (Harness.KeysMayCollide: equal bytes, equal keys)", a, b, ka, kb)
	}
	if ko == ka {
		c.failf("BlobKey of record %d, created with other bytes than record %d: got %q, record %d's key, want another key (records naming one key at the same time name the same bytes)", o, a, ko, a)
	}
	c.primaryHolds(app, ka, x, fmt.Sprintf("records %d and %d", a, b), "Create stores them")
	c.primaryHolds(app, ko, y, fmt.Sprintf("record %d", o), "Create stores them")
	if c.h.Update == nil {
		return
	}
	c.check(c.h.Update(c.ctx, app, o, x), "update")
	if k := c.key(st, o); k != ka {
		c.failf("BlobKey of record %d after an update to record %d's bytes: got %q, want %q (equal bytes, equal keys)", o, a, k, ka)
	}
	c.primaryHolds(app, ka, x, fmt.Sprintf("records %d, %d and %d after the update", a, b, o), "Update stores them if absent")
}

// sharedByTwoRecords: records A and B with equal bytes share one key and
// are both synced; deleting A removes A's row (only A's) while B stays
// synced and its file stays, on the primary and on the secondary, right
// after A's row is gone and at convergence.
func (s *suite) sharedByTwoRecords(c *clause) {
	c.needCollidingKeys()
	w, app := c.world()
	sec := c.h.Strategy(w.PrimaryDB)
	r := w.Start(c.secondaryConfig(w, sec))
	store := r.Store()
	x := data(41, 3000)
	a, err := c.h.Create(c.ctx, app, x)
	c.check(err, "create")
	b, err := c.h.Create(c.ctx, app, x)
	c.check(err, "create")
	key := c.key(sec, a)
	if kb := c.key(sec, b); kb != key {
		c.failf("BlobKey of records %d and %d, created with equal bytes: got %q and %q, want one key", a, b, key, kb)
	}
	c.waitSynced(w, sec, a, x)
	c.waitSynced(w, sec, b, x)
	// Both created events handled: none of them can make B pending (and
	// so re-synced, which would hide a loss) after A's delete.
	c.waitEventConsumed(w, r, sec.Name(), events.OpCreated, b)
	c.check(c.h.Delete(c.ctx, app, a), "delete")
	c.primaryHolds(app, key, x, fmt.Sprintf("record %d after deleting record %d, which shared its key", b, a),
		"Delete removes bytes only when no other record names them")
	c.waitFor(fmt.Sprintf("record %d's row removed", a), func() (bool, string) {
		_, err := store.Get(c.ctx, sec.Name(), a)
		return errors.Is(err, registry.ErrNotFound), fmt.Sprintf("got %v, want no row for record %d", err, a)
	})
	check := func(when string) {
		c.Helper()
		if ok, got := c.syncedWith(w, sec, b, x); !ok {
			c.failf("record %d %s: got %s, want synced with its file at %q (%d bytes sha %.12s), a key record %d still names",
				b, when, got, key, len(x), sum(x), b)
		}
	}
	check(fmt.Sprintf("right after the row of record %d, which shared its key, went", a))
	c.converged(w, sec)
	check("at convergence")
}

// reusedAfterDelete: record A synced at key K is deleted (its row and
// file go); record B is created with the same bytes, takes K and is
// synced; then A's deleted event arrives again, late. An at-least-once
// outbox may legitimately deliver an event twice or after later ones (a
// consumer that crashed before saving its cursor reads it again; a
// secondary rebuilt from a backup replays), so the clause publishes A's
// deleted event again, with key K, in a transaction of its own after B is
// synced. B's file must stay.
func (s *suite) reusedAfterDelete(c *clause) {
	c.needCollidingKeys()
	w, app := c.world()
	sec := c.h.Strategy(w.PrimaryDB)
	r := w.Start(c.secondaryConfig(w, sec))
	x := data(43, 2500)
	a, err := c.h.Create(c.ctx, app, x)
	c.check(err, "create")
	key := c.key(sec, a)
	c.waitSynced(w, sec, a, x)
	c.check(c.h.Delete(c.ctx, app, a), "delete")
	c.waitGone(w, sec.Name(), a, key)
	b, err := c.h.Create(c.ctx, app, x)
	c.check(err, "create")
	if kb := c.key(sec, b); kb != key {
		c.failf("BlobKey of record %d, created with deleted record %d's bytes: got %q, want %q (equal bytes, equal keys)", b, a, kb, key)
	}
	c.primaryHolds(app, key, x, fmt.Sprintf("record %d, created with deleted record %d's bytes", b, a),
		"Create stores bytes again when a delete removed them")
	c.waitSynced(w, sec, b, x)
	// B's created event handled: it cannot make B pending (and so
	// re-synced, which would hide a loss) after the late event.
	c.waitEventConsumed(w, r, sec.Name(), events.OpCreated, b)
	tx, err := app.DB.BeginTxx(c.ctx, nil)
	c.check(err, "begin")
	defer tx.Rollback()
	_, err = app.Publisher.Publish(c.ctx, tx, sec.Name(), events.OpDeleted, a, key)
	c.check(err, "publish the late deleted event")
	c.check(tx.Commit(), "commit the late deleted event")
	c.waitEventConsumed(w, r, sec.Name(), events.OpDeleted, a)
	if ok, got := c.syncedWith(w, sec, b, x); !ok {
		c.failf("record %d right after deleted record %d's event (key %q) arrived late: got %s, want synced with its file (%d bytes sha %.12s)",
			b, a, key, got, len(x), sum(x))
	}
	c.converged(w, sec)
	if ok, got := c.syncedWith(w, sec, b, x); !ok {
		c.failf("record %d at convergence: got %s, want synced with its file at %q (%d bytes sha %.12s)", b, got, key, len(x), sum(x))
	}
}

// swap: A holds X and B holds Y, both synced; then A takes new bytes Z
// and B takes X, A's old bytes (so B moves to the key A leaves), for
// several rounds. Odd rounds let B's move to the shared key settle before
// A leaves it; even rounds change both at once. Every synced row's
// file must exist with the right bytes at every look (not only at the
// end: a lost file can be repaired later and hide the loss), the primary
// must keep both records' bytes, and the sites converge.
func (s *suite) swap(c *clause) {
	c.needCollidingKeys()
	if c.h.Update == nil {
		c.Skip("Harness.Update is nil: the type is immutable, so no record takes another's bytes")
		return
	}
	w, app := c.world()
	sec := c.h.Strategy(w.PrimaryDB)
	r := w.Start(c.secondaryConfig(w, sec))
	store := r.Store()
	written := map[string]string{} // key -> SHA-256 of the bytes stored there
	keyOf := map[string]string{}   // SHA-256 -> the key those bytes got
	cur := map[int64][]byte{}
	var ids []int64
	note := func(id int64, b []byte, what string) {
		c.Helper()
		k := c.key(sec, id)
		if prev, ok := keyOf[sum(b)]; ok && prev != k {
			c.failf("%s: got key %q for record %d, want %q, the key its bytes had before (equal bytes, equal keys)", what, k, id, prev)
		}
		keyOf[sum(b)], written[k], cur[id] = k, sum(b), b
	}
	primaryHoldsAll := func(what string) {
		c.Helper()
		for _, id := range ids {
			c.primaryHolds(app, c.key(sec, id), cur[id], fmt.Sprintf("record %d %s", id, what),
				"Update removes the old bytes only when no other record names them, and stores the new ones if absent")
		}
	}
	update := func(id int64, b []byte, what string) {
		c.Helper()
		c.check(c.h.Update(c.ctx, app, id, b), "update")
		note(id, b, what)
		primaryHoldsAll(what)
	}
	for i, b := range [][]byte{data(71, 3000), data(72, 3100)} {
		id, err := c.h.Create(c.ctx, app, b)
		c.check(err, "create")
		ids = append(ids, id)
		note(id, b, fmt.Sprintf("create %d", i))
	}
	a, b := ids[0], ids[1]
	c.waitSyncedIntact(w, sec, store, ids, cur, written, "after the creates")
	for round := 1; round <= swapRounds; round++ {
		when := fmt.Sprintf("in round %d", round)
		z, x := data(80+round, 2000+round), cur[a]
		if round%2 == 1 {
			update(b, x, when)
			c.waitSyncedIntact(w, sec, store, ids, cur, written, when+", with both records at one key")
			update(a, z, when)
		} else {
			// At once: the secondary may see B take X before A leaves it.
			update(a, z, when)
			update(b, x, when)
		}
		c.waitSyncedIntact(w, sec, store, ids, cur, written, when)
	}
	c.converged(w, sec)
	c.syncedFilesIntact(w, store, sec.Name(), ids, written, "at convergence")
}

// testingT adapts *testing.T to T.
type testingT struct{ *testing.T }

func (t testingT) Run(name string, f func(t T)) bool {
	return t.T.Run(name, func(tt *testing.T) { f(testingT{tt}) })
}
