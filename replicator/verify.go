package replicator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/geoframework/geo/internal/regstore"
)

// verifyEngine is the secondary's verification engine. It claims synced
// rows whose verification is due (pending after a sync without a primary
// checksum, a failed verification whose retry is due, or a success older
// than ReverifyInterval), reads the primary's stored checksums for the
// batch through the replica, and has each type's Replicator check its
// local bytes, with at most VerifyConcurrency at a time:
//   - no primary checksum yet: verification stays pending, looked at again
//     after ChecksumWait;
//   - match: verification succeeded (the only place
//     verification_retry_count is reset);
//   - mismatch or local bytes missing: checksum_mismatch and both checksums
//     recorded, and the sync state becomes failed with a retry by backoff
//     on verification_retry_count, so the bytes are downloaded again (GitLab:
//     verification failure → sync failure). The count grows across
//     consecutive verify-fail → resync cycles (GitLab #607991);
//   - other errors (unreadable): verification failed, retried by backoff.
//
// Settles apply only while the row is still synced with the claimed seq:
// an event that made it pending meanwhile wins.
type verifyEngine struct {
	store    *regstore.Store
	cs       *regstore.ChecksumStore // the primary's, through the replica
	reps     map[string]Replicator
	names    []string
	cfg      *SecondaryConfig
	wake     chan struct{}
	wakeSync func()
}

func newVerifyEngine(store *regstore.Store, cs *regstore.ChecksumStore, reps map[string]Replicator, names []string, cfg *SecondaryConfig, wakeSync func()) *verifyEngine {
	return &verifyEngine{store: store, cs: cs, reps: reps, names: names, cfg: cfg,
		wake: make(chan struct{}, 1), wakeSync: wakeSync}
}

// Wake makes the engine look for due work now.
func (e *verifyEngine) Wake() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *verifyEngine) run(ctx context.Context) error {
	renewCtx, stopRenew := context.WithCancel(ctx)
	defer stopRenew()
	go e.renewLoop(renewCtx)
	for ctx.Err() == nil {
		n, err := e.round(ctx)
		if err != nil && ctx.Err() == nil {
			e.cfg.Logger.Warn("verification round failed", zap.Error(err))
		}
		if n > 0 && err == nil {
			continue
		}
		select {
		case <-ctx.Done():
		case <-e.wake:
		case <-time.After(e.cfg.PollInterval):
		}
	}
	return nil
}

func (e *verifyEngine) renewLoop(ctx context.Context) {
	every(ctx, e.cfg.Lease/3, e.cfg.Logger, "verification lease renewal failed", func(ctx context.Context) error {
		return e.store.RenewVerification(ctx, regstore.Lease{Owner: e.cfg.Owner, Duration: e.cfg.Lease})
	})
}

// round claims one batch of due rows per type and verifies them. It
// returns the number of rows claimed.
func (e *verifyEngine) round(ctx context.Context) (int, error) {
	total := 0
	for _, name := range e.names {
		if ctx.Err() != nil {
			return total, nil
		}
		// Claim with a context shutdown cannot cut: a cancelled statement
		// the server had committed would leave rows claimed unknown to us.
		cctx, ccancel := detached(ctx, claimTimeout)
		claims, err := e.store.ClaimVerification(cctx, regstore.VerifyClaimParams{
			Lease: regstore.Lease{Owner: e.cfg.Owner, Duration: e.cfg.Lease}, Replicable: name,
			Limit: e.cfg.VerifyBatchSize, ReverifyInterval: e.cfg.ReverifyInterval})
		ccancel()
		if err != nil {
			return total, err
		}
		if len(claims) == 0 {
			continue
		}
		total += len(claims)
		ids := make([]int64, len(claims))
		for i, c := range claims {
			ids[i] = c.ModelID
		}
		sums, err := e.cs.ChecksumsOf(ctx, name, ids)
		if err != nil {
			relCtx, cancel := detached(ctx, releaseTimeout)
			if rerr := e.store.ReleaseVerification(relCtx, e.cfg.Owner, claims); rerr != nil {
				e.cfg.Logger.Warn("releasing verification claims failed", zap.Error(rerr))
			}
			cancel()
			return total, fmt.Errorf("primary checksums: %w", err)
		}
		// Rows the primary has no checksum for yet wait for one, all in
		// one statement (records synced right after they were written
		// usually arrive before the primary checksummed them).
		var waiting, ready []regstore.VerifyClaim
		for _, c := range claims {
			if sums[c.ModelID] == "" {
				waiting = append(waiting, c)
			} else {
				ready = append(ready, c)
			}
		}
		if len(waiting) > 0 {
			sctx, cancel := detached(ctx, settleTimeout)
			if _, err := e.store.SettleVerifyPending(sctx, e.cfg.Owner, waiting, e.cfg.Now().Add(e.cfg.ChecksumWait)); err != nil {
				e.cfg.Logger.Warn("recording verification pending failed", zap.String("replicable", name), zap.Error(err))
				// Give the claims back rather than keep renewing them.
				if rerr := e.store.ReleaseVerification(sctx, e.cfg.Owner, waiting); rerr != nil {
					e.cfg.Logger.Warn("releasing verification claims failed", zap.Error(rerr))
				}
			}
			cancel()
		}
		var g errgroup.Group
		g.SetLimit(e.cfg.VerifyConcurrency)
		resync := false
		results := make([]bool, len(ready))
		for i, c := range ready {
			g.Go(func() error { results[i] = e.process(ctx, c, sums[c.ModelID]); return nil })
		}
		_ = g.Wait()
		for _, r := range results {
			resync = resync || r
		}
		if resync && e.wakeSync != nil {
			e.wakeSync()
		}
	}
	return total, nil
}

// process verifies one claimed row against primary (the primary's
// checksum, known) and settles it. It reports whether the row was
// sent back for a resync.
func (e *verifyEngine) process(ctx context.Context, c regstore.VerifyClaim, primary string) bool {
	log := e.cfg.Logger.With(zap.String("replicable", c.Replicable), zap.Int64("model_record_id", c.ModelID))
	settleCtx, cancel := detached(ctx, settleTimeout)
	defer cancel()
	rep := e.reps[c.Replicable]
	start := time.Now()
	res, err := rep.Verify(ctx, c.ModelID, c.BlobKey, primary)
	d := time.Since(start)
	var f regstore.VerifyFailure
	switch {
	case ctx.Err() != nil:
		if rerr := e.store.ReleaseVerification(settleCtx, e.cfg.Owner, []regstore.VerifyClaim{c}); rerr != nil {
			log.Warn("releasing a verification claim failed", zap.Error(rerr))
		}
		return false
	case errors.Is(err, ErrLocalMissing):
		f = regstore.VerifyFailure{Reason: "missing on the secondary: " + err.Error(), PrimaryChecksum: primary, Resync: true}
	case errors.Is(err, errLocalDamaged):
		// The checksum matches but the data under it does not hold (a
		// repository's objects): not a mismatch, a resync all the same.
		f = regstore.VerifyFailure{Reason: "damaged on the secondary: " + err.Error(), LocalChecksum: res.Checksum,
			PrimaryChecksum: primary, Resync: true}
	case err != nil:
		f = regstore.VerifyFailure{Reason: err.Error(), PrimaryChecksum: primary}
	case !res.Match:
		f = regstore.VerifyFailure{
			Reason:        fmt.Sprintf("checksum mismatch: local %s, primary %s", res.Checksum, primary),
			LocalChecksum: res.Checksum, PrimaryChecksum: primary, Mismatch: true, Resync: true,
		}
	default:
		if _, err := e.store.SettleVerified(settleCtx, e.cfg.Owner, c, res.Checksum); err != nil {
			log.Warn("recording a verification failed", zap.Error(err))
		}
		e.cfg.Observer.VerifyDone(VerifyEvent{Replicable: c.Replicable, ModelID: c.ModelID, OK: true, Duration: d})
		log.Debug("verified", zap.Int64("bytes", res.Size), zap.Duration("duration", d))
		return false
	}
	e.cfg.Observer.VerifyDone(VerifyEvent{Replicable: c.Replicable, ModelID: c.ModelID, OK: false, Duration: d})
	ok, serr := e.store.SettleVerifyFailed(settleCtx, e.cfg.Owner, c, f)
	if serr != nil {
		log.Warn("recording a verification failure failed", zap.Error(serr), zap.String("reason", f.Reason))
		return false
	}
	if ok {
		log.Warn("verification failed", zap.String("reason", f.Reason), zap.Bool("resync", f.Resync),
			zap.Int("verification_retry_count", c.VerificationRetryCount+1))
	}
	return ok && f.Resync
}
