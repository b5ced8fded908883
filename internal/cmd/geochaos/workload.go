package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"
)

// workload is the primary application at work: it creates items of mixed
// sizes and updates (under a new, versioned key) and deletes them, each
// change with its event in the same transaction. Operations that fail
// (a database restarting) are retried until they succeed.
type workload struct {
	e *env
	r *mrand.Rand
	// contents makes each new blob's bytes (payload; shared-keys draws
	// from a small pool instead).
	contents func(r *mrand.Rand, large bool) []byte

	mu                        sync.Mutex
	live                      []int64
	created, updated, deleted int
}

func newWorkload(e *env, seed uint64) *workload {
	return &workload{e: e, r: mrand.New(mrand.NewPCG(seed, 0x9e3779b97f4a7c15)), contents: payload}
}

// seed creates n items without events (they exist before the secondary
// starts; the consistency pass backfills them), on four connections.
func (w *workload) seed(ctx context.Context, n int, large bool) error {
	const workers = 4
	var wg sync.WaitGroup
	errs := make([]error, workers)
	seeds := make([]uint64, workers)
	for i := range seeds {
		seeds[i] = w.r.Uint64()
	}
	for g := range workers {
		part := n / workers
		if g == workers-1 {
			part = n - part*(workers-1)
		}
		wg.Go(func() {
			r := mrand.New(mrand.NewPCG(seeds[g], 1))
			ids, err := w.e.App.BulkCreate(ctx, part, 0, func(int) []byte { return w.contents(r, large) })
			errs[g] = err
			w.mu.Lock()
			w.live = append(w.live, ids...)
			w.mu.Unlock()
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// step makes one random change: create (half the time), update or delete.
func (w *workload) step(ctx context.Context, large bool) error {
	w.mu.Lock()
	op := w.r.IntN(10)
	var id int64
	idx := -1
	if len(w.live) > 0 {
		idx = w.r.IntN(len(w.live))
		id = w.live[idx]
	}
	data := w.contents(w.r, large)
	if op < 5 || idx < 0 {
		w.mu.Unlock()
		var newID int64
		err := retryOp(ctx, func() error {
			var err error
			newID, err = w.e.App.Create(ctx, 0, data)
			return err
		}, nil)
		if err != nil {
			return err
		}
		w.mu.Lock()
		w.live = append(w.live, newID)
		w.created++
		w.mu.Unlock()
		return nil
	}
	if op < 8 {
		w.mu.Unlock()
		err := retryOp(ctx, func() error { return w.e.App.Update(ctx, id, data) }, nil)
		if err != nil {
			return err
		}
		w.mu.Lock()
		w.updated++
		w.mu.Unlock()
		return nil
	}
	w.live[idx] = w.live[len(w.live)-1]
	w.live = w.live[:len(w.live)-1]
	w.mu.Unlock()
	// A delete whose commit was lost in a restart finds no row when
	// retried: it is done.
	err := retryOp(ctx, func() error { return w.e.App.Delete(ctx, id, true) },
		func(err error) bool { return errors.Is(err, sql.ErrNoRows) })
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.deleted++
	w.mu.Unlock()
	return nil
}

// churn makes changes every pause until ctx ends or stop is closed, and
// returns nil then (or the first error that is not ctx's).
func (w *workload) churn(ctx context.Context, stop <-chan struct{}, pause time.Duration, large bool) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-stop:
			return nil
		default:
		}
		if err := w.step(ctx, large); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("application: %w", err)
		}
		if pause > 0 {
			time.Sleep(pause)
		}
	}
}

// churnUntilCreated churns (see churn) until the application has created
// n items, or ctx ends, and returns churn's error.
func (w *workload) churnUntilCreated(ctx context.Context, n int, pause time.Duration, large bool) error {
	stop := make(chan struct{})
	errc := make(chan error, 1)
	go func() { errc <- w.churn(ctx, stop, pause, large) }()
	for !w.createdAtLeast(n) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	return <-errc
}

// String reports what the application did.
func (w *workload) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return fmt.Sprintf("created=%d updated=%d deleted=%d", w.created, w.updated, w.deleted)
}

// createdAtLeast reports whether the churn has created n items.
func (w *workload) createdAtLeast(n int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.created >= n
}
