package replicator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/internal/xfer"
	"github.com/geoframework/geo/strategy"
)

// blobReplicator is the framework's Replicator for a BlobStrategy: it asks
// the strategy where a record's bytes live, downloads them from the
// primary's transfer endpoint into local storage (staged, not visible), and
// removes or verifies local copies.
type blobReplicator struct {
	s       strategy.BlobStrategy
	storage *blob.Bucket
	dl      *xfer.Downloader
}

// newBlobReplicator returns the Replicator the engines use for a blob type:
// keys come from s (read on the primary's replica), bytes from the primary
// through dl, and land in local storage.
func newBlobReplicator(s strategy.BlobStrategy, local *blob.Bucket, dl *xfer.Downloader) *blobReplicator {
	return &blobReplicator{s: s, storage: local, dl: dl}
}

func (r *blobReplicator) Name() string { return r.s.Name() }

func (r *blobReplicator) Sync(ctx context.Context, job Job) (Staged, error) {
	key := job.Locator
	if key == "" {
		k, err := r.s.BlobKey(ctx, job.ModelID)
		if errors.Is(err, strategy.ErrNotFound) {
			return nil, fmt.Errorf("%w: %w", ErrGone, err)
		}
		if err != nil {
			return nil, fmt.Errorf("blob key: %w", err)
		}
		key = k
	}
	if err := strategy.ValidateKey(key); err != nil {
		return nil, fmt.Errorf("strategy %s returned a bad key for %d: %w", r.s.Name(), job.ModelID, err)
	}
	if !job.Redownload && job.PrimaryChecksum != "" {
		if st, ok := r.trySkip(ctx, job, key); ok {
			return st, nil
		}
	}
	res, err := r.dl.Fetch(ctx, r.s.Name(), job.ModelID, r.storage, key, job.PrimaryChecksum)
	if err != nil {
		// Matches transfer.ErrMissingOnPrimary or blob.ErrChecksumMismatch
		// where those apply.
		return nil, err
	}
	// Only the primary's stored checksum counts as verification: a checksum
	// the endpoint computed on the fly proved the transfer, not the copy
	// against the primary's verified state, so the row stays verification
	// pending until the primary has one. Fetch sent the stored one and
	// checked the bytes against it (the endpoint then announces none).
	primary := ""
	if job.PrimaryChecksum != "" {
		primary = res.Checksum
	}
	return &blobStaged{r: r, w: res.Writer, res: SyncResult{
		Locator: key, Size: res.Size, Checksum: res.Checksum, PrimaryChecksum: primary, Duration: res.Duration,
	}}, nil
}

// keyLookups bounds the concurrent BlobKey calls of resolveKeys for a
// strategy without BlobKeys.
const keyLookups = 8

// resolveKeys implements keyResolver: one BlobKeys query when the strategy
// is a strategy.BatchKeyer, else BlobKey per record, keyLookups at once.
// Records not found, failed lookups and invalid keys are left out: their
// syncs look them up again and report what they find.
func (r *blobReplicator) resolveKeys(ctx context.Context, ids []int64) map[int64]string {
	var found map[int64]string
	if bk, ok := r.s.(strategy.BatchKeyer); ok {
		got, err := bk.BlobKeys(ctx, ids)
		if err != nil {
			return nil
		}
		found = got
	} else {
		found = make(map[int64]string, len(ids))
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, keyLookups)
		for _, id := range ids {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				if k, err := r.s.BlobKey(ctx, id); err == nil {
					mu.Lock()
					found[id] = k
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	keys := make(map[int64]string, len(ids))
	for _, id := range ids {
		if k, ok := found[id]; ok && strategy.ValidateKey(k) == nil {
			keys[id] = k
		}
	}
	return keys
}

// trySkip reports a staged no-op when the bytes at key already match the
// primary's checksum: a restore, a re-added site, or a key another record
// shares (content-addressed types), on any attempt. The settle re-checks
// that the bytes are still there (blobStaged.Commit).
func (r *blobReplicator) trySkip(ctx context.Context, job Job, key string) (Staged, bool) {
	start := time.Now()
	rd, err := r.storage.Open(ctx, key)
	if err != nil {
		return nil, false
	}
	defer rd.Close()
	sum, n, err := blob.SHA256Reader(ctx, rd)
	if err != nil || sum != job.PrimaryChecksum {
		return nil, false
	}
	return &blobStaged{r: r, res: SyncResult{
		Locator: key, Size: n, Checksum: sum, PrimaryChecksum: job.PrimaryChecksum, Skipped: true, Duration: time.Since(start),
	}}, true
}

// Remove implements Replicator. A blob type's data is the bytes at key;
// with no key there is nothing to remove (the registry names every key a
// sync may have published at).
func (r *blobReplicator) Remove(ctx context.Context, id int64, key string) error {
	if key == "" {
		return nil
	}
	if err := strategy.ValidateKey(key); err != nil {
		return fmt.Errorf("remove %s/%d: %w", r.s.Name(), id, err)
	}
	if err := r.storage.Remove(ctx, key); err != nil {
		return fmt.Errorf("remove %s/%d: %w", r.s.Name(), id, err)
	}
	return nil
}

// removeBatch implements batchRemover.
func (r *blobReplicator) removeBatch(ctx context.Context, keys []string) error {
	if err := r.storage.RemoveBatch(ctx, keys); err != nil {
		return fmt.Errorf("remove %s: %w", r.s.Name(), err)
	}
	return nil
}

// syncRemoved implements batchRemover.
func (r *blobReplicator) syncRemoved(ctx context.Context, keys []string) error {
	return r.storage.SyncRemoved(ctx, keys)
}

func (r *blobReplicator) Verify(ctx context.Context, id int64, key string, primaryChecksum string) (VerifyResult, error) {
	if err := strategy.ValidateKey(key); err != nil {
		return VerifyResult{}, fmt.Errorf("verify %s/%d: %w", r.s.Name(), id, err)
	}
	rd, err := r.storage.Open(ctx, key)
	if errors.Is(err, blob.ErrNotExist) {
		return VerifyResult{}, fmt.Errorf("%w: %s", ErrLocalMissing, key)
	}
	if err != nil {
		return VerifyResult{}, fmt.Errorf("verify %s/%d: %w", r.s.Name(), id, err)
	}
	defer rd.Close()
	sum, n, err := blob.SHA256Reader(ctx, rd)
	if err != nil {
		return VerifyResult{}, fmt.Errorf("verify %s/%d: read: %w", r.s.Name(), id, err)
	}
	return VerifyResult{Checksum: sum, Size: n, Match: primaryChecksum != "" && sum == primaryChecksum}, nil
}

type blobStaged struct {
	r   *blobReplicator
	w   *blob.Writer // nil when the download was skipped
	res SyncResult
}

func (s *blobStaged) Result() SyncResult { return s.res }

// Commit publishes the downloaded bytes at their key. A skipped download
// publishes nothing; it checks that the bytes it found are still there:
// another record's removal may have taken them between the check and this
// row's staging of the key (from then on they stay, R7), and the row must
// not become synced without them (errSkippedBytesGone).
func (s *blobStaged) Commit(ctx context.Context) error {
	if s.w != nil {
		return s.w.Commit(ctx)
	}
	if _, err := s.r.storage.Stat(ctx, s.res.Locator); err != nil {
		if errors.Is(err, blob.ErrNotExist) {
			return fmt.Errorf("%w: %s", errSkippedBytesGone, s.res.Locator)
		}
		return err
	}
	return nil
}

func (s *blobStaged) Abort() error {
	if s.w == nil {
		return nil
	}
	return s.w.Abort()
}
