package main

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"time"
)

// runCrash: the secondary runs as a separate OS process syncing a few
// thousand blobs of mixed sizes (backfill of pre-existing ones, events for
// new ones) while the primary keeps creating, updating and deleting; it is
// killed with SIGKILL at random moments and restarted each time. After the
// last restart the churn stops and the secondary must converge to an exact
// copy: rows the dead processes held are reclaimed after their lease (R3),
// their temporary files are removed at start, nothing is lost.
func runCrash(ctx context.Context, o options) error {
	const name = "crash"
	n := o.size(o.n, 300, 5000)
	kills := o.size(o.kills, 4, 20)
	seedN := n * 9 / 10
	e, w, err := seededEnv(ctx, o, name, envConfig{}, seedN, true)
	if err != nil {
		return err
	}
	defer e.close()
	p, err := newProcs(e, o.verbose)
	if err != nil {
		return err
	}
	cur, err := p.start("crash")
	if err != nil {
		return err
	}
	defer func() { cur.kill() }()

	// The churn creates the other tenth of the items (and updates and
	// deletes some) while the secondary is killed; it stops after the
	// last kill, once it has created them.
	stopChurn := make(chan struct{})
	churnErr := make(chan error, 1)
	go func() {
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- w.churn(cctx, stopChurn, 2*time.Millisecond, true) }()
		churnErr <- <-done
	}()
	r := mrand.New(mrand.NewPCG(o.seed, 7))
	for i := 0; i < kills; i++ {
		// A random moment: 0.3 to 2.5 s after the (re)start, so kills land
		// in backfill, in claims, mid-transfer and mid-settle.
		time.Sleep(time.Duration(300+r.IntN(2200)) * time.Millisecond)
		if exited, err := cur.exited(); exited {
			return fmt.Errorf("secondary process exited by itself: %v (log %s)", err, cur.log)
		}
		cur.kill()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if cur, err = p.start("crash"); err != nil {
			return err
		}
	}
	for !w.createdAtLeast(n-seedN) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	close(stopChurn)
	if err := <-churnErr; err != nil {
		return err
	}
	o.logf(name, "%d SIGKILLs done; application %s; waiting for convergence", kills, w)
	d, took, cerr := e.waitConverged(ctx, o.timeout)
	if cerr != nil {
		summary(o.out, name, d, took)
		return cerr
	}
	if err := cur.stop(); err != nil {
		return err
	}
	// The final comparison, with no secondary running.
	if d, err = e.compare(ctx); err != nil {
		return err
	}
	return summary(o.out, name, d, took)
}
