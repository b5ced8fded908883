package replicator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/jmoiron/sqlx"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator/transfer"
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
	Storage *blob.Bucket
	// Secrets looks up secondaries' access keys (required).
	Secrets transfer.Secrets
	// Logger receives structured logs; nil means none.
	Logger *zap.Logger
	// Observe, when set, is called after every transfer the endpoint
	// serves (for metrics, audits and tests).
	Observe func(replicable string, id int64, start, end time.Time, bytes int64)

	// Owner names this process in checksum leases; "" means
	// hostname-pid-random.
	Owner string
	// VerifyConcurrency caps checksums computed at once by Run; 0 means 4.
	VerifyConcurrency int
	// VerifyBatch is how many due checksum rows one claim takes per type;
	// 0 means 8 × VerifyConcurrency.
	VerifyBatch int
	// ReverifyInterval is how long a stored checksum stays trusted before
	// the file is read and checked again; 0 means 7 days.
	ReverifyInterval time.Duration
	// VerifyPollInterval is how often Run looks for due checksum work when
	// it found none; 0 means 1s.
	VerifyPollInterval time.Duration
	// VerifyLease is how long a claimed checksum row stays claimed without
	// renewal (Run renews every lease/3); a dead process's rows are
	// claimable again after it. 0 means 30s; minimum 1s.
	VerifyLease time.Duration
	// VerifyBackfillBatch is the keyset batch of the checksum backfill;
	// 0 means 10,000.
	VerifyBackfillBatch int
	// VerifyBackfillInterval is how often Run walks every type's ids to
	// create missing checksum rows and remove those of gone records; 0
	// means 15m.
	VerifyBackfillInterval time.Duration
	// Retry is the backoff of failed verifications (missing or unreadable
	// files, checksums changed at rest); nil means strategy.DefaultBackoff().
	Retry strategy.RetryPolicy
	// Now is the clock for checksum rows; nil means time.Now.
	Now func() time.Time
	// EventRetention is how long Run keeps outbox events; 0 means
	// events.DefaultRetention (7 days).
	EventRetention time.Duration
	// EventPruneInterval is how often Run prunes the outbox; 0 means
	// events.DefaultPruneInterval (10 minutes).
	EventPruneInterval time.Duration
}

// validate checks cfg's tuning fields and fills in their defaults.
func (cfg *PrimaryConfig) validate() error {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"VerifyConcurrency", int64(cfg.VerifyConcurrency)}, {"VerifyBatch", int64(cfg.VerifyBatch)},
		{"ReverifyInterval", int64(cfg.ReverifyInterval)}, {"VerifyPollInterval", int64(cfg.VerifyPollInterval)},
		{"VerifyLease", int64(cfg.VerifyLease)}, {"VerifyBackfillBatch", int64(cfg.VerifyBackfillBatch)},
		{"VerifyBackfillInterval", int64(cfg.VerifyBackfillInterval)},
		{"EventRetention", int64(cfg.EventRetention)}, {"EventPruneInterval", int64(cfg.EventPruneInterval)},
	} {
		if f.v < 0 {
			return fmt.Errorf("replicator: PrimaryConfig.%s must not be negative", f.name)
		}
	}
	if cfg.Owner == "" {
		cfg.Owner = defaultOwner()
	}
	if cfg.VerifyConcurrency == 0 {
		cfg.VerifyConcurrency = 4
	}
	if cfg.VerifyBatch == 0 {
		cfg.VerifyBatch = 8 * cfg.VerifyConcurrency
	}
	if cfg.VerifyBackfillBatch == 0 {
		cfg.VerifyBackfillBatch = 10000
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	defD(&cfg.ReverifyInterval, 7*24*time.Hour)
	defD(&cfg.VerifyPollInterval, time.Second)
	defD(&cfg.VerifyLease, 30*time.Second)
	defD(&cfg.VerifyBackfillInterval, 15*time.Minute)
	if cfg.VerifyLease < time.Second {
		return fmt.Errorf("replicator: PrimaryConfig.VerifyLease %v is below the 1s minimum", cfg.VerifyLease)
	}
	if cfg.Retry == nil {
		cfg.Retry = strategy.DefaultBackoff()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return nil
}

// Primary serves the registered types to secondaries, publishes their
// events and, in Run, keeps their checksums (primary verification).
type Primary struct {
	cfg      PrimaryConfig
	handler  http.Handler
	pub      *events.Publisher
	cs       *regstore.ChecksumStore
	verifier *primaryVerifier
	// keys holds the endpoint's key batcher of each type implementing
	// strategy.BatchKeyer (and not strategy.Opener); built once.
	keys map[string]*keyBatcher
}

// NewPrimary validates cfg (a bad field is an error naming it) and builds
// the transfer endpoint and publisher. It starts nothing: Run does.
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
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	cs, err := regstore.NewChecksumStore(cfg.DB, regstore.Options{Now: cfg.Now, Retry: cfg.Retry})
	if err != nil {
		return nil, fmt.Errorf("replicator: %w", err)
	}
	p := &Primary{cfg: cfg, cs: cs, keys: map[string]*keyBatcher{}}
	for _, n := range cfg.Strategies.Names() {
		s, _ := cfg.Strategies.Lookup(n)
		if _, ok := s.(strategy.Opener); ok {
			continue
		}
		if b := newKeyBatcher(s); b != nil {
			p.keys[n] = b
		}
	}
	p.verifier = &primaryVerifier{cs: cs, set: cfg.Strategies, storage: cfg.Storage, cfg: &p.cfg, log: cfg.Logger}
	h, err := transfer.NewHandler(transfer.HandlerConfig{Resolve: p.resolve, Checksum: cs.Checksum,
		Secrets: cfg.Secrets, Logger: cfg.Logger, Observe: cfg.Observe})
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

// Run runs the primary's background work until ctx ends, then returns nil:
// the verification engine (checksums of every registered type's records,
// re-verified every ReverifyInterval; see docs/operations.md) and the
// outbox pruner (events.RunPruner with EventRetention and
// EventPruneInterval). The transfer endpoint and the publisher work
// without Run; without it, transfers of records are still verified in
// transit (the endpoint computes checksums on the fly), but secondaries have no
// stored checksum to verify their copies against.
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

// openPrimary opens record id's bytes on the primary: through the
// strategy's Opener, else from storage at its BlobKey. A gone record gives
// an error matching strategy.ErrNotFound, missing bytes one matching
// strategy.ErrBlobMissing.
func openPrimary(ctx context.Context, s strategy.BlobStrategy, storage *blob.Bucket, id int64) (io.ReadSeekCloser, int64, error) {
	rc, size, _, err := openPrimaryKey(ctx, s, s.BlobKey, storage, id)
	return rc, size, err
}

// openPrimaryKey is openPrimary that also returns the key the bytes were
// opened at ("" for a strategy.Opener), asking keyOf (s.BlobKey or a
// keyBatcher's key) for the key.
func openPrimaryKey(ctx context.Context, s strategy.BlobStrategy, keyOf func(context.Context, int64) (string, error), storage *blob.Bucket, id int64) (io.ReadSeekCloser, int64, string, error) {
	if o, ok := s.(strategy.Opener); ok {
		rc, size, err := o.OpenBlob(ctx, id)
		return rc, size, "", err
	}
	key, err := keyOf(ctx, id)
	if err != nil {
		return nil, 0, "", err
	}
	if err := strategy.ValidateKey(key); err != nil {
		return nil, 0, "", fmt.Errorf("strategy %s: %w", s.Name(), err)
	}
	r, err := storage.Open(ctx, key)
	if errors.Is(err, blob.ErrNotExist) {
		return nil, 0, "", fmt.Errorf("%w: %s/%d at %s", strategy.ErrBlobMissing, s.Name(), id, key)
	}
	if err != nil {
		return nil, 0, "", err
	}
	return r, r.Size(), key, nil
}

// resolve opens a record's bytes for the transfer endpoint, asking the key
// through the type's keyBatcher when it implements strategy.BatchKeyer
// (concurrent requests share a BlobKeys query), else BlobKey. Their checksum,
// so that the secondary verifies them in transit (R6), is the one the
// secondary sends (the primary's stored checksum, read in the batch of its
// claim), else the stored good checksum from geo_checksums (the handler's
// Checksum: one indexed lookup; a copy corrupted on the primary after it
// was taken is then rejected by the secondary instead of replacing a good
// copy), else the SHA-256 of the bytes computed by the handler, reading
// them once before serving them (a second read of the file, at about 1.4
// GB/s per core, delaying the first byte by size/1.4 GB/s; the page cache
// usually serves the second read).
func (p *Primary) resolve(ctx context.Context, replicable string, id int64) (transfer.Source, error) {
	s, ok := p.cfg.Strategies.Lookup(replicable)
	if !ok {
		return transfer.Source{}, fmt.Errorf("%w: %q", strategy.ErrUnknownReplicable, replicable)
	}
	keyOf := s.BlobKey
	if b := p.keys[replicable]; b != nil {
		keyOf = b.key
	}
	rc, size, key, err := openPrimaryKey(ctx, s, keyOf, p.cfg.Storage, id)
	if err != nil {
		return transfer.Source{}, err
	}
	src := transfer.Source{Body: rc, Size: size, Key: key}
	if r, ok := rc.(*blob.Reader); ok {
		src.ModTime = r.ModTime()
	}
	return src, nil
}
