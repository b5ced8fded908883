package replicator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/jmoiron/sqlx"
	"go.uber.org/zap"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/strategy"
)

// PrimaryConfig configures the primary site's side of geo.
type PrimaryConfig struct {
	// Strategies is the set of registered types (required). On the primary
	// they read the application's database without a scope.
	Strategies *Set
	// DB is the primary's database, migrated with registry.MigratePrimary
	// (required).
	DB *sqlx.DB
	// Storage is where the primary's blobs live (required unless every
	// strategy implements strategy.Opener).
	Storage blob.Storage
	// Secrets looks up secondaries' access keys (required).
	Secrets blob.Secrets
	// Logger receives structured logs; nil means none.
	Logger *zap.Logger
	// Observe, when set, is called after every transfer the endpoint
	// serves (for metrics, audits and tests).
	Observe func(replicable string, id int64, start, end time.Time, bytes int64)
}

// Primary serves the registered types to secondaries and publishes their
// events.
type Primary struct {
	cfg     PrimaryConfig
	handler http.Handler
	pub     *events.Publisher
}

// NewPrimary validates cfg and builds the transfer endpoint and publisher.
func NewPrimary(cfg PrimaryConfig) (*Primary, error) {
	switch {
	case cfg.Strategies == nil || cfg.Strategies.Len() == 0:
		return nil, errors.New("replicator: PrimaryConfig.Strategies: register at least one type")
	case cfg.DB == nil:
		return nil, errors.New("replicator: PrimaryConfig.DB is required")
	case cfg.Secrets == nil:
		return nil, errors.New("replicator: PrimaryConfig.Secrets is required")
	}
	if cfg.Storage == nil {
		for _, n := range cfg.Strategies.Names() {
			s, _ := cfg.Strategies.Lookup(n)
			if _, ok := s.(strategy.Opener); !ok {
				return nil, fmt.Errorf("replicator: PrimaryConfig.Storage is required: strategy %q does not implement strategy.Opener", n)
			}
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	p := &Primary{cfg: cfg}
	h, err := blob.NewHandler(blob.HandlerConfig{Resolve: p.resolve, Secrets: cfg.Secrets, Logger: cfg.Logger, Observe: cfg.Observe})
	if err != nil {
		return nil, fmt.Errorf("replicator: %w", err)
	}
	p.handler = h
	pub, err := events.NewPublisher(cfg.Strategies.Names())
	if err != nil {
		return nil, fmt.Errorf("replicator: %w", err)
	}
	p.pub = pub
	return p, nil
}

// Handler is the transfer endpoint (GET and HEAD
// /geo/v1/blobs/{replicable}/{id}) to mount on the primary's HTTP server.
func (p *Primary) Handler() http.Handler { return p.handler }

// Publisher records replication events; call it inside the application's
// own transactions.
func (p *Primary) Publisher() *events.Publisher { return p.pub }

// resolve opens a record's bytes for the transfer endpoint.
func (p *Primary) resolve(ctx context.Context, replicable string, id int64) (blob.Source, error) {
	s, ok := p.cfg.Strategies.Lookup(replicable)
	if !ok {
		return blob.Source{}, fmt.Errorf("%w: %q", blob.ErrUnknownReplicable, replicable)
	}
	if o, ok := s.(strategy.Opener); ok {
		rc, size, err := o.OpenBlob(ctx, id)
		if err != nil {
			return blob.Source{}, err
		}
		return blob.Source{Body: rc, Size: size}, nil
	}
	key, err := s.BlobKey(ctx, id)
	if err != nil {
		return blob.Source{}, err
	}
	if err := blob.ValidateKey(key); err != nil {
		return blob.Source{}, fmt.Errorf("strategy %s: %w", replicable, err)
	}
	r, err := p.cfg.Storage.Open(ctx, key)
	if errors.Is(err, blob.ErrNotExist) {
		return blob.Source{}, fmt.Errorf("%w: %s/%d", strategy.ErrBlobMissing, replicable, id)
	}
	if err != nil {
		return blob.Source{}, err
	}
	return blob.Source{Body: r, Size: r.Size(), ModTime: r.ModTime()}, nil
}
