package replicator

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/geoframework/geo/registry"
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
	store    *registry.Store
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
	Replicable   string
	Running      bool      // a pass is under way
	PassStarted  time.Time // when the current (or last) pass started
	Done         int64     // primary ids examined in the current pass
	Total        int64     // primary ids in the last full pass (or Done when none finished yet); 0 when unknown
	Inserted     int64     // registry rows created in the current pass
	Removed      int64     // orphans removed in the current pass
	Rate         float64   // ids per second in the current pass
	ETA          time.Duration
	LastFinished time.Time // when the last full pass finished; zero if none
	Passes       int64     // full passes completed by this process
}

func newConsistencyEngine(store *registry.Store, set *Set, reps map[string]Replicator, cfg *SecondaryConfig, wakeSync func()) *consistencyEngine {
	return &consistencyEngine{
		store: store, set: set, reps: reps, batch: cfg.BackfillBatch, interval: cfg.ConsistencyInterval,
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
		select {
		case <-ctx.Done():
			return false
		case <-time.After(c.poll):
		}
	}
}

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
	c.setProgress(name, func(p *Progress) {
		p.Running, p.PassStarted, p.Done, p.Inserted, p.Removed, p.Rate, p.ETA = true, start, 0, 0, 0, 0, 0
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

	var done int64
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
		inserted, removed, err := c.apply(ctx, name, s, pg)
		if err != nil {
			return err
		}
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
		elapsed := c.now().Sub(start).Seconds()
		c.setProgress(name, func(p *Progress) {
			p.Done = done
			p.Inserted += inserted
			p.Removed += removed
			if elapsed > 0 {
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
		})
		if pg.last {
			c.setProgress(name, func(p *Progress) {
				p.Total, p.LastFinished, p.ETA = done, c.now(), 0
				p.Passes++
			})
			c.log.Debug("consistency pass finished", zap.String("replicable", name), zap.Int64("ids", done))
			return nil
		}
	}
}

// listPages sends the pass's pages from after on to out, in order, until
// the last page, the first error (sent as a page with err set) or ctx's
// end.
func (c *consistencyEngine) listPages(ctx context.Context, name string, s strategy.BlobStrategy, after int64, out chan<- page) {
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
// DESIGN §11).
func (c *consistencyEngine) listPage(ctx context.Context, name string, s strategy.BlobStrategy, after int64) page {
	var pg page
	ids, err := s.IDs(ctx, after, c.batch)
	if err != nil {
		pg.err = fmt.Errorf("consistency %s: list ids after %d: %w", name, after, err)
		return pg
	}
	if err := checkAscending(ids, after); err != nil {
		pg.err = fmt.Errorf("consistency %s: %w", name, err)
		return pg
	}
	pg.listed = int64(len(ids))
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
		cursor = pageEnd
	}
	pg.missing = append(pg.missing, ids[i:]...)
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
// failed COPY, by its INSERT), an orphan is re-checked on the primary by
// removeOrphan, and a record deleted on the primary since it was listed
// gets a pending row that its first sync removes (ErrGone), as for a
// record deleted while one batch is compared.
func (c *consistencyEngine) apply(ctx context.Context, name string, s strategy.BlobStrategy, pg page) (inserted, removed int64, err error) {
	if len(pg.missing) > 0 {
		n, err := c.store.InsertMissing(ctx, name, pg.missing)
		if err != nil {
			return 0, 0, fmt.Errorf("consistency %s: insert missing: %w", name, err)
		}
		inserted = n
	}
	for _, id := range pg.orphans {
		ok, err := c.removeOrphan(ctx, name, s, id)
		if err != nil {
			return inserted, removed, err
		}
		if ok {
			removed++
		}
	}
	return inserted, removed, nil
}

// removeOrphan removes a tracked id the primary did not list, after
// re-checking it on the replica: a record created after the listing (its
// row made by an event) is not an orphan.
func (c *consistencyEngine) removeOrphan(ctx context.Context, name string, s strategy.BlobStrategy, id int64) (bool, error) {
	_, err := s.BlobKey(ctx, id)
	if err == nil {
		return false, nil
	}
	if !errors.Is(err, strategy.ErrNotFound) {
		return false, fmt.Errorf("consistency %s: check orphan %d: %w", name, id, err)
	}
	rep := c.reps[name]
	// A failing removal is handed to the sync engine: failing the pass
	// would retry this batch for ever while the storage fails, and nothing
	// after it would be backfilled.
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
	if ok {
		c.log.Debug("orphan removed", zap.String("replicable", name), zap.Int64("model_record_id", id))
	}
	return ok, nil
}
