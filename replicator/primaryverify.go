package replicator

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/strategy"
)

// primaryVerifier is the primary's verification engine: for every
// registered type it keeps one geo_checksums row per record (backfilled by
// a keyset walk over the strategy's ids; the publisher invalidates rows in
// the application's transactions), computes SHA-256 checksums of due rows
// with bounded concurrency, stores them only if the record's bytes did not
// change meanwhile, records missing or unreadable files as failures with
// growing backoff, and re-verifies succeeded rows after ReverifyInterval.
type primaryVerifier struct {
	cs    *regstore.ChecksumStore
	set   *Set
	sides map[string]primarySide
	cfg   *PrimaryConfig
	log   *zap.Logger

	lastBackfill time.Time // run goroutine only
}

// run verifies until ctx ends. Claimed rows whose work is interrupted are
// released; a crash leaves them to expire after Lease.
func (v *primaryVerifier) run(ctx context.Context) error {
	renewCtx, stopRenew := context.WithCancel(ctx)
	defer stopRenew()
	go v.renewLoop(renewCtx)
	for ctx.Err() == nil {
		if v.lastBackfill.IsZero() || v.cfg.Now().Sub(v.lastBackfill) >= v.cfg.ConsistencyInterval {
			v.lastBackfill = v.cfg.Now()
			for _, name := range v.set.Names() {
				if err := v.backfill(ctx, name); err != nil && ctx.Err() == nil {
					v.log.Warn("checksum backfill failed; retrying next interval", zap.String("replicable", name), zap.Error(err))
				}
			}
		}
		n, err := v.round(ctx)
		if err != nil && ctx.Err() == nil {
			v.log.Warn("primary verification round failed", zap.Error(err))
		}
		if n > 0 && err == nil {
			continue
		}
		select {
		case <-ctx.Done():
		case <-time.After(v.cfg.PollInterval):
		}
	}
	return nil
}

func (v *primaryVerifier) renewLoop(ctx context.Context) {
	every(ctx, v.cfg.Lease/3, v.log, "checksum lease renewal failed", func(ctx context.Context) error {
		return v.cs.RenewChecksums(ctx, regstore.Lease{Owner: v.cfg.Owner, Duration: v.cfg.Lease})
	})
}

// backfill walks name's record ids in keyset batches, inserts missing
// checksum rows as pending and removes the rows of records that are gone
// (both sides bounded by the batch's id range, so the cost is linear).
func (v *primaryVerifier) backfill(ctx context.Context, name string) error {
	s, _ := v.set.Lookup(name)
	batch := v.cfg.BackfillBatchSize
	var after int64
	for {
		ids, err := s.IDs(ctx, after, batch)
		if err != nil {
			return fmt.Errorf("checksum backfill %s: ids after %d: %w", name, after, err)
		}
		if err := checkAscending(ids, after); err != nil {
			return fmt.Errorf("checksum backfill %s: %w", name, err)
		}
		last := len(ids) < batch
		upTo := int64(math.MaxInt64)
		if !last {
			upTo = ids[len(ids)-1]
		}
		if _, err := v.cs.InsertMissingChecksums(ctx, name, ids); err != nil {
			return err
		}
		stray, err := v.cs.ChecksumIDsNotIn(ctx, name, after, upTo, ids)
		if err != nil {
			return err
		}
		// Re-check: a record created after the listing is not gone.
		var gone []int64
		for _, id := range stray {
			if err := v.sides[name].exists(ctx, id); errors.Is(err, strategy.ErrNotFound) {
				gone = append(gone, id)
			} else if err != nil {
				return fmt.Errorf("checksum backfill %s: check %d: %w", name, id, err)
			}
		}
		if _, err := v.cs.DeleteChecksums(ctx, name, gone); err != nil {
			return err
		}
		if last {
			return nil
		}
		after = upTo
	}
}

// round claims one batch of due rows per type and checksums them with at
// most VerifyConcurrency at a time. It returns the number of rows claimed.
func (v *primaryVerifier) round(ctx context.Context) (int, error) {
	total := 0
	for _, name := range v.set.Names() {
		claims, err := v.cs.ClaimChecksums(ctx, regstore.ChecksumClaimParams{
			Lease: regstore.Lease{Owner: v.cfg.Owner, Duration: v.cfg.Lease}, Replicable: name,
			Limit: v.cfg.VerifyBatchSize, ReverifyInterval: v.cfg.ReverifyInterval})
		if err != nil {
			return total, err
		}
		total += len(claims)
		var g errgroup.Group
		g.SetLimit(v.cfg.VerifyConcurrency)
		for _, c := range claims {
			g.Go(func() error { v.process(ctx, c); return nil })
		}
		_ = g.Wait()
	}
	return total, nil
}

// process checksums one claimed row and settles it.
func (v *primaryVerifier) process(ctx context.Context, c regstore.ChecksumClaim) {
	log := v.log.With(zap.String("replicable", c.Replicable), zap.Int64("model_record_id", c.ModelID))
	settleCtx, cancel := detached(ctx, settleTimeout)
	defer cancel()
	start := time.Now()
	sum, size, err := v.sides[c.Replicable].checksum(ctx, c.ModelID)
	switch {
	case ctx.Err() != nil:
		if rerr := v.cs.ReleaseChecksums(settleCtx, v.cfg.Owner, []regstore.ChecksumClaim{c}); rerr != nil {
			log.Warn("releasing a checksum claim failed", zap.Error(rerr))
		}
	case errors.Is(err, strategy.ErrNotFound):
		if _, derr := v.cs.DeleteChecksumIfClaim(settleCtx, v.cfg.Owner, c); derr != nil {
			log.Warn("removing the checksum row of a gone record failed", zap.Error(derr))
		}
	case err != nil:
		missing := errors.Is(err, strategy.ErrBlobMissing)
		reason := "unreadable on the primary: " + err.Error()
		if missing {
			reason = "file missing on the primary: " + err.Error()
		}
		if _, ferr := v.cs.FailChecksum(settleCtx, v.cfg.Owner, c, reason, missing); ferr != nil {
			log.Warn("recording a primary verification failure failed", zap.Error(ferr), zap.NamedError("cause", err))
		}
		log.Warn("primary verification failed", zap.String("reason", reason), zap.Int("retry_count", c.RetryCount+1))
	default:
		out, serr := v.cs.SettleChecksum(settleCtx, v.cfg.Owner, c, sum, size)
		switch {
		case serr != nil:
			log.Warn("storing a checksum failed", zap.Error(serr))
		case out == regstore.ChecksumChanged:
			log.Error("primary file changed at rest: checksum differs from the stored good one",
				zap.String("stored", c.Checksum), zap.String("now", sum), zap.Int("retry_count", c.RetryCount+1))
		case out == regstore.ChecksumStale:
			log.Debug("record changed while checksumming: discarded, pending again")
		default:
			log.Debug("checksum stored", zap.Int64("bytes", size), zap.Duration("duration", time.Since(start)))
		}
	}
}
