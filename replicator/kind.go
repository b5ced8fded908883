package replicator

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"net/http"

	"go.uber.org/zap"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/internal/xfer"
	"github.com/geoframework/geo/replicator/transfer"
	"github.com/geoframework/geo/strategy"
)

// kind is the seam one kind of replicable plugs into the engines through
// ("Kinds of replicable" in
// https://github.com/geoframework/geo/blob/main/docs/architecture.md). A
// kind provides:
//   - its primary side: a primarySide per type (checksum, exists) and one
//     endpoint serving all its types under a path prefix of its own;
//   - its secondary side: a Replicator per type (sync into a stage,
//     commit under the row lock, remove, verify) and the site storage
//     its locators live in, for the existence scan;
//   - the checks of the site configuration it needs (a storage, a root).
//
// Its locators live in a key space of its own (the kind's name): R7's
// reference check counts only rows of the same kind. The engines drive
// every registered type through its kind alone, with no branch on which
// kind it is.
//
// The seam is internal in v0.1.0: the kinds ship with geo (blobs and git
// repositories), and adopters register strategies of those kinds. A kind
// is stateless; what it opens for a site (a repository store, a git
// server) lives in the site's env.
type kind interface {
	// name is the kind's name in errors and docs ("blob"), and its key
	// space.
	name() string
	// checkPrimary reports what type typ (a strategy of this kind) needs
	// from cfg and lacks, as a configError naming the field.
	checkPrimary(cfg *PrimaryConfig, typ string, s strategy.Strategy) error
	// checkSecondary is checkPrimary for a secondary's configuration.
	checkSecondary(cfg *SecondaryConfig, typ string, s strategy.Strategy) error
	// replicator builds the secondary side of type s (a strategy of this
	// kind).
	replicator(s strategy.Strategy, env *secondaryEnv) (Replicator, error)
	// primary builds the primary side of type s.
	primary(s strategy.Strategy, env *primaryEnv) (primarySide, error)
	// endpoint builds the kind's part of the primary's transfer endpoint,
	// serving sides (this kind's types by name), mounted at prefix.
	endpoint(env *primaryEnv, sides map[string]primarySide) (prefix string, h http.Handler, err error)
	// storage returns the secondary's storage of the kind's data, for
	// the existence scan.
	storage(env *secondaryEnv) locatorStorage
}

// primarySide is a kind's part on the primary site, for one type: the
// primary's verification checksums through it, and the consistency of
// its checksum rows asks it whether a record still exists.
type primarySide interface {
	// checksum returns record id's checksum (lowercase hex SHA-256; each
	// kind defines what it hashes) and size (-1 when unknown). A gone
	// record gives an error matching strategy.ErrNotFound, missing data
	// one matching strategy.ErrBlobMissing.
	checksum(ctx context.Context, id int64) (string, int64, error)
	// exists returns nil when record id exists (in the primary's scope),
	// an error matching strategy.ErrNotFound when it is gone.
	exists(ctx context.Context, id int64) error
}

// locatorStorage is where a kind keeps its data on a secondary, as the
// existence scan sees it.
type locatorStorage interface {
	// locators lists every locator holding data, in byte order, or
	// returns nil when the storage cannot list (each synced row is then
	// checked with present).
	locators(ctx context.Context) iter.Seq2[string, error]
	// present reports whether data is at locator.
	present(ctx context.Context, locator string) (bool, error)
}

// kindOf returns the kind of s: the one kind whose strategy interface s
// implements. It is an error wrapping ErrUnsupportedKind when s
// implements none, or more than one.
func kindOf(s strategy.Strategy) (kind, error) {
	var found []kind
	if _, ok := s.(strategy.BlobStrategy); ok {
		found = append(found, blobKind{})
	}
	if _, ok := s.(strategy.RepositoryStrategy); ok {
		found = append(found, repositoryKind{})
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return nil, fmt.Errorf("%w: %T implements no kind's strategy interface (strategy.BlobStrategy, strategy.RepositoryStrategy)", ErrUnsupportedKind, s)
	default:
		return nil, fmt.Errorf("%w: %T implements the strategy interfaces of several kinds", ErrUnsupportedKind, s)
	}
}

// primaryEnv is what a primary site gives the kinds' primary sides.
type primaryEnv struct {
	cfg     *PrimaryConfig
	storage *blob.Bucket
	// checksum is the primary's stored checksum of a record ("" when none).
	checksum func(ctx context.Context, replicable string, id int64) (string, error)
	repos    *repoServer // opened by the repository kind's first type
}

// secondaryEnv is what a secondary site gives the kinds' replicators.
type secondaryEnv struct {
	cfg        *SecondaryConfig
	storage    *blob.Bucket
	downloader *xfer.Downloader
	repos      *repoSite // opened by the repository kind's first type
}

// close closes what the kinds opened for the site once its engines have
// stopped (they open it again on next use).
func (env *secondaryEnv) close(log *zap.Logger) {
	if env.repos != nil {
		if err := env.repos.close(); err != nil {
			log.Warn("closing the repository store failed", zap.Error(err))
		}
	}
}

// keySpaces maps every type of set to its kind's key space.
func keySpaces(set *Set) map[string]string {
	out := make(map[string]string, set.Len())
	for _, n := range set.Names() {
		k, _ := set.kindOf(n)
		out[n] = k.name()
	}
	return out
}

// blobKind is the kind of strategy.BlobStrategy types: files in the
// site's storage at a key per record.
type blobKind struct{}

func (blobKind) name() string { return "blob" }

func (blobKind) checkPrimary(cfg *PrimaryConfig, typ string, s strategy.Strategy) error {
	if cfg.Storage != nil {
		return nil
	}
	if _, ok := s.(strategy.Opener); !ok {
		return configError("PrimaryConfig.Storage", "is required: strategy %q does not implement strategy.Opener", typ)
	}
	return nil
}

func (blobKind) checkSecondary(cfg *SecondaryConfig, typ string, _ strategy.Strategy) error {
	if cfg.Storage == nil {
		return configError("SecondaryConfig.Storage", "is required (blob type %q)", typ)
	}
	return nil
}

func (blobKind) replicator(s strategy.Strategy, env *secondaryEnv) (Replicator, error) {
	return newBlobReplicator(s.(strategy.BlobStrategy), env.storage, env.downloader), nil
}

func (blobKind) primary(s strategy.Strategy, env *primaryEnv) (primarySide, error) {
	return newBlobPrimary(s.(strategy.BlobStrategy), env.storage), nil
}

// endpoint is the blob transfer endpoint, GET and HEAD
// transfer.TransferPathPrefix + "{replicable}/{id}".
func (blobKind) endpoint(env *primaryEnv, sides map[string]primarySide) (string, http.Handler, error) {
	resolve := func(ctx context.Context, replicable string, id int64) (xfer.Source, error) {
		side, ok := sides[replicable]
		if !ok {
			return xfer.Source{}, fmt.Errorf("%w: %q", strategy.ErrUnknownReplicable, replicable)
		}
		return side.(*blobPrimary).source(ctx, id)
	}
	h, err := xfer.NewHandler(xfer.HandlerConfig{Resolve: resolve, Checksum: env.checksum,
		Secrets: env.cfg.Secrets, Logger: env.cfg.Logger, Observe: env.cfg.observeTransfer})
	return transfer.TransferPathPrefix, h, err
}

func (blobKind) storage(env *secondaryEnv) locatorStorage { return blobStorage{env.storage} }

// blobStorage is the existence scan's view of the blob storage.
type blobStorage struct{ b *blob.Bucket }

func (s blobStorage) locators(ctx context.Context) iter.Seq2[string, error] { return s.b.Keys(ctx, "") }

func (s blobStorage) present(ctx context.Context, key string) (bool, error) {
	_, err := s.b.Stat(ctx, key)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, blob.ErrNotExist):
		return false, nil
	default:
		return false, err
	}
}
