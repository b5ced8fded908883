package replicator

import (
	"context"
	"fmt"

	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/strategy"
)

// checkType returns an error matching strategy.ErrUnknownReplicable when replicable
// is not registered on this secondary.
func (s *Secondary) checkType(op, replicable string) error {
	if !s.cfg.Strategies.Has(replicable) {
		return fmt.Errorf("replicator: %s: %w: %q", op, strategy.ErrUnknownReplicable, replicable)
	}
	return nil
}

// Resync makes the tracked records ids of replicable pending again with a
// new generation, whatever their state (an operator's request): each is
// downloaded again. Untracked ids are ignored. It returns the number of
// rows changed, or an error matching strategy.ErrUnknownReplicable.
func (s *Secondary) Resync(ctx context.Context, replicable string, ids []int64) (int64, error) {
	if err := s.checkType("resync", replicable); err != nil {
		return 0, err
	}
	n, err := s.store.Resync(ctx, replicable, ids)
	if err != nil {
		return 0, fmt.Errorf("replicator: %w", err)
	}
	s.sync.Wake()
	return n, nil
}

// ResyncAll makes every row of replicable that is not pending pending
// again (only the failed ones when onlyFailed), in batches of
// registry.BatchSizeDefault rows, each its own transaction
// (registry.Store.ResyncBatches), waking the sync engine after each, so
// syncs start while the walk goes on. It returns the number of rows
// changed, or an error matching strategy.ErrUnknownReplicable; on another error
// the batches committed before it stay done. A row that fails after the
// walk passed its id is not resynced by this call.
func (s *Secondary) ResyncAll(ctx context.Context, replicable string, onlyFailed bool) (int64, error) {
	if err := s.checkType("resync all", replicable); err != nil {
		return 0, err
	}
	p, err := s.store.ResyncBatches(ctx, replicable, registry.BatchOptions{OnlyFailed: onlyFailed,
		Progress: func(registry.BatchProgress) error { s.sync.Wake(); return nil }})
	if err != nil {
		return p.Changed, fmt.Errorf("replicator: %w", err)
	}
	return p.Changed, nil
}

// Pause stops new syncs of replicable in every process sharing the
// tracking database (persisted; syncs already running finish) until
// Resume. It returns an error matching strategy.ErrUnknownReplicable for a type
// not registered here.
func (s *Secondary) Pause(ctx context.Context, replicable string) error {
	if err := s.checkType("pause", replicable); err != nil {
		return err
	}
	if err := s.store.Pause(ctx, replicable); err != nil {
		return fmt.Errorf("replicator: %w", err)
	}
	return nil
}

// Resume undoes Pause and wakes the sync engine. It returns an error
// matching strategy.ErrUnknownReplicable for a type not registered here.
func (s *Secondary) Resume(ctx context.Context, replicable string) error {
	if err := s.checkType("resume", replicable); err != nil {
		return err
	}
	if err := s.store.Resume(ctx, replicable); err != nil {
		return fmt.Errorf("replicator: %w", err)
	}
	s.sync.Wake()
	return nil
}
