package main

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"time"
)

// runScaleOut: three secondary processes share one tracking database and
// one storage root; one of them is killed with SIGKILL repeatedly and
// restarted while the primary keeps changing data. The primary records
// every transfer it serves: no record may be transferred twice at the same
// time (claims are exclusive; a dead process's rows wait for its lease),
// and the three processes must converge to one exact copy.
func runScaleOut(ctx context.Context, o options) (err error) {
	const name = "scale-out"
	n := o.size(o.n, 300, 3000)
	kills := o.size(o.kills, 3, 10)
	seedN := n * 4 / 5
	e, w, err := seededEnv(ctx, o, name, envConfig{}, seedN, true)
	if err != nil {
		return err
	}
	defer e.close()
	p, err := newProcs(e, o.verbose)
	if err != nil {
		return err
	}
	var fleet [3]*child
	defer func() {
		for _, c := range fleet {
			if c != nil {
				c.kill()
			}
		}
	}()
	for i := range fleet {
		if fleet[i], err = p.start(fmt.Sprintf("scale%d", i)); err != nil {
			return err
		}
	}
	stopChurn := make(chan struct{})
	churnErr := make(chan error, 1)
	go func() { churnErr <- w.churn(ctx, stopChurn, 3*time.Millisecond, true) }()
	r := mrand.New(mrand.NewPCG(o.seed, 17))
	for i := 0; i < kills && ctx.Err() == nil; i++ {
		time.Sleep(time.Duration(400+r.IntN(1600)) * time.Millisecond)
		for j, c := range fleet {
			if exited, err := c.exited(); exited {
				return fmt.Errorf("secondary process %d exited by itself: %v (log %s)", j, err, c.log)
			}
		}
		fleet[0].kill()
		if fleet[0], err = p.start("scale0"); err != nil {
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
	o.logf(name, "%d SIGKILLs of one of three processes done; application %s; waiting for convergence", kills, w)
	d, took, cerr := e.waitConverged(ctx, o.timeout)
	var stopErrs []error
	for i, c := range fleet {
		stopErrs = append(stopErrs, c.stop())
		fleet[i] = nil
	}
	overlaps, transfers := e.Transfers.overlaps()
	o.logf(name, "transfers served: %d; records transferred twice at once: %d", transfers, len(overlaps))
	if cerr != nil {
		summary(o.out, name, d, took)
		return cerr
	}
	if err := errors.Join(stopErrs...); err != nil {
		return err
	}
	if d, err = e.compare(ctx); err != nil {
		return err
	}
	serr := summary(o.out, name, d, took)
	if len(overlaps) > 0 {
		return fmt.Errorf("records transferred twice at the same time: %v", overlaps[:min(10, len(overlaps))])
	}
	return serr
}
