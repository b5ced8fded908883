package main

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/blob/dirblob"
	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
)

// gate sits in front of the primary's transfer endpoint and holds the
// first transfer of every record after its first body byte, until the
// trial driving that record releases it: the sync is then in flight, its
// row claimed, while the trial changes the record.
type gate struct {
	next http.Handler

	mu    sync.Mutex
	slots map[int64]*slot
}

type slot struct {
	used    bool
	arrived chan struct{}
	release chan struct{}
	once    sync.Once
}

func (s *slot) open() { s.once.Do(func() { close(s.release) }) }

func newGate(next http.Handler) *gate { return &gate{next: next, slots: map[int64]*slot{}} }

// slot returns record id's slot, creating it.
func (g *gate) slot(id int64) *slot {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.slots[id]
	if s == nil {
		s = &slot{arrived: make(chan struct{}), release: make(chan struct{})}
		g.slots[id] = s
	}
	return s
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:], 10, 64)
	if err == nil {
		s := g.slot(id)
		g.mu.Lock()
		first := !s.used
		s.used = true
		g.mu.Unlock()
		if first {
			w = &holdWriter{ResponseWriter: w, s: s}
		}
	}
	g.next.ServeHTTP(w, r)
}

// holdWriter sends the first body byte, then waits for the release.
type holdWriter struct {
	http.ResponseWriter
	s    *slot
	held bool
}

func (h *holdWriter) Write(p []byte) (int, error) {
	if h.held || len(p) < 2 {
		return h.ResponseWriter.Write(p)
	}
	h.held = true
	n, err := h.ResponseWriter.Write(p[:1])
	http.NewResponseController(h.ResponseWriter).Flush()
	close(h.s.arrived)
	<-h.s.release
	if err != nil {
		return n, err
	}
	m, err := h.ResponseWriter.Write(p[1:])
	return n + m, err
}

func (h *holdWriter) Flush() { http.NewResponseController(h.ResponseWriter).Flush() }

// outcomes collects the sync engine's per-record results from its debug
// log (the engine logs "synced", "claim superseded..." and "sync failed"
// with model_record_id), so a trial learns what became of the sync it
// held.
type outcomes struct {
	mu    sync.Mutex
	byID  map[int64][]string
	waits map[int64]chan struct{}
}

func newOutcomes() *outcomes {
	return &outcomes{byID: map[int64][]string{}, waits: map[int64]chan struct{}{}}
}

func (o *outcomes) add(id int64, what string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.byID[id] = append(o.byID[id], what)
	if ch := o.waits[id]; ch != nil {
		close(ch)
		delete(o.waits, id)
	}
}

// next waits for record id's outcome number i (0-based).
func (o *outcomes) next(ctx context.Context, id int64, i int, timeout time.Duration) (string, error) {
	deadline := time.After(timeout)
	for {
		o.mu.Lock()
		if list := o.byID[id]; len(list) > i {
			o.mu.Unlock()
			return list[i], nil
		}
		ch := o.waits[id]
		if ch == nil {
			ch = make(chan struct{})
			o.waits[id] = ch
		}
		o.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			return "", fmt.Errorf("record %d: no sync outcome #%d within %v", id, i+1, timeout)
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

// count returns how many outcomes record id has had.
func (o *outcomes) count(id int64) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.byID[id])
}

// Outcome names, from the sync engine's log messages.
const (
	outSynced     = "synced"
	outSuperseded = "superseded"
	outFailed     = "failed"
	outRemoved    = "removed"
)

// outcomeCore is a zapcore.Core feeding outcomes.
type outcomeCore struct {
	fields []zapcore.Field
	sink   *outcomes
}

func (c *outcomeCore) Enabled(zapcore.Level) bool { return true }
func (c *outcomeCore) With(f []zapcore.Field) zapcore.Core {
	return &outcomeCore{fields: append(append([]zapcore.Field(nil), c.fields...), f...), sink: c.sink}
}
func (c *outcomeCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if outcomeOf(e.Message) != "" {
		return ce.AddCore(e, c)
	}
	return ce
}
func (c *outcomeCore) Write(e zapcore.Entry, f []zapcore.Field) error {
	all := append(append([]zapcore.Field(nil), c.fields...), f...)
	what := outcomeOf(e.Message)
	for _, fl := range all {
		if err, ok := fl.Interface.(error); ok && (fl.Key == "error" || fl.Key == "cause") {
			what += ": " + err.Error()
		}
	}
	for _, fl := range all {
		if fl.Key == "model_record_id" {
			c.sink.add(fl.Integer, what)
		}
	}
	return nil
}
func (c *outcomeCore) Sync() error { return nil }

func outcomeOf(msg string) string {
	switch {
	case msg == "synced":
		return outSynced
	case strings.HasPrefix(msg, "claim superseded"):
		return outSuperseded
	case msg == "sync failed":
		return outFailed
	case strings.HasPrefix(msg, "record gone"):
		return outRemoved
	}
	return ""
}

// raceKinds are the trials of the races scenario.
var raceKinds = []string{"update-during-sync", "delete-during-sync", "deleted-then-recreated"}

// raceRun drives the trials against one secondary.
type raceRun struct {
	e     *env
	g     *gate
	out   *outcomes
	store *registry.Store
	sec   *blob.Bucket

	recreated atomic.Int64
}

// runRaces: 1,000 trials (default) of each of update-during-sync and
// delete-during-sync and of a deleted-then-recreated id, against a real
// secondary. Each trial creates a record, lets the secondary claim it and
// start the transfer, holds the transfer after its first byte, changes
// the record and waits until the secondary has applied the change to the
// claimed row, then releases the transfer. The held sync must then be
// discarded (R1: its settle sees a newer generation; R2: it finds no row
// or a new one) and the record must end as the primary has it: the new
// bytes synced, or no row and no file. Trials run 24 at a time. No
// consistency pass or verification runs during the trials, so nothing
// repairs a violation before the exact comparison sees it.
func runRaces(ctx context.Context, o options) error {
	const name = "races"
	trials := o.size(o.trials, 50, 1000)
	var g *gate
	e, err := newEnv(ctx, o, envConfig{wrapPrimaryHandler: func(h http.Handler) http.Handler { g = newGate(h); return g }})
	if err != nil {
		return err
	}
	defer e.close()
	storage, err := dirblob.Open(e.SecondaryRoot)
	if err != nil {
		return err
	}
	defer storage.Close()
	out := newOutcomes()
	cfg := e.secondaryConfig(storage)
	cfg.Logger = zap.New(zapcore.NewTee(cfg.Logger.Core(), &outcomeCore{sink: out}))
	cfg.ConsistencyInterval = time.Hour
	cfg.SyncCapacityPerType = 64
	cfg.ReverifyInterval = 24 * time.Hour
	sec, err := startSecondary(cfg)
	if err != nil {
		return err
	}
	defer sec.stop()
	// The first consistency pass runs at start (the interval above only
	// keeps later ones away). Let it finish before the trials: a row it
	// inserts for a record just created can be claimed before the
	// record's created event arrives, and that event then marks the
	// claimed row pending again while its transfer is held, which is
	// right (R1) but not the race a trial stages.
	if err := waitFirstPass(ctx, sec.Secondary, 60*time.Second); err != nil {
		return err
	}
	rr := &raceRun{e: e, g: g, out: out, store: sec.Store(), sec: storage}

	type job struct {
		kind string
		i    int
	}
	jobs := make(chan job)
	var (
		mu       sync.Mutex
		failures []string
		done     = map[string]int{}
		variants = map[string]int{}
	)
	start := time.Now()
	var wg sync.WaitGroup
	for wk := 0; wk < 24; wk++ {
		r := mrand.New(mrand.NewPCG(o.seed, uint64(wk)))
		wg.Go(func() {
			for j := range jobs {
				variant, err := rr.trial(ctx, r, j.kind)
				mu.Lock()
				done[j.kind]++
				variants[j.kind+"/"+variant]++
				if err != nil {
					failures = append(failures, fmt.Sprintf("%s #%d (%s): %v", j.kind, j.i, variant, err))
				}
				mu.Unlock()
			}
		})
	}
	for i := 0; i < trials && ctx.Err() == nil; i++ {
		for _, k := range raceKinds {
			jobs <- job{k, i}
		}
	}
	close(jobs)
	wg.Wait()
	o.logf(name, "%d trials in %.1fs: %s", 3*trials, time.Since(start).Seconds(), countReasons(variants))
	if len(failures) > 0 {
		o.logf(name, "%d trials broke a rule:", len(failures))
		for _, f := range failures[:min(10, len(failures))] {
			o.logf(name, "  %s", f)
		}
	}
	d, took, cerr := e.waitConverged(ctx, o.timeout)
	if cerr != nil {
		summary(o.out, name, d, took)
		return cerr
	}
	if err := sec.stop(); err != nil {
		return err
	}
	if d, err = e.compare(ctx); err != nil {
		return err
	}
	serr := summary(o.out, name, d, took)
	if len(failures) > 0 {
		return fmt.Errorf("%d of %d trials broke R1/R2", len(failures), 3*trials)
	}
	return serr
}

// trial runs one trial of kind and returns the variant it chose.
func (rr *raceRun) trial(ctx context.Context, r *mrand.Rand, kind string) (string, error) {
	e := rr.e
	v1 := racePayload(r)
	id, err := e.App.Create(ctx, 0, v1)
	if err != nil {
		return "", err
	}
	oldKey, err := e.Type.BlobKey(ctx, id)
	if err != nil {
		return "", err
	}
	s := rr.g.slot(id)
	defer s.open()
	select {
	case <-s.arrived:
	case <-time.After(20 * time.Second):
		return "", errors.New("the first transfer never started")
	case <-ctx.Done():
		return "", ctx.Err()
	}
	// The sync is in flight: the row is claimed.
	claimed, err := rr.store.Get(ctx, typeName, id)
	if err != nil {
		return "", fmt.Errorf("claimed row: %w", err)
	}
	if claimed.State != registry.StateStarted {
		return "", fmt.Errorf("row is %s while its transfer is in flight", claimed.State)
	}
	before := rr.out.count(id)
	v2 := racePayload(r)
	switch kind {
	case "update-during-sync":
		variant := "new-key"
		if r.IntN(2) == 0 {
			variant = "same-key"
			err = e.App.UpdateInPlace(ctx, id, v2)
		} else {
			err = e.App.Update(ctx, id, v2)
		}
		if err != nil {
			return variant, err
		}
		if err := rr.waitRow(ctx, id, func(row registry.Row, err error) bool { return err == nil && row.Seq != claimed.Seq }); err != nil {
			return variant, fmt.Errorf("update event not applied: %w", err)
		}
		s.open()
		if err := rr.expectSuperseded(ctx, id, before); err != nil {
			return variant, fmt.Errorf("R1: %w", err)
		}
		newKey, _ := e.Type.BlobKey(ctx, id)
		return variant, rr.waitSynced(ctx, id, newKey, shaHex(v2), oldKey)
	case "delete-during-sync":
		if err := e.App.Delete(ctx, id, true); err != nil {
			return "", err
		}
		if err := rr.waitRow(ctx, id, func(_ registry.Row, err error) bool { return errors.Is(err, registry.ErrNotFound) }); err != nil {
			return "", fmt.Errorf("delete event not applied: %w", err)
		}
		s.open()
		if err := rr.expectSuperseded(ctx, id, before); err != nil {
			return "", fmt.Errorf("R2: %w", err)
		}
		return "", rr.expectGone(ctx, id, oldKey)
	default: // deleted-then-recreated
		if err := e.App.Delete(ctx, id, true); err != nil {
			return "", err
		}
		if err := rr.waitRow(ctx, id, func(_ registry.Row, err error) bool { return errors.Is(err, registry.ErrNotFound) }); err != nil {
			return "", fmt.Errorf("delete event not applied: %w", err)
		}
		variant := "recreated-before-release"
		if r.IntN(2) == 0 {
			variant = "released-then-recreated"
			s.open()
			if err := rr.expectSuperseded(ctx, id, before); err != nil {
				return variant, fmt.Errorf("R2: %w", err)
			}
			if err := rr.expectGone(ctx, id, oldKey); err != nil {
				return variant, err
			}
		}
		newKey, err := rr.recreate(ctx, id, v2)
		if err != nil {
			return variant, err
		}
		if variant == "recreated-before-release" {
			if err := rr.waitRow(ctx, id, func(row registry.Row, err error) bool { return err == nil }); err != nil {
				return variant, fmt.Errorf("created event not applied: %w", err)
			}
			s.open()
			if err := rr.expectSuperseded(ctx, id, before); err != nil {
				return variant, fmt.Errorf("R1/R2: %w", err)
			}
		}
		return variant, rr.waitSynced(ctx, id, newKey, shaHex(v2), oldKey)
	}
}

// racePayload is a small blob: the trials are about ordering, not bytes.
func racePayload(r *mrand.Rand) []byte {
	b := make([]byte, 64+r.IntN(8<<10))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// recreate inserts a new record with the deleted record's id (as an
// application restoring a record, or a sequence reset, would), with new
// bytes at a new key, and publishes "created".
func (rr *raceRun) recreate(ctx context.Context, id int64, data []byte) (string, error) {
	e := rr.e
	key := fmt.Sprintf("%s/%d/%d-r%d", typeTable, id%100, id, rr.recreated.Add(1))
	if err := writeBlob(ctx, e.App.Storage, key, data); err != nil {
		return "", err
	}
	tx, err := e.PrimaryDB.BeginTxx(ctx, nil)
	if err != nil {
		return "", err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO `+typeTable+` (id, blob_key, region, version) VALUES ($1, $2, 0, 100)`, id, key); err != nil {
		return "", fmt.Errorf("recreate %d: %w", id, err)
	}
	if _, err := e.Primary.Publisher().Publish(ctx, tx, typeName, events.OpCreated, id, key); err != nil {
		return "", err
	}
	return key, tx.Commit()
}

// writeBlob stores data at key in b.
func writeBlob(ctx context.Context, b *blob.Bucket, key string, data []byte) error {
	w, err := b.Create(ctx, key, nil)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		w.Abort()
		return err
	}
	return w.Commit(ctx)
}

// waitRow polls record id's row until cond holds (10s at most).
func (rr *raceRun) waitRow(ctx context.Context, id int64, cond func(registry.Row, error) bool) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		row, err := rr.store.Get(ctx, typeName, id)
		if cond(row, err) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("row %d: state %s seq %d err %v after 10s", id, row.State, row.Seq, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// expectSuperseded waits for the held sync's outcome: it must have been
// discarded (its settle refused, or its work cancelled because its claim
// was no longer current). A newer sync of the record may finish first
// (the engine claims the row again as soon as the change makes it
// pending), so the outcomes after the hold are searched for the discard;
// whether a newer sync stored the right bytes is checked afterwards.
func (rr *raceRun) expectSuperseded(ctx context.Context, id int64, before int) error {
	var seen []string
	for i := before; ; i++ {
		got, err := rr.out.next(ctx, id, i, 15*time.Second)
		if err != nil {
			return fmt.Errorf("the sync held across the change was never discarded (outcomes %q): %w", seen, err)
		}
		if strings.HasPrefix(got, outSuperseded) {
			return nil
		}
		seen = append(seen, got)
		if !strings.HasPrefix(got, outSynced) {
			return fmt.Errorf("the sync held across the change ended %q, want superseded (discarded); outcomes after the hold: %q", got, seen)
		}
	}
}

// expectGone checks that record id has no row and no file at key.
func (rr *raceRun) expectGone(ctx context.Context, id int64, key string) error {
	if _, err := rr.store.Get(ctx, typeName, id); !errors.Is(err, registry.ErrNotFound) {
		return fmt.Errorf("R2: a row is left after the delete: %v", err)
	}
	if _, err := rr.sec.Stat(ctx, key); !errors.Is(err, blob.ErrNotExist) {
		return fmt.Errorf("R2: a file is left at %s after the delete: %v", key, err)
	}
	return nil
}

// waitSynced waits until record id is synced at key with bytes of SHA-256
// want, and (when it differs) nothing is left at oldKey.
func (rr *raceRun) waitSynced(ctx context.Context, id int64, key, want, oldKey string) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		row, err := rr.store.Get(ctx, typeName, id)
		if err == nil && row.State == registry.StateSynced && row.BlobKey == key {
			got, _, serr := shaOf(ctx, rr.sec, key)
			if serr != nil || got != want {
				return fmt.Errorf("synced at %s but the file is %s (%v), want %s", key, got, serr, want)
			}
			if oldKey != key {
				if _, err := rr.sec.Stat(ctx, oldKey); !errors.Is(err, blob.ErrNotExist) {
					return fmt.Errorf("the previous version is left at %s: %v", oldKey, err)
				}
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not synced at %s within 15s: state %s key %q err %v", key, row.State, row.BlobKey, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitFirstPass waits until every type's first consistency pass finished.
func waitFirstPass(ctx context.Context, sec *replicator.Secondary, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		done := true
		for _, name := range sec.Types() {
			if p := sec.Progress()[name]; p.Passes < 1 || p.Running {
				done = false
			}
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the first consistency pass did not finish within %v", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
