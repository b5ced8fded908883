package replicator

import (
	"context"
	"fmt"
	"net/http"

	"golang.org/x/sync/errgroup"

	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/internal/xfer"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/strategy"
)

// Primary serves the registered types to secondaries, publishes their
// events and, in Run, keeps their checksums (primary verification).
type Primary struct {
	cfg      PrimaryConfig
	handler  http.Handler
	pub      *events.Publisher
	cs       *regstore.ChecksumStore
	verifier *primaryVerifier
	// sides holds each registered type's primary side, built by its kind.
	sides map[string]primarySide
}

// NewPrimary validates cfg (a bad field is an error naming it) and builds
// the transfer endpoint and publisher. It starts nothing: Run does.
func NewPrimary(cfg PrimaryConfig) (*Primary, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.applyDefaults()
	cs, err := regstore.NewChecksumStore(cfg.DB, regstore.Options{Now: cfg.Now, Retry: cfg.Retry})
	if err != nil {
		return nil, fmt.Errorf("replicator: %w", err)
	}
	p := &Primary{cfg: cfg, cs: cs, sides: map[string]primarySide{}}
	env := &primaryEnv{cfg: &p.cfg, storage: cfg.Storage, checksum: cs.Checksum}
	// Each type's primary side, from its kind; each kind's endpoint serves
	// its types under its own path prefix.
	byKind := map[string]map[string]primarySide{}
	kindByName := map[string]kind{}
	for _, n := range cfg.Strategies.Names() {
		s, _ := cfg.Strategies.Lookup(n)
		k, _ := cfg.Strategies.kindOf(n)
		side, err := k.primary(s, env)
		if err != nil {
			return nil, err
		}
		p.sides[n] = side
		if byKind[k.name()] == nil {
			byKind[k.name()] = map[string]primarySide{}
			kindByName[k.name()] = k
		}
		byKind[k.name()][n] = side
	}
	p.verifier = &primaryVerifier{cs: cs, set: cfg.Strategies, sides: p.sides, cfg: &p.cfg, log: cfg.Logger}
	mux := http.NewServeMux()
	for name, sides := range byKind {
		prefix, h, err := kindByName[name].endpoint(env, sides)
		if err != nil {
			return nil, fmt.Errorf("replicator: %w", err)
		}
		mux.Handle(prefix, h)
	}
	notFound, err := xfer.NewHandler(xfer.HandlerConfig{Secrets: cfg.Secrets, Logger: cfg.Logger,
		Resolve: func(context.Context, string, int64) (xfer.Source, error) {
			return xfer.Source{}, strategy.ErrUnknownReplicable
		}})
	if err != nil {
		return nil, fmt.Errorf("replicator: %w", err)
	}
	// Anything else: the blob endpoint's JSON answers (404 not_found, or
	// unknown_replicable under its prefix when no blob type is
	// registered).
	mux.Handle("/", notFound)
	p.handler = mux
	pub, err := events.NewPublisher(cfg.Strategies.Names())
	if err != nil {
		return nil, fmt.Errorf("replicator: %w", err)
	}
	p.pub = pub
	return p, nil
}

// Handler is the transfer endpoint to mount on the primary's HTTP server:
// each kind's under its own prefix, GET and HEAD
// transfer.TransferPathPrefix + "{replicable}/{id}" for blobs, git's smart
// HTTP protocol (upload-pack only) under transfer.RepositoryPathPrefix +
// "{replicable}/{id}/" for repositories, all behind the per-record
// tokens.
func (p *Primary) Handler() http.Handler { return p.handler }

// Publisher records replication events; call it inside the application's
// own transactions.
func (p *Primary) Publisher() *events.Publisher { return p.pub }

// Run runs the primary's background work until ctx ends, then returns nil:
// the verification engine (checksums of every registered type's records,
// re-verified every ReverifyInterval; see "Verification" in [Operating
// geo]) and the outbox pruner ([events.RunPruner] with EventRetention and
// EventPruneInterval). The transfer endpoint and the publisher work
// without Run; without it, transfers of records are still verified in
// transit (the endpoint computes checksums on the fly), but secondaries
// have no stored checksum to verify their copies against.
//
// [Operating geo]: https://github.com/geoframework/geo/blob/main/docs/operations.md
func (p *Primary) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.verifier.run(gctx) })
	g.Go(func() error {
		return events.RunPruner(gctx, p.cfg.DB, events.PrunerConfig{
			Retention: p.cfg.EventRetention, Interval: p.cfg.EventPruneInterval, Logger: p.cfg.Logger,
		})
	})
	return g.Wait()
}

// Checksums returns a reader of the primary's checksum table, for admin
// tools and tests.
func (p *Primary) Checksums() *registry.Checksums { return p.cs.Checksums }
