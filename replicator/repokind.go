package replicator

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"net/http"
	"sync"

	"go.uber.org/zap"

	"github.com/geoframework/geo/internal/gitrepo"
	"github.com/geoframework/geo/internal/xfer"
	"github.com/geoframework/geo/replicator/transfer"
	"github.com/geoframework/geo/strategy"
)

// repositoryKind is the kind of strategy.RepositoryStrategy types: bare
// git repositories under the site's repository root, one per record at
// its RepositoryPath. The machinery is internal/gitrepo, which runs the
// git binary (its package doc says why the binary and not a pure-Go
// library): the primary serves git's smart HTTP protocol, upload-pack
// only, behind the per-record tokens; a secondary fetches into a stage
// that borrows the live copy's objects and commits it under the row lock.
// A repository's checksum is the SHA-256 of its sorted "refname
// object-id" lines.
type repositoryKind struct{}

func (repositoryKind) name() string { return "repository" }

func (repositoryKind) checkPrimary(cfg *PrimaryConfig, typ string, _ strategy.Strategy) error {
	if cfg.RepositoryRoot == "" {
		return configError("PrimaryConfig.RepositoryRoot", "is required (repository type %q)", typ)
	}
	return nil
}

func (repositoryKind) checkSecondary(cfg *SecondaryConfig, typ string, _ strategy.Strategy) error {
	if cfg.RepositoryRoot == "" {
		return configError("SecondaryConfig.RepositoryRoot", "is required (repository type %q)", typ)
	}
	return nil
}

func (repositoryKind) replicator(s strategy.Strategy, env *secondaryEnv) (Replicator, error) {
	if env.repos == nil {
		site, err := newRepoSite(env.cfg)
		if err != nil {
			return nil, err
		}
		env.repos = site
	}
	return &repoReplicator{s: s.(strategy.RepositoryStrategy), site: env.repos}, nil
}

func (repositoryKind) primary(s strategy.Strategy, env *primaryEnv) (primarySide, error) {
	if env.repos == nil {
		srv, err := newRepoServer(env.cfg)
		if err != nil {
			return nil, err
		}
		env.repos = srv
	}
	return &repoPrimary{s: s.(strategy.RepositoryStrategy), srv: env.repos.srv}, nil
}

// endpoint is the repository endpoint: git's smart HTTP protocol,
// upload-pack only, under transfer.RepositoryPathPrefix +
// "{replicable}/{id}/", behind the same per-record tokens as blobs.
func (repositoryKind) endpoint(env *primaryEnv, sides map[string]primarySide) (string, http.Handler, error) {
	resolve := func(ctx context.Context, replicable string, id int64) (http.Handler, error) {
		side, ok := sides[replicable]
		if !ok {
			return nil, fmt.Errorf("%w: %q", strategy.ErrUnknownReplicable, replicable)
		}
		return side.(*repoPrimary).serve(ctx, id)
	}
	h, err := xfer.NewRepositoryHandler(xfer.RepositoryHandlerConfig{Resolve: resolve,
		Secrets: env.cfg.Secrets, Logger: env.cfg.Logger, Observe: env.cfg.observeTransfer})
	return transfer.RepositoryPathPrefix, h, err
}

func (repositoryKind) storage(env *secondaryEnv) locatorStorage { return repoStorage{env.repos} }

// repoServer is the primary's repository server, one per site.
type repoServer struct{ srv *gitrepo.Server }

// newRepoServer checks the git binary and the primary's repository root
// (start-up errors, not first-request surprises).
func newRepoServer(cfg *PrimaryConfig) (*repoServer, error) {
	g, err := gitrepo.New(context.Background(), &gitrepo.Options{Path: cfg.GitBinary})
	if err != nil {
		return nil, configError("PrimaryConfig.GitBinary", "%v (repository types need git: apt-get install git)", err)
	}
	srv, err := gitrepo.NewServer(g, cfg.RepositoryRoot, &gitrepo.ServerOptions{
		ErrorLog: zap.NewStdLog(cfg.Logger.Named("git-http-backend")),
	})
	if err != nil {
		return nil, configError("PrimaryConfig.RepositoryRoot", "%v", err)
	}
	return &repoServer{srv: srv}, nil
}

// repoPrimary is the primary side of a repository type.
type repoPrimary struct {
	s   strategy.RepositoryStrategy
	srv *gitrepo.Server
}

// path returns record id's repository path, checked.
func (p *repoPrimary) path(ctx context.Context, id int64) (string, error) {
	rel, err := p.s.RepositoryPath(ctx, id)
	if err != nil {
		return "", err
	}
	if err := strategy.ValidateKey(rel); err != nil {
		return "", fmt.Errorf("strategy %s: %w", p.s.Name(), err)
	}
	return rel, nil
}

// serve returns the handler of record id's repository: a gone record
// gives strategy.ErrNotFound, a record whose repository is not there
// strategy.ErrBlobMissing.
func (p *repoPrimary) serve(ctx context.Context, id int64) (http.Handler, error) {
	rel, err := p.path(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := p.srv.Exists(rel); err != nil {
		return nil, p.missing(id, rel, err)
	}
	return p.srv.Handler(rel), nil
}

// missing turns gitrepo's "no repository" into strategy.ErrBlobMissing
// (the record exists, its data does not) and a hostile path into
// strategy.ErrInvalidKey.
func (p *repoPrimary) missing(id int64, rel string, err error) error {
	switch {
	case errors.Is(err, gitrepo.ErrNotRepository):
		return fmt.Errorf("%w: %s/%d: no repository at %s", strategy.ErrBlobMissing, p.s.Name(), id, rel)
	case errors.Is(err, gitrepo.ErrInvalidPath):
		return fmt.Errorf("strategy %s: %w: %w", p.s.Name(), strategy.ErrInvalidKey, err)
	}
	return err
}

// checksum is the refs checksum of record id's repository; its size is
// unknown (-1).
func (p *repoPrimary) checksum(ctx context.Context, id int64) (string, int64, error) {
	rel, err := p.path(ctx, id)
	if err != nil {
		return "", 0, err
	}
	sum, err := p.srv.Checksum(ctx, rel)
	if err != nil {
		return "", 0, p.missing(id, rel, err)
	}
	return sum, -1, nil
}

func (p *repoPrimary) exists(ctx context.Context, id int64) error {
	_, err := p.s.RepositoryPath(ctx, id)
	return err
}

// repoSite is a secondary's repository store, opened on first use and
// closed when the secondary's Run ends (a Store holds a lock and a
// temporary directory while open).
type repoSite struct {
	git    *gitrepo.Git
	root   string
	client *http.Client
	cfg    *SecondaryConfig

	mu    sync.Mutex
	store *gitrepo.Store
}

// newRepoSite checks the git binary (a start-up error when it is
// missing or too old).
func newRepoSite(cfg *SecondaryConfig) (*repoSite, error) {
	g, err := gitrepo.New(context.Background(), &gitrepo.Options{Path: cfg.GitBinary})
	if err != nil {
		return nil, configError("SecondaryConfig.GitBinary", "%v (repository types need git: apt-get install git)", err)
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: cfg.TransferTimeout}
	}
	return &repoSite{git: g, root: cfg.RepositoryRoot, client: client, cfg: cfg}, nil
}

// open returns the store, opening it on first use.
func (s *repoSite) open(ctx context.Context) (*gitrepo.Store, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.store != nil {
		return s.store, nil
	}
	st, err := gitrepo.OpenStore(ctx, s.git, s.root, &gitrepo.StoreOptions{Client: s.client})
	if err != nil {
		return nil, fmt.Errorf("repository root: %w", err)
	}
	s.store = st
	return st, nil
}

// close closes the store if it is open; the next use opens it again.
func (s *repoSite) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.store == nil {
		return nil
	}
	err := s.store.Close()
	s.store = nil
	return err
}

// repoStorage is the existence scan's view of the repository root: it
// cannot list (a walk would have to tell repositories from the
// directories above them), so each synced row's repository is checked.
type repoStorage struct{ site *repoSite }

func (repoStorage) locators(context.Context) iter.Seq2[string, error] { return nil }

func (s repoStorage) present(ctx context.Context, rel string) (bool, error) {
	st, err := s.site.open(ctx)
	if err != nil {
		return false, err
	}
	err = st.Exists(rel)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, gitrepo.ErrNotRepository):
		return false, nil
	default:
		return false, err
	}
}
