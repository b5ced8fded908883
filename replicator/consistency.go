package replicator

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/strategy"
)

// consistencyEngine walks every type's record ids on the primary in keyset
// batches, inserts missing registry rows as pending (backfill) and removes
// orphans (rows, and their bytes, for ids that no longer exist or left the
// scope). Its cursor survives restarts; a full pass repeats on an interval.
// Memory is bounded by three batches of ids (the one written, the one
// handed over, the one being listed) whatever the table sizes; a batch's
// orphans are at most the registry's rows in its id range.
type consistencyEngine struct {
	store    *regstore.Store
	set      *Set
	reps     map[string]Replicator
	batch    int
	interval time.Duration
	log      *zap.Logger
	wakeSync func()
	now      func() time.Time
	// eventsReady reports whether the event consumer has saved its
	// starting position; nil means do not wait. poll is how often it is
	// asked.
	eventsReady func(ctx context.Context) (bool, error)
	poll        time.Duration

	trigger chan struct{}

	mu       sync.Mutex
	progress map[string]*Progress
}

// Progress reports a type's consistency (backfill) pass.
type Progress struct {
	Replicable  string
	Running     bool      // a pass is under way
	PassStarted time.Time // when the current (or last) pass started
	// Done is the records examined in the current pass: the primary's
	// ids listed and the registry's orphans checked, counted as each is
	// handled (orphans as their rows are removed), so a pass that only
	// removes orphans shows progress too.
	Done int64
	// Total estimates Done at the end of the pass: the larger of the
	// records the last full pass examined and the registry's rows of the
	// type when this pass started (or Done, when the pass outruns it); 0
	// when unknown (a first pass over an empty registry).
	Total int64
	// Primary is the number of the primary's records (ids in scope) the
	// last full pass listed; 0 before one finished.
	Primary      int64
	Inserted     int64   // registry rows created in the current pass
	Removed      int64   // orphans removed in the current pass
	Rate         float64 // records examined per second in the current pass
	ETA          time.Duration
	LastFinished time.Time // when the last full pass finished; zero if none
	Passes       int64     // full passes completed by this process
}

func newConsistencyEngine(store *regstore.Store, set *Set, reps map[string]Replicator, cfg *SecondaryConfig, wakeSync func()) *consistencyEngine {
	return &consistencyEngine{
		store: store, set: set, reps: reps, batch: cfg.BackfillBatchSize, interval: cfg.ConsistencyInterval,
		log: cfg.Logger, wakeSync: wakeSync, now: cfg.Now, poll: cfg.PollInterval,
		trigger: make(chan struct{}, 1), progress: map[string]*Progress{},
	}
}

// Trigger asks for a full pass as soon as possible (for example after the
// event cursor fell behind the retained log).
func (c *consistencyEngine) Trigger() {
	select {
	case c.trigger <- struct{}{}:
	default:
	}
}

// Progress returns a copy of every type's progress.
func (c *consistencyEngine) Progress() map[string]Progress {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]Progress, len(c.progress))
	for k, p := range c.progress {
		out[k] = *p
	}
	return out
}

// run performs passes until ctx ends: one at start (resuming a saved
// cursor), then one per interval or on Trigger. The first pass waits for
// eventsReady (see waitForEvents).
func (c *consistencyEngine) run(ctx context.Context) error {
	if !c.waitForEvents(ctx) {
		return nil
	}
	for {
		for _, name := range c.set.Names() {
			if err := c.passType(ctx, name); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				c.log.Warn("consistency pass failed; retrying later", zap.String("replicable", name), zap.Error(err))
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c.trigger:
		case <-time.After(c.interval):
		}
	}
}

// waitForEvents waits until eventsReady reports that the event consumer
// has saved its starting position. A new consumer starts at the end of the
// outbox and leaves what came before to this pass; a pass that listed the
// primary's ids before that start would miss every record created in
// between, and nothing would bring it until the next pass. Listing after
// it leaves no gap: a record committed before the consumer's start is
// listed, one committed later has its event read. It reports false when
// ctx ends first.
func (c *consistencyEngine) waitForEvents(ctx context.Context) bool {
	if c.eventsReady == nil {
		return true
	}
	logged := false
	for {
		ok, err := c.eventsReady(ctx)
		if ok {
			return true
		}
		if !logged || err != nil {
			c.log.Info("consistency pass waits for the event consumer's start position", zap.Error(err))
			logged = true
		}
		// The consumer saves its position within moments of starting:
		// look often, not once per poll interval.
		select {
		case <-ctx.Done():
			return false
		case <-time.After(min(c.poll, eventsReadyPoll)):
		}
	}
}

// eventsReadyPoll is how often the first pass looks for the event
// consumer's starting position.
const eventsReadyPoll = 50 * time.Millisecond

func (c *consistencyEngine) setProgress(name string, f func(p *Progress)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.progress[name]
	if p == nil {
		p = &Progress{Replicable: name}
		c.progress[name] = p
	}
	f(p)
}

// page is one keyset batch of a pass, compared with the registry: the
// primary's ids after the previous page's upTo and up to its own, and what
// the registry lacks or has too many of in that range.
type page struct {
	after   int64 // the previous page's upTo
	upTo    int64
	listed  int64   // primary ids listed
	missing []int64 // listed, not tracked (ascending)
	orphans []int64 // tracked, not listed
	last    bool    // the pass's last page (upTo is MaxInt64)
	err     error
}

// passType runs one full pass for a type (from its saved cursor to the
// end). A lister goroutine lists and compares the next page while this
// one writes the current page's rows (the two use different connections
// and, on most machines, different cores); the cursor saved after a page
// is that page's end, so a pass that stops resumes after the last page
// written, never after one only listed. At most three pages are in memory.
func (c *consistencyEngine) passType(ctx context.Context, name string) error {
	s, _ := c.set.Lookup(name)
	after, err := c.store.ConsistencyCursor(ctx, name)
	if err != nil {
		return err
	}
	start := c.now()
	var tracked int64
	if counts, err := c.store.Counts(ctx); err == nil {
		tracked = counts[name].Total
	}
	c.setProgress(name, func(p *Progress) {
		p.Running, p.PassStarted, p.Done, p.Inserted, p.Removed, p.Rate, p.ETA = true, start, 0, 0, 0, 0, 0
		p.Total = max(p.Total, tracked)
	})
	defer c.setProgress(name, func(p *Progress) { p.Running = false })

	lctx, cancel := context.WithCancel(ctx)
	pages := make(chan page, 1)
	listerDone := make(chan struct{})
	go func() {
		defer close(listerDone)
		c.listPages(lctx, name, s, after, pages)
	}()
	defer func() {
		cancel()
		<-listerDone
	}()

	var done, removedBase, listedTotal int64
	for {
		var pg page
		select {
		case pg = <-pages:
		case <-ctx.Done():
			return ctx.Err()
		}
		if pg.err != nil {
			return pg.err
		}
		examinedBefore := done
		inserted, removed, err := c.apply(ctx, name, s, pg, func(examined, removedSoFar int64) {
			c.setProgress(name, func(p *Progress) {
				p.Removed = removedBase + removedSoFar
				c.updateRate(p, examinedBefore+examined, start)
			})
		})
		if err != nil {
			return err
		}
		done += int64(len(pg.orphans))
		removedBase += removed
		if inserted > 0 && c.wakeSync != nil {
			c.wakeSync()
		}
		done += pg.listed
		next := pg.upTo
		if pg.last {
			next = 0 // pass complete: the next one starts over
		}
		if err := c.store.SaveConsistencyCursor(ctx, name, next); err != nil {
			return err
		}
		c.setProgress(name, func(p *Progress) {
			p.Inserted += inserted
			p.Removed = removedBase
			c.updateRate(p, done, start)
		})
		listedTotal += pg.listed
		if pg.last {
			c.setProgress(name, func(p *Progress) {
				p.Total, p.Primary, p.LastFinished, p.ETA = done, listedTotal, c.now(), 0
				p.Passes++
			})
			c.log.Debug("consistency pass finished", zap.String("replicable", name), zap.Int64("ids", done))
			return nil
		}
	}
}

// updateRate sets p's Done to done (records examined: the primary's ids
// listed and the registry's orphans) and its rate and ETA from the pass's
// start; Total grows with Done while the pass outruns it.
func (c *consistencyEngine) updateRate(p *Progress, done int64, start time.Time) {
	p.Done = done
	if elapsed := c.now().Sub(start).Seconds(); elapsed > 0 {
		p.Rate = float64(done) / elapsed
	}
	if p.Total > done && p.Rate > 0 {
		p.ETA = time.Duration(float64(p.Total-done) / p.Rate * float64(time.Second))
	} else {
		p.ETA = 0
	}
	if p.Total < done {
		p.Total = done
	}
}

// listPages sends the pass's pages from after on to out, in order, until
// the last page, the first error (sent as a page with err set) or ctx's
// end.
func (c *consistencyEngine) listPages(ctx context.Context, name string, s strategy.Strategy, after int64, out chan<- page) {
	for {
		pg := c.listPage(ctx, name, s, after)
		select {
		case out <- pg:
		case <-ctx.Done():
			return
		}
		if pg.err != nil || pg.last {
			return
		}
		after = pg.upTo
	}
}

// listPage lists the primary's next batch of ids after after and compares
// it with the registry's ids in the same range (both sides bounded,
// DESIGN §11). A page holds at most a batch of missing ids and a batch of
// orphans: when the registry has a batch of orphans before the end of the
// listed ids (the primary deleted many records), the page ends at the
// last of them, and the next page lists again from there.
func (c *consistencyEngine) listPage(ctx context.Context, name string, s strategy.Strategy, after int64) page {
	pg := page{after: after}
	ids, err := s.IDs(ctx, after, c.batch)
	if err != nil {
		pg.err = fmt.Errorf("consistency %s: list ids after %d: %w", name, after, err)
		return pg
	}
	if err := checkAscending(ids, after); err != nil {
		pg.err = fmt.Errorf("consistency %s: %w", name, err)
		return pg
	}
	pg.last = len(ids) < c.batch
	pg.upTo = int64(math.MaxInt64)
	if !pg.last {
		pg.upTo = ids[len(ids)-1]
	}
	i := 0
	cursor := after
	for {
		tracked, err := c.store.IDsInRange(ctx, name, cursor, pg.upTo, c.batch)
		if err != nil {
			pg.err = fmt.Errorf("consistency %s: tracked ids: %w", name, err)
			return pg
		}
		lastPage := len(tracked) < c.batch
		// Merge: tracked is ascending; walk ids up to the page's end.
		pageEnd := pg.upTo
		if !lastPage {
			pageEnd = tracked[len(tracked)-1]
		}
		j := 0
		for i < len(ids) && ids[i] <= pageEnd {
			for j < len(tracked) && tracked[j] < ids[i] {
				pg.orphans = append(pg.orphans, tracked[j])
				j++
			}
			if j < len(tracked) && tracked[j] == ids[i] {
				j++
			} else {
				pg.missing = append(pg.missing, ids[i])
			}
			i++
		}
		pg.orphans = append(pg.orphans, tracked[j:]...)
		if lastPage {
			break
		}
		if len(pg.orphans) >= c.batch {
			// Bounded: end the page at the last orphan; the ids listed
			// after it are listed again by the next page.
			pg.upTo, pg.last = pageEnd, false
			pg.listed = int64(i)
			return pg
		}
		cursor = pageEnd
	}
	pg.missing = append(pg.missing, ids[i:]...)
	pg.listed = int64(len(ids))
	return pg
}

func checkAscending(ids []int64, after int64) error {
	prev := after
	for _, id := range ids {
		if id <= prev {
			return fmt.Errorf("strategy IDs not strictly ascending after %d: %d follows %d", after, id, prev)
		}
		prev = id
	}
	return nil
}

// apply inserts a page's missing ids in one statement and removes its
// orphans. The page was listed while the page before was written (a
// batch's write, or longer when it had many orphans to remove): a row the
// event consumer made since is left untouched by InsertMissing (after a
// failed COPY, by its INSERT), and a record deleted on the primary since it
// was listed gets a pending row that its first sync removes (ErrGone), as
// for a record deleted while one batch is compared. progress reports the
// orphans removed so far as they go.
func (c *consistencyEngine) apply(ctx context.Context, name string, s strategy.Strategy, pg page, progress func(examined, removed int64)) (inserted, removed int64, err error) {
	if len(pg.missing) > 0 {
		n, err := c.store.InsertMissing(ctx, name, pg.missing)
		if err != nil {
			return 0, 0, fmt.Errorf("consistency %s: insert missing: %w", name, err)
		}
		inserted = n
	}
	if len(pg.orphans) == 0 {
		return inserted, 0, nil
	}
	orphans, err := c.confirmOrphans(ctx, name, s, pg)
	if err != nil {
		return inserted, 0, err
	}
	removed, err = c.removeOrphans(ctx, name, orphans, func(n int64) { progress(int64(len(pg.orphans))-int64(len(orphans))+n, n) })
	return inserted, removed, err
}

// confirmOrphans lists the page's range on the primary again and returns
// the page's orphans it still lacks: a record created after the page was
// listed (its row made by its event, so committed on the replica before
// the registry was read) is not an orphan. One listing per page (usually
// one query), not a lookup per orphan.
func (c *consistencyEngine) confirmOrphans(ctx context.Context, name string, s strategy.Strategy, pg page) ([]int64, error) {
	present := map[int64]bool{}
	after := pg.after
	for {
		ids, err := s.IDs(ctx, after, c.batch)
		if err != nil {
			return nil, fmt.Errorf("consistency %s: check orphans after %d: %w", name, after, err)
		}
		for _, id := range ids {
			if id <= pg.upTo {
				present[id] = true
			}
		}
		if len(ids) < c.batch || ids[len(ids)-1] >= pg.upTo {
			break
		}
		after = ids[len(ids)-1]
	}
	out := make([]int64, 0, len(pg.orphans))
	for _, id := range pg.orphans {
		if !present[id] {
			out = append(out, id)
		}
	}
	return out, nil
}

// orphanChunk is how many orphan rows one removal transaction deletes
// (regstore.Store.DeleteRows, one transaction each).
const orphanChunk = 2500

// removeOrphans removes orphan rows and the bytes at their keys that no
// other row names (R7), a chunk of rows per transaction, and makes the
// removals durable once per page (one fsync per directory, after the
// chunks: a crash of the machine in between can leave an unreferenced
// file, never a row without its bytes). A chunk whose removal fails (the
// storage) is removed row by row instead, each failing row handed to the
// sync engine (deleteOrHandOver), so the pass goes on. done reports the
// rows removed so far.
func (c *consistencyEngine) removeOrphans(ctx context.Context, name string, ids []int64, done func(n int64)) (int64, error) {
	rep := c.reps[name]
	br, batched := rep.(batchRemover)
	var (
		mu          sync.Mutex
		removedKeys []string
		removed     int64
	)
	add := func(n int64) {
		mu.Lock()
		removed += n
		r := removed
		mu.Unlock()
		done(r)
	}
	// Chunks are removed orphanWorkers at a time: each is a transaction
	// of its own on its own connection, so one chunk's files are unlinked
	// while another's rows are deleted (their rows are disjoint; a key two
	// chunks share is locked by one, then seen by the other).
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(orphanWorkers)
	for start := 0; start < len(ids); start += orphanChunk {
		chunk := ids[start:min(start+orphanChunk, len(ids))]
		g.Go(func() error {
			if batched {
				gone, err := c.store.DeleteRows(gctx, name, chunk, func(ctx context.Context, keys []string) error {
					if err := br.removeBatch(ctx, keys); err != nil {
						return &removeError{err}
					}
					mu.Lock()
					removedKeys = append(removedKeys, keys...)
					mu.Unlock()
					return nil
				})
				var rerr *removeError
				switch {
				case err == nil:
					add(int64(len(gone)))
					return nil
				case !errors.As(err, &rerr):
					return fmt.Errorf("consistency %s: remove orphans: %w", name, err)
				}
			}
			// No batch removal, or the storage failed: one by one.
			for _, id := range chunk {
				ok, err := c.removeOrphan(gctx, name, id)
				if err != nil {
					return err
				}
				if ok {
					add(1)
				}
			}
			return nil
		})
	}
	err := g.Wait()
	if batched && len(removedKeys) > 0 {
		if serr := br.syncRemoved(ctx, removedKeys); serr != nil {
			c.log.Warn("making orphan removals durable failed", zap.String("replicable", name), zap.Error(serr))
		}
	}
	if removed > 0 {
		c.log.Debug("orphans removed", zap.String("replicable", name), zap.Int64("rows", removed))
	}
	return removed, err
}

// orphanWorkers is how many chunks of orphans are removed at once.
const orphanWorkers = 3

// batchRemover is implemented by replicators whose data can be removed
// many records at once (blob types over a backend implementing
// driver.BatchDeleter: blob.Bucket.RemoveBatch).
type batchRemover interface {
	// removeBatch removes the data at keys, not yet durably.
	removeBatch(ctx context.Context, keys []string) error
	// syncRemoved makes removeBatch's removals at keys durable.
	syncRemoved(ctx context.Context, keys []string) error
}

// removeOrphan removes one orphan row and its bytes (the slow path, when
// batch removal is not available or failed). A failing removal is handed
// to the sync engine: failing the pass would retry this batch for ever
// while the storage fails, and nothing after it would be backfilled.
func (c *consistencyEngine) removeOrphan(ctx context.Context, name string, id int64) (bool, error) {
	rep := c.reps[name]
	ok, handed, err := deleteOrHandOver(ctx, c.store, c.log, name, id, "", func(ctx context.Context, key string) error {
		return rep.Remove(ctx, id, key)
	})
	if handed {
		if c.wakeSync != nil {
			c.wakeSync()
		}
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("consistency %s: remove orphan %d: %w", name, id, err)
	}
	return ok, nil
}
