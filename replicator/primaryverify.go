package replicator

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/geoframework/geo/blob"
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
	cs      *regstore.ChecksumStore
	set     *Set
	storage *blob.Bucket
	cfg     *PrimaryConfig
	log     *zap.Logger

	lastBackfill time.Time // run goroutine only
}

// run verifies until ctx ends. Claimed rows whose work is interrupted are
// released; a crash leaves them to expire after Lease.
func (v *primaryVerifier) run(ctx context.Context) error {
	renewCtx, stopRenew := context.WithCancel(ctx)
	defer stopRenew()
	go v.renewLoop(renewCtx)
	for ctx.Err() == nil {
		if v.lastBackfill.IsZero() || v.cfg.Now().Sub(v.lastBackfill) >= v.cfg.VerifyBackfillInterval {
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
		case <-time.After(v.cfg.VerifyPollInterval):
		}
	}
	return nil
}

func (v *primaryVerifier) renewLoop(ctx context.Context) {
	every(ctx, v.cfg.VerifyLease/3, v.log, "checksum lease renewal failed", func(ctx context.Context) error {
		return v.cs.RenewChecksums(ctx, regstore.Lease{Owner: v.cfg.Owner, Duration: v.cfg.VerifyLease})
	})
}

// backfill walks name's record ids in keyset batches, inserts missing
// checksum rows as pending and removes the rows of records that are gone
// (both sides bounded by the batch's id range, so the cost is linear).
func (v *primaryVerifier) backfill(ctx context.Context, name string) error {
	s, _ := v.set.Lookup(name)
	batch := v.cfg.VerifyBackfillBatch
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
			if _, err := s.BlobKey(ctx, id); errors.Is(err, strategy.ErrNotFound) {
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
			Lease: regstore.Lease{Owner: v.cfg.Owner, Duration: v.cfg.VerifyLease}, Replicable: name,
			Limit: v.cfg.VerifyBatch, ReverifyInterval: v.cfg.ReverifyInterval})
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
	settleCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	s, _ := v.set.Lookup(c.Replicable)
	start := time.Now()
	sum, size, err := v.checksum(ctx, s, c.ModelID)
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

// checksum returns record id's SHA-256 and size (-1 when unknown): from
// the strategy's Checksummer, else by reading the bytes from its Opener or
// from the primary's storage at BlobKey. A record that is gone gives an
// error matching strategy.ErrNotFound; missing bytes one matching
// strategy.ErrBlobMissing.
func (v *primaryVerifier) checksum(ctx context.Context, s strategy.BlobStrategy, id int64) (string, int64, error) {
	if cs, ok := s.(strategy.Checksummer); ok {
		sum, err := cs.BlobChecksum(ctx, id)
		return sum, -1, err
	}
	rc, _, err := openPrimary(ctx, s, v.storage, id)
	if err != nil {
		return "", 0, err
	}
	defer rc.Close()
	return blob.SHA256Reader(ctx, rc)
}
