package replicator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/internal/gitrepo"
	"github.com/geoframework/geo/internal/xfer"
	"github.com/geoframework/geo/strategy"
)

// repoReplicator is the framework's Replicator for a RepositoryStrategy:
// it asks the strategy where a record's repository lives, fetches it from
// the primary's repository endpoint into a stage that borrows the live
// copy's objects (nothing is written into the live copy meanwhile), and
// commits the stage under the row lock: new packs moved in, refs swapped
// in one transaction, stale refs removed. A record whose copy already
// matches the primary's refs checksum and passes git fsck
// --connectivity-only is settled without a fetch.
type repoReplicator struct {
	s    strategy.RepositoryStrategy
	site *repoSite
}

func (r *repoReplicator) Name() string { return r.s.Name() }

// path returns the job's repository path: the engine's, else the
// strategy's (ErrGone when the record is gone).
func (r *repoReplicator) path(ctx context.Context, job Job) (string, error) {
	rel := job.Locator
	if rel == "" {
		p, err := r.s.RepositoryPath(ctx, job.ModelID)
		if errors.Is(err, strategy.ErrNotFound) {
			return "", fmt.Errorf("%w: %w", ErrGone, err)
		}
		if err != nil {
			return "", fmt.Errorf("repository path: %w", err)
		}
		rel = p
	}
	if err := strategy.ValidateKey(rel); err != nil {
		return "", fmt.Errorf("strategy %s returned a bad repository path for %d: %w", r.s.Name(), job.ModelID, err)
	}
	return rel, nil
}

func (r *repoReplicator) Sync(ctx context.Context, job Job) (Staged, error) {
	rel, err := r.path(ctx, job)
	if err != nil {
		return nil, err
	}
	store, err := r.site.open(ctx)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	// Skip the fetch when the copy's refs already match the primary's
	// and every object they reach is there: a restore, a re-added site.
	// Matching refs with missing objects are not a copy. A copy the last
	// verification found bad is never trusted.
	if !job.Redownload && !job.Repair && job.PrimaryChecksum != "" {
		if err := store.Verify(ctx, rel, job.PrimaryChecksum, gitrepo.VerifyConnectivity); err == nil {
			return &repoStaged{store: store, res: SyncResult{Locator: rel, Checksum: job.PrimaryChecksum,
				PrimaryChecksum: job.PrimaryChecksum, Skipped: true, Duration: time.Since(start)}}, nil
		}
	}
	cfg := r.site.cfg
	url := strings.TrimSuffix(cfg.PrimaryURL, "/") + xfer.RepositoryPath(r.s.Name(), job.ModelID)
	auth, err := xfer.Authorization(cfg.Credentials, r.s.Name(), job.ModelID, cfg.Now())
	if err != nil {
		return nil, err
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := store.Fetch(fctx, gitrepo.FetchParams{RelPath: rel, URL: url, Authorization: auth, Replace: job.Repair})
	if err != nil {
		return nil, r.fetchError(ctx, url, job.ModelID, err)
	}
	sum := st.Checksum()
	if job.PrimaryChecksum != "" && sum != job.PrimaryChecksum {
		// The primary moved on since its checksum (its event will make
		// the row pending), or the transfer lied: never a success (R6).
		_ = st.Abort()
		return nil, fmt.Errorf("%w: fetched refs %s, primary %s", blob.ErrChecksumMismatch, sum, job.PrimaryChecksum)
	}
	res := SyncResult{Locator: rel, Size: st.Size(), Checksum: sum, PrimaryChecksum: job.PrimaryChecksum, Duration: time.Since(start)}
	return &repoStaged{store: store, stage: st, res: res}, nil
}

// fetchError explains a failed fetch: git says only which HTTP status it
// got, so for a refusal or a 404 the endpoint is asked once more (a HEAD
// request) for the reason in its answer: record gone (ErrRecordNotFound),
// repository missing on the primary (ErrMissingOnPrimary, the longer
// backoff), unauthorized, unknown type.
func (r *repoReplicator) fetchError(ctx context.Context, url string, id int64, err error) error {
	if ctx.Err() != nil || !(errors.Is(err, gitrepo.ErrRemoteNotFound) || errors.Is(err, gitrepo.ErrRemoteDenied)) {
		return err
	}
	cfg := r.site.cfg
	auth, aerr := xfer.Authorization(cfg.Credentials, r.s.Name(), id, cfg.Now())
	if aerr != nil {
		return err
	}
	if why := xfer.CheckAnswer(ctx, r.site.client, url+"/HEAD", auth); why != nil {
		var se *xfer.StatusError
		if errors.As(why, &se) && errors.Unwrap(se) != nil {
			return fmt.Errorf("fetch: %w", why)
		}
	}
	return err
}

// Remove renames the repository at rel out of its path and removes it
// (under the row lock; the engine calls it once no row of a repository
// type names rel). With no path there is nothing to remove.
func (r *repoReplicator) Remove(ctx context.Context, id int64, rel string) error {
	if rel == "" {
		return nil
	}
	if err := strategy.ValidateKey(rel); err != nil {
		return fmt.Errorf("remove %s/%d: %w", r.s.Name(), id, err)
	}
	store, err := r.site.open(ctx)
	if err != nil {
		return fmt.Errorf("remove %s/%d: %w", r.s.Name(), id, err)
	}
	if err := store.Remove(ctx, rel); err != nil {
		return fmt.Errorf("remove %s/%d: %w", r.s.Name(), id, err)
	}
	return nil
}

// Verify checks the copy's refs against the primary's checksum and, when
// they match, every object with a full git fsck: a ref moved on the copy
// is a mismatch, a missing or damaged object is errLocalDamaged (both
// resync; a damaged copy is fetched whole, Job.Repair).
func (r *repoReplicator) Verify(ctx context.Context, id int64, rel string, primaryChecksum string) (VerifyResult, error) {
	if err := strategy.ValidateKey(rel); err != nil {
		return VerifyResult{}, fmt.Errorf("verify %s/%d: %w", r.s.Name(), id, err)
	}
	store, err := r.site.open(ctx)
	if err != nil {
		return VerifyResult{}, fmt.Errorf("verify %s/%d: %w", r.s.Name(), id, err)
	}
	sum, err := store.Checksum(ctx, rel)
	switch {
	case errors.Is(err, gitrepo.ErrNotRepository):
		return VerifyResult{}, fmt.Errorf("%w: %s", ErrLocalMissing, rel)
	case err != nil:
		return VerifyResult{}, fmt.Errorf("verify %s/%d: %w", r.s.Name(), id, err)
	}
	res := VerifyResult{Checksum: sum, Size: -1, Match: primaryChecksum != "" && sum == primaryChecksum}
	if !res.Match {
		return res, nil
	}
	err = store.Verify(ctx, rel, primaryChecksum, gitrepo.VerifyFull)
	switch {
	case err == nil:
		return res, nil
	case errors.Is(err, gitrepo.ErrNotConnected):
		return res, fmt.Errorf("%w: %s: %w", errLocalDamaged, rel, err)
	case errors.Is(err, gitrepo.ErrChecksumMismatch):
		// A ref moved between the two reads: the copy changed meanwhile.
		return VerifyResult{Checksum: sum, Size: -1}, nil
	case errors.Is(err, gitrepo.ErrNotRepository):
		return VerifyResult{}, fmt.Errorf("%w: %s", ErrLocalMissing, rel)
	default:
		return VerifyResult{}, fmt.Errorf("verify %s/%d: %w", r.s.Name(), id, err)
	}
}

// repoStaged is a fetched repository not yet live, or a skipped fetch.
type repoStaged struct {
	store *gitrepo.Store
	stage *gitrepo.Stage // nil when the fetch was skipped
	res   SyncResult
}

func (s *repoStaged) Result() SyncResult { return s.res }

// Commit makes the stage live (under the row lock). A skipped fetch
// publishes nothing; it checks that the copy it found is still there (a
// removal by another row before this one staged the path may have taken
// it). A copy that changed between the fetch and the commit
// (gitrepo.ErrStale) asks the engine to sync again at once.
func (s *repoStaged) Commit(ctx context.Context) error {
	if s.stage == nil {
		if err := s.store.Exists(s.res.Locator); err != nil {
			if errors.Is(err, gitrepo.ErrNotRepository) {
				return fmt.Errorf("%w: %s", errSkippedBytesGone, s.res.Locator)
			}
			return err
		}
		return nil
	}
	if err := s.stage.Commit(ctx); err != nil {
		if errors.Is(err, gitrepo.ErrStale) {
			return fmt.Errorf("%w: %w", errStaleStage, err)
		}
		return err
	}
	return nil
}

func (s *repoStaged) Abort() error {
	if s.stage == nil {
		return nil
	}
	return s.stage.Abort()
}
