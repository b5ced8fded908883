package replicator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/internal/pglock"
	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/internal/xfer"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/strategy"
)

// Secondary is one secondary site process: it runs the consistency, sync,
// event and verification engines for every registered type. Several
// Secondary processes may share one tracking database: work is claimed
// row by row, and singleton loops run under advisory locks.
type Secondary struct {
	cfg      SecondaryConfig
	store    *regstore.Store
	reps     map[string]Replicator
	sync     *syncEngine
	cons     *consistencyEngine
	verify   *verifyEngine
	exist    *existenceEngine
	consumer *events.Consumer
	hb       *heartbeat
	// env is what the kinds opened for this site (a repository store).
	env *secondaryEnv
}

// NewSecondary validates cfg (a bad field is an error naming it) and wires
// the engines. It does not touch the network; Run starts the work.
func NewSecondary(cfg SecondaryConfig) (*Secondary, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.applyDefaults()
	store, err := regstore.NewStore(cfg.Tracking, regstore.Options{Now: cfg.Now, Retry: cfg.Retry,
		KeySpaces: keySpaces(cfg.Strategies)})
	if err != nil {
		return nil, fmt.Errorf("replicator: %w", err)
	}
	var limiter *rate.Limiter
	if cfg.BandwidthLimit > 0 {
		burst := int(min(cfg.BandwidthLimit, 4<<20))
		limiter = rate.NewLimiter(rate.Limit(cfg.BandwidthLimit), burst)
	}
	dl, err := xfer.NewDownloader(xfer.DownloaderConfig{
		BaseURL: cfg.PrimaryURL, Credentials: cfg.Credentials, Client: cfg.HTTPClient,
		Timeout: cfg.TransferTimeout, Limiter: limiter, Concurrency: cfg.SyncCapacityTotal,
	})
	if err != nil {
		return nil, fmt.Errorf("replicator: %w", err)
	}
	s := &Secondary{cfg: cfg, store: store, reps: map[string]Replicator{}}
	s.env = &secondaryEnv{cfg: &s.cfg, storage: cfg.Storage, downloader: dl}
	// Each type's Replicator, from its kind; and, once per kind, the
	// storage the existence scan checks for the kind's types.
	var spaces []existenceSpace
	seen := map[string]int{}
	for _, name := range cfg.Strategies.Names() {
		st, _ := cfg.Strategies.Lookup(name)
		k, _ := cfg.Strategies.kindOf(name)
		rep, err := k.replicator(st, s.env)
		if err != nil {
			return nil, err
		}
		s.reps[name] = rep
		i, ok := seen[k.name()]
		if !ok {
			i = len(spaces)
			seen[k.name()] = i
			spaces = append(spaces, existenceSpace{kind: k.name(), storage: k.storage(s.env)})
		}
		spaces[i].types = append(spaces[i].types, name)
	}
	s.sync = newSyncEngine(store, s.reps, cfg.Strategies.Names(), cfg.Owner, &s.cfg, cfg.Observer)
	// The primary's checksums, read through the replica: downloads are
	// compared with them (R6), a never-attempted row whose bytes are
	// already present and match skips the download, and verification
	// compares local copies with them.
	primarySums, err := regstore.NewChecksumStore(cfg.Primary, regstore.Options{Now: cfg.Now})
	if err != nil {
		return nil, fmt.Errorf("replicator: %w", err)
	}
	s.sync.checksums = primarySums.ChecksumsOf
	s.verify = newVerifyEngine(store, primarySums, s.reps, cfg.Strategies.Names(), &s.cfg, s.sync.Wake)
	s.cons = newConsistencyEngine(store, cfg.Strategies, s.reps, &s.cfg, s.sync.Wake)
	s.exist = &existenceEngine{
		store: store, spaces: spaces, interval: cfg.ExistenceScanInterval, log: cfg.Logger,
		wakeSync: s.sync.Wake, obs: cfg.Observer, batch: existenceBatch,
	}
	s.cons.eventsReady = func(ctx context.Context) (bool, error) {
		cursors, err := store.EventCursors(ctx)
		for _, c := range cursors {
			if c.Consumer == events.ConsumerNameDefault {
				return true, nil
			}
		}
		return false, err
	}
	consumer, err := events.NewConsumer(events.ConsumerConfig{
		Source: cfg.Primary, Tracking: cfg.Tracking, BatchSize: cfg.EventBatchSize,
		PollInterval: cfg.EventPollInterval, Handler: eventHandler{s}, Known: cfg.Strategies.Has,
		Logger: cfg.Logger, NotifyURL: cfg.NotifyURL, OnFellBehind: func(context.Context) { s.cons.Trigger() },
		OnSkipped: cfg.Observer.EventsSkipped, Now: cfg.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("replicator: %w", err)
	}
	s.consumer = consumer
	s.hb = newHeartbeat(s)
	return s, nil
}

// Store returns the tracking store, for admin tools and tests.
func (s *Secondary) Store() *registry.Store { return s.store.Store }

// Owner returns the name this process uses in leases.
func (s *Secondary) Owner() string { return s.cfg.Owner }

// Run runs every engine until ctx ends, then shuts down gracefully:
// in-flight syncs finish within ShutdownGrace or their rows are released,
// so nothing stays claimed. It returns nil after a clean shutdown.
//
// While it runs, it writes this process's heartbeat row every
// HeartbeatInterval, the first at once; when every engine has stopped it
// deletes the row, so a process stopped gracefully leaves none, and one
// killed leaves a row that turns dead (see Status).
func (s *Secondary) Run(ctx context.Context) error {
	s.hb.started = s.cfg.Now()
	defer s.hb.remove()
	defer s.env.close(s.cfg.Logger)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { s.hb.run(gctx); return nil })
	g.Go(func() error { return s.sync.run(gctx) })
	g.Go(func() error {
		pglock.Run(gctx, s.cfg.Tracking, "consistency", s.cfg.PollInterval, holding(&s.hb.consistency, s.cons.run), func(err error) {
			s.cfg.Logger.Warn("consistency engine stopped", zap.Error(err))
		})
		return nil
	})
	g.Go(func() error { return s.consumer.Run(gctx) })
	g.Go(func() error { return s.verify.run(gctx) })
	g.Go(func() error {
		pglock.Run(gctx, s.cfg.Tracking, "existence", s.cfg.PollInterval, holding(&s.hb.existence, s.exist.run), func(err error) {
			s.cfg.Logger.Warn("existence scan stopped", zap.Error(err))
		})
		return nil
	})
	g.Go(func() error { s.foldCounts(gctx); return nil })
	return g.Wait()
}

// foldCountsEvery is how often a secondary folds the registry's count
// deltas (registry.Store.FoldCounts), keeping status reads to a few
// hundred rows even while thousands of rows change per second.
const foldCountsEvery = 10 * time.Second

// foldCounts folds the registry's count deltas every foldCountsEvery
// until ctx ends. Several secondaries sharing a tracking database may all
// fold: a fold is cheap and safe alongside another.
func (s *Secondary) foldCounts(ctx context.Context) {
	every(ctx, foldCountsEvery, s.cfg.Logger, "folding registry counts failed", s.store.FoldCounts)
}

// every calls fn every d until ctx ends, logging an error of fn with msg
// (unless ctx ended).
func every(ctx context.Context, d time.Duration, log *zap.Logger, msg string, fn func(context.Context) error) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := fn(ctx); err != nil && ctx.Err() == nil {
			log.Warn(msg, zap.Error(err))
		}
	}
}

// Reverify makes the synced copies of records ids of replicable due for
// verification now (an operator's request; rows not synced are verified
// by their next sync anyway). It returns the number of rows changed, or an
// error matching strategy.ErrUnknownReplicable.
func (s *Secondary) Reverify(ctx context.Context, replicable string, ids []int64) (int64, error) {
	if err := s.checkType("reverify", replicable); err != nil {
		return 0, err
	}
	n, err := s.store.Reverify(ctx, replicable, ids)
	if err != nil {
		return 0, fmt.Errorf("replicator: %w", err)
	}
	s.verify.Wake()
	return n, nil
}

// ReverifyAll makes every synced copy of replicable due for verification
// now (only those whose verification failed when onlyFailed), in batches
// of registry.BatchSizeDefault rows, each its own transaction
// (registry.Store.ReverifyBatches), waking the verification engine after
// each. It returns the number of rows changed, or an error matching
// strategy.ErrUnknownReplicable; on another error the batches committed before it
// stay done.
func (s *Secondary) ReverifyAll(ctx context.Context, replicable string, onlyFailed bool) (int64, error) {
	if err := s.checkType("reverify all", replicable); err != nil {
		return 0, err
	}
	p, err := s.store.ReverifyBatches(ctx, replicable, registry.BatchOptions{OnlyFailed: onlyFailed,
		Progress: func(registry.BatchProgress) error { s.verify.Wake(); return nil }})
	if err != nil {
		return p.Changed, fmt.Errorf("replicator: %w", err)
	}
	return p.Changed, nil
}

// CheckStorage runs one existence scan now, as the engine does every
// ExistenceScanInterval: it lists the storage's keys beside the synced
// rows, both in key order, and makes pending again the rows whose bytes
// are gone, so they are downloaded again. It returns how many synced rows
// it checked and how many it found missing.
func (s *Secondary) CheckStorage(ctx context.Context) (checked, missing int64, err error) {
	checked, missing, err = s.exist.scan(ctx)
	if err != nil {
		return checked, missing, fmt.Errorf("replicator: check storage: %w", err)
	}
	return checked, missing, nil
}

// Progress returns each type's consistency (backfill) progress as seen by
// this process (empty for types whose pass runs in another process).
func (s *Secondary) Progress() map[string]Progress { return s.cons.Progress() }

// EventStats returns this process's event consumer's statistics: whether
// it holds the consumer lock, its cursor, the events it handled and
// skipped, its polls.
func (s *Secondary) EventStats() events.Stats { return s.consumer.Stats() }

// TriggerConsistency asks for a full consistency pass now.
func (s *Secondary) TriggerConsistency() { s.cons.Trigger() }

// eventHandler applies outbox events to the registry: created and updated
// mark the row pending (level-triggered: the worker re-reads the truth;
// R1 when a sync is in flight), deleted removes bytes and row (R2).
type eventHandler struct{ s *Secondary }

func (h eventHandler) HandleEvents(ctx context.Context, evs []events.Event) error {
	var (
		runName string
		runIDs  []int64
	)
	flush := func() error {
		if len(runIDs) == 0 {
			return nil
		}
		if _, err := h.s.store.MarkPending(ctx, runName, runIDs); err != nil {
			return fmt.Errorf("replicator: mark pending %s: %w", runName, err)
		}
		runIDs = runIDs[:0]
		return nil
	}
	woke := false
	for _, ev := range evs {
		switch ev.Op {
		case events.OpCreated, events.OpUpdated:
			if ev.Replicable != runName {
				if err := flush(); err != nil {
					return err
				}
				runName = ev.Replicable
			}
			runIDs = append(runIDs, ev.ModelID)
			woke = true
		case events.OpDeleted:
			if err := flush(); err != nil {
				return err
			}
			rep := h.s.reps[ev.Replicable]
			if rep == nil {
				continue
			}
			ev := ev
			if err := strategy.ValidateKey(ev.BlobKey); err != nil {
				// A hostile or broken key in an event never reaches the
				// disk; the key recorded at sync time still does.
				h.s.cfg.Logger.Warn("deleted event with an invalid blob key: removing only the recorded key",
					zap.Int64("event_id", ev.ID), zap.String("replicable", ev.Replicable), zap.Error(err))
				h.s.cfg.Observer.EventsSkipped(events.SkipInvalidKey, 1)
				ev.BlobKey = ""
			}
			// A failing removal must not fail the batch: it would hold
			// back every event after this one until the removal succeeds
			// (with many deletes in one batch, maybe never).
			_, handed, err := deleteOrHandOver(ctx, h.s.store, h.s.cfg.Logger, ev.Replicable, ev.ModelID, ev.BlobKey,
				func(ctx context.Context, key string) error { return rep.Remove(ctx, ev.ModelID, key) })
			if err != nil {
				return fmt.Errorf("replicator: delete %s/%d: %w", ev.Replicable, ev.ModelID, err)
			}
			woke = woke || handed
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if woke {
		h.s.sync.Wake()
	}
	return nil
}

// deleteOrHandOver deletes the row of deleted record id of replicable and
// the bytes at its keys and at key (the deleted event's key, or "") that no
// other row names (regstore.Store.Delete with remove; R7). When remove
// fails (the storage, not the registry), it hands the row to the sync
// engine instead (regstore.Store.RequeueRemoval, keeping key for removal),
// logs why and returns handedOver true with no error: the engine finds
// the record gone, removes row and bytes, or records the failure on the
// row and retries it with backoff. This is what deleted events and the
// consistency pass's orphans do, so that one failing removal holds back
// neither the events after it nor the rest of a pass.
func deleteOrHandOver(ctx context.Context, store *regstore.Store, log *zap.Logger, replicable string, id int64, key string,
	remove func(ctx context.Context, key string) error) (existed, handedOver bool, err error) {
	existed, err = store.Delete(ctx, replicable, id, key, func(ctx context.Context, key string) error {
		if err := remove(ctx, key); err != nil {
			return &removeError{err}
		}
		return nil
	})
	var rerr *removeError
	if !errors.As(err, &rerr) || ctx.Err() != nil {
		return existed, false, err
	}
	named, qerr := store.RequeueRemoval(ctx, replicable, id, key)
	if qerr != nil {
		return existed, false, fmt.Errorf("%w (and handing it to the sync engine failed: %w)", err, qerr)
	}
	log.Warn("removing a deleted record's bytes failed: the sync engine retries it",
		zap.String("replicable", replicable), zap.Int64("model_record_id", id), zap.Error(err))
	if !named {
		// The row already names other unsettled bytes: nothing records
		// key. Bytes there can only be a copy the registry never knew
		// of (a restored site); say so.
		log.Warn("a deleted record's key is not recorded for removal: bytes there, if any, stay",
			zap.String("replicable", replicable), zap.Int64("model_record_id", id), zap.String("blob_key", key))
	}
	return existed, true, nil
}

// removeError marks a failure of the storage (not of the registry) inside
// deleteOrHandOver's remove.
type removeError struct{ err error }

func (e *removeError) Error() string { return e.err.Error() }
func (e *removeError) Unwrap() error { return e.err }

// Wake tells the sync engine that work may be due now (for example after
// rows were marked pending by another process or an admin call).
func (s *Secondary) Wake() { s.sync.Wake() }
