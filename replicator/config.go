package replicator

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/jmoiron/sqlx"
	"go.uber.org/zap"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/replicator/transfer"
	"github.com/geoframework/geo/strategy"
)

// ErrInvalidConfig is returned (wrapped) by NewPrimary and NewSecondary for
// a configuration they refuse; the message names the field. It is
// events.ErrInvalidConfig, so errors.Is matches either name.
var ErrInvalidConfig = events.ErrInvalidConfig

// Defaults of PrimaryConfig and SecondaryConfig. A knob both sites have has
// one name and one default on both; a zero field means its default.
const (
	// LeaseDefault is the default Lease: how long a claimed row (a sync, a
	// local verification, a primary checksum) stays claimed without renewal.
	// Leases are renewed every third of it.
	LeaseDefault = 30 * time.Second
	// LeaseMin is the shortest Lease accepted.
	LeaseMin = time.Second
	// PollIntervalDefault is the default PollInterval: how often the
	// engines look for due work when nothing woke them.
	PollIntervalDefault = time.Second
	// ReverifyIntervalDefault is the default ReverifyInterval: how long a
	// checksum (the primary's) or a verified copy (a secondary's) stays
	// trusted before its data is read and checked again.
	ReverifyIntervalDefault = 7 * 24 * time.Hour
	// VerifyConcurrencyDefault is the default VerifyConcurrency.
	VerifyConcurrencyDefault = 4
	// VerifyBatchPerWorker gives VerifyBatchSize's default:
	// VerifyBatchPerWorker × VerifyConcurrency rows per claim.
	VerifyBatchPerWorker = 8
	// BackfillBatchSizeDefault is the default BackfillBatchSize: the ids
	// one keyset step of a consistency pass lists.
	BackfillBatchSizeDefault = 10_000
	// ConsistencyIntervalDefault is the default ConsistencyInterval: how
	// often a full consistency pass (secondary: registry rows; primary:
	// checksum rows) repeats.
	ConsistencyIntervalDefault = 15 * time.Minute

	// SyncCapacityPerTypeDefault is the default
	// SecondaryConfig.SyncCapacityPerType.
	SyncCapacityPerTypeDefault = 32
	// ShutdownGraceDefault is the default SecondaryConfig.ShutdownGrace.
	ShutdownGraceDefault = 10 * time.Second
	// TransferTimeoutDefault is the default SecondaryConfig.TransferTimeout.
	TransferTimeoutDefault = 30 * time.Second
	// EventBatchSizeDefault is the default SecondaryConfig.EventBatchSize
	// (events.ConsumerConfig.BatchSize's default).
	EventBatchSizeDefault = events.BatchSizeDefault
	// EventPollIntervalDefault is the default
	// SecondaryConfig.EventPollInterval (events.ConsumerConfig's default).
	EventPollIntervalDefault = events.PollIntervalDefault
	// EventPollIntervalMax is the longest EventPollInterval accepted.
	EventPollIntervalMax = events.PollIntervalMax
	// ChecksumWaitDefault is the default SecondaryConfig.ChecksumWait (or
	// ReverifyInterval, when that is shorter).
	ChecksumWaitDefault = time.Minute
	// ExistenceScanIntervalDefault is the default
	// SecondaryConfig.ExistenceScanInterval.
	ExistenceScanIntervalDefault = 10 * time.Minute

	// EventRetentionDefault is the default PrimaryConfig.EventRetention
	// (events.PrunerConfig's default).
	EventRetentionDefault = events.RetentionDefault
	// EventPruneIntervalDefault is the default
	// PrimaryConfig.EventPruneInterval (events.PrunerConfig's default).
	EventPruneIntervalDefault = events.PruneIntervalDefault

	// GitBinaryDefault is the default PrimaryConfig.GitBinary and
	// SecondaryConfig.GitBinary: git, looked up on PATH (Debian's git
	// package).
	GitBinaryDefault = "git"
)

// PrimaryConfig configures the primary site's side of geo. Required fields
// are marked; every other field has the documented default when zero.
type PrimaryConfig struct {
	// Strategies is the set of registered types (required). On the primary
	// they read the application's database without a scope.
	Strategies *Set
	// DB is the primary's database, migrated with registry.MigratePrimary
	// (required).
	DB *sqlx.DB
	// Storage is where the primary's blobs live (required when a blob
	// type is registered, unless every blob strategy implements
	// strategy.Opener).
	Storage *blob.Bucket
	// RepositoryRoot is the directory holding the primary's bare git
	// repositories, each at its record's RepositoryPath (required when a
	// repository type is registered; it must exist). The primary serves
	// them read-only, upload-pack only, under
	// transfer.RepositoryPathPrefix; it never writes there.
	RepositoryRoot string
	// GitBinary is the git binary repository types run (a name looked up
	// on PATH, or a path); "" means GitBinaryDefault. NewPrimary checks
	// that it runs and is recent enough (gitrepo.MinGitVersion).
	GitBinary string
	// Secrets looks up secondaries' access keys (required).
	Secrets transfer.Secrets
	// Logger receives structured logs; nil means none.
	Logger *zap.Logger
	// Observer receives the primary's engine events (Observer.TransferServed
	// after every transfer the endpoint serves), for metrics, audits and
	// tests; nil means none.
	Observer Observer

	// Owner names this process in checksum leases; "" means
	// hostname-pid-random.
	Owner string
	// Lease is how long a claimed checksum row stays claimed without
	// renewal (Run renews every Lease/3); a dead process's rows are
	// claimable again after it. 0 means LeaseDefault; minimum LeaseMin.
	Lease time.Duration
	// PollInterval is how often Run looks for due checksum work when it
	// found none; 0 means PollIntervalDefault.
	PollInterval time.Duration
	// VerifyConcurrency caps checksums computed at once by Run; 0 means
	// VerifyConcurrencyDefault.
	VerifyConcurrency int
	// VerifyBatchSize is how many due checksum rows one claim takes per
	// type; 0 means VerifyBatchPerWorker × VerifyConcurrency.
	VerifyBatchSize int
	// ReverifyInterval is how long a stored checksum stays trusted before
	// the file is read and checked again; 0 means ReverifyIntervalDefault.
	ReverifyInterval time.Duration
	// BackfillBatchSize is the keyset batch of the checksum rows'
	// consistency pass; 0 means BackfillBatchSizeDefault.
	BackfillBatchSize int
	// ConsistencyInterval is how often Run walks every type's ids to
	// create missing checksum rows and remove those of gone records; 0
	// means ConsistencyIntervalDefault.
	ConsistencyInterval time.Duration
	// Retry is the backoff of failed verifications (missing or unreadable
	// files, checksums changed at rest); nil means strategy.DefaultBackoff().
	Retry strategy.RetryPolicy
	// Now is the clock for checksum rows; nil means time.Now.
	Now func() time.Time
	// EventRetention is how long Run keeps outbox events; 0 means
	// EventRetentionDefault.
	EventRetention time.Duration
	// EventPruneInterval is how often Run prunes the outbox; 0 means
	// EventPruneIntervalDefault.
	EventPruneInterval time.Duration
}

// SecondaryConfig configures a secondary site's process. Required fields
// are marked; every other field has the documented default when zero.
type SecondaryConfig struct {
	// Strategies is the set of registered types (required, non-empty). The
	// strategies read the primary's database through Primary.
	Strategies *Set
	// Tracking is the secondary's own tracking database, migrated with
	// registry.MigrateTracking (required).
	Tracking *sqlx.DB
	// Primary is a read-only handle to the primary's database: in
	// production a streaming replica (required). geo never writes there.
	Primary *sqlx.DB
	// PrimaryURL is the base URL of the primary's transfer endpoint, e.g.
	// "https://primary.example.com" (required).
	PrimaryURL string
	// Credentials identify this secondary to the primary (required).
	Credentials transfer.Credentials
	// Storage is where this site keeps its copies of blobs (required when
	// a blob type is registered).
	Storage *blob.Bucket
	// RepositoryRoot is the directory where this site keeps its copies of
	// git repositories, each at its record's RepositoryPath (required when
	// a repository type is registered; created if missing). It must be a
	// directory of its own, on one filesystem, not inside Storage's root:
	// stages and removed repositories live in its .geo-tmp directory so
	// that they move in and out with one rename.
	RepositoryRoot string
	// GitBinary is the git binary repository types run (a name looked up
	// on PATH, or a path); "" means GitBinaryDefault. NewSecondary checks
	// that it runs and is recent enough.
	GitBinary string
	// Logger receives structured logs; nil means none.
	Logger *zap.Logger
	// Observer receives the secondary's engine events (syncs,
	// verifications, skipped events, missing copies), for metrics; nil
	// means none.
	Observer Observer

	// Owner names this process in registry leases and in its heartbeat
	// row; "" means hostname-pid-random. Processes sharing a tracking
	// database need distinct owners.
	Owner string
	// Lease is how long a claimed row (a sync or a verification) stays
	// claimed without renewal; a dead worker's rows are reclaimable after
	// it. 0 means LeaseDefault; minimum LeaseMin.
	Lease time.Duration
	// PollInterval is how often the engines look for work when nothing
	// wakes them; 0 means PollIntervalDefault.
	PollInterval time.Duration
	// HeartbeatInterval is how often Run writes this process's heartbeat
	// row (geo_processes): status reports call a process whose row is
	// older than registry.ProcessDeadAfterBeats intervals dead, and none
	// alive unhealthy. 0 means HeartbeatIntervalDefault; minimum
	// HeartbeatIntervalMin.
	HeartbeatInterval time.Duration
	// SyncCapacityPerType caps concurrent syncs per type; 0 means
	// SyncCapacityPerTypeDefault. A slot is cheap (a goroutine, a
	// temporary file, a pooled buffer while bytes flow) and each sync
	// holds it through claim, transfer and fsync, so small files need many
	// in flight to keep a machine busy (geo's performance notes,
	// https://github.com/geoframework/geo/blob/main/docs/performance.md).
	SyncCapacityPerType int
	// SyncCapacityTotal caps concurrent syncs over all types; 0 means
	// SyncCapacityPerType × the number of types.
	SyncCapacityTotal int
	// ShutdownGrace is how long Run lets in-flight syncs finish after its
	// context ends before releasing their rows; 0 means
	// ShutdownGraceDefault.
	ShutdownGrace time.Duration
	// BandwidthLimit caps all transfers together, in bytes per second;
	// 0 means unlimited.
	BandwidthLimit int64
	// TransferTimeout fails a transfer that stalls (no bytes) this long;
	// 0 means TransferTimeoutDefault.
	TransferTimeout time.Duration
	// HTTPClient is used for transfers; nil means a client tuned to the
	// sync capacity.
	HTTPClient *http.Client
	// BackfillBatchSize is the consistency pass's keyset batch; 0 means
	// BackfillBatchSizeDefault.
	BackfillBatchSize int
	// ConsistencyInterval is how often a full consistency pass repeats;
	// 0 means ConsistencyIntervalDefault.
	ConsistencyInterval time.Duration
	// EventBatchSize is how many outbox events the consumer reads at once;
	// 0 means EventBatchSizeDefault.
	EventBatchSize int
	// EventPollInterval is how often the consumer polls the outbox; 0
	// means EventPollIntervalDefault; at most EventPollIntervalMax.
	EventPollInterval time.Duration
	// NotifyURL optionally names the primary's database (not a standby)
	// for LISTEN, a wake-up hint only; "" means polling alone.
	NotifyURL string
	// ExistenceScanInterval is how often the existence scan lists the
	// storage's keys beside the registry's synced rows and makes rows whose
	// bytes are gone pending again (R7: a row never stays synced without
	// its bytes for longer than this plus one scan; geo's operations guide
	// gives a scan's time at 1,000,000 rows,
	// https://github.com/geoframework/geo/blob/main/docs/operations.md). 0 means
	// ExistenceScanIntervalDefault.
	ExistenceScanInterval time.Duration
	// ReverifyInterval is how long a verified copy stays trusted before it
	// is read and checked again; 0 means ReverifyIntervalDefault.
	ReverifyInterval time.Duration
	// VerifyConcurrency caps local verifications running at once (reading
	// and hashing local copies); 0 means VerifyConcurrencyDefault.
	VerifyConcurrency int
	// VerifyBatchSize is how many rows one verification claim takes per
	// type; 0 means VerifyBatchPerWorker × VerifyConcurrency.
	VerifyBatchSize int
	// ChecksumWait is how long a synced row whose primary checksum is not
	// known yet waits before verification looks again; 0 means the smaller
	// of ChecksumWaitDefault and ReverifyInterval.
	ChecksumWait time.Duration
	// Retry is the backoff policy for failures; nil means
	// strategy.DefaultBackoff().
	Retry strategy.RetryPolicy
	// Now is the clock; nil means time.Now. Tests pass a fake clock.
	Now func() time.Time
}

// configError returns an error wrapping ErrInvalidConfig that names the
// field of the config (e.g. "SecondaryConfig.Lease").
func configError(field, format string, args ...any) error {
	return fmt.Errorf("replicator: %w: %s %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...))
}

// field is one tuning field checked for a negative value.
type field struct {
	name string
	v    int64
}

// noneNegative returns the error for the first negative field.
func noneNegative(config string, fields ...field) error {
	for _, f := range fields {
		if f.v < 0 {
			return configError(config+"."+f.name, "must not be negative")
		}
	}
	return nil
}

// orDefault sets *v to d when it is zero.
func orDefault[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}

// validate checks cfg as given: required fields and signs.
func (cfg *PrimaryConfig) validate() error {
	switch {
	case cfg.Strategies == nil || cfg.Strategies.Len() == 0:
		return configError("PrimaryConfig.Strategies", "is empty: register at least one type")
	case cfg.DB == nil:
		return configError("PrimaryConfig.DB", "is required")
	case cfg.Secrets == nil:
		return configError("PrimaryConfig.Secrets", "is required")
	}
	// What each type's kind needs (a storage, a repository root).
	for _, n := range cfg.Strategies.Names() {
		s, _ := cfg.Strategies.Lookup(n)
		k, _ := cfg.Strategies.kindOf(n)
		if err := k.checkPrimary(cfg, n, s); err != nil {
			return err
		}
	}
	if err := noneNegative("PrimaryConfig",
		field{"Lease", int64(cfg.Lease)}, field{"PollInterval", int64(cfg.PollInterval)},
		field{"VerifyConcurrency", int64(cfg.VerifyConcurrency)}, field{"VerifyBatchSize", int64(cfg.VerifyBatchSize)},
		field{"ReverifyInterval", int64(cfg.ReverifyInterval)}, field{"BackfillBatchSize", int64(cfg.BackfillBatchSize)},
		field{"ConsistencyInterval", int64(cfg.ConsistencyInterval)},
		field{"EventRetention", int64(cfg.EventRetention)}, field{"EventPruneInterval", int64(cfg.EventPruneInterval)},
	); err != nil {
		return err
	}
	if cfg.Lease != 0 && cfg.Lease < LeaseMin {
		return configError("PrimaryConfig.Lease", "%v is below the %v minimum", cfg.Lease, LeaseMin)
	}
	return nil
}

// applyDefaults fills in the zero fields of a validated cfg.
func (cfg *PrimaryConfig) applyDefaults() {
	orDefault(&cfg.Logger, zap.NewNop())
	if cfg.Observer == nil {
		cfg.Observer = NopObserver{}
	}
	orDefault(&cfg.Owner, defaultOwner())
	orDefault(&cfg.Lease, LeaseDefault)
	orDefault(&cfg.PollInterval, PollIntervalDefault)
	orDefault(&cfg.VerifyConcurrency, VerifyConcurrencyDefault)
	orDefault(&cfg.VerifyBatchSize, VerifyBatchPerWorker*cfg.VerifyConcurrency)
	orDefault(&cfg.ReverifyInterval, ReverifyIntervalDefault)
	orDefault(&cfg.BackfillBatchSize, BackfillBatchSizeDefault)
	orDefault(&cfg.ConsistencyInterval, ConsistencyIntervalDefault)
	orDefault(&cfg.EventRetention, EventRetentionDefault)
	orDefault(&cfg.EventPruneInterval, EventPruneIntervalDefault)
	orDefault(&cfg.GitBinary, GitBinaryDefault)
	if cfg.Retry == nil {
		cfg.Retry = strategy.DefaultBackoff()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
}

// validate checks c as given: required fields, signs and bounds.
func (c *SecondaryConfig) validate() error {
	switch {
	case c.Strategies == nil || c.Strategies.Len() == 0:
		return configError("SecondaryConfig.Strategies", "is empty: register at least one type")
	case c.Tracking == nil:
		return configError("SecondaryConfig.Tracking", "is required")
	case c.Primary == nil:
		return configError("SecondaryConfig.Primary", "is required (a read-only handle to the primary's database)")
	case c.PrimaryURL == "":
		return configError("SecondaryConfig.PrimaryURL", "is required")
	case c.Credentials.AccessKey == "" || len(c.Credentials.Secret) == 0:
		return configError("SecondaryConfig.Credentials", "needs an access key and a secret")
	}
	for _, n := range c.Strategies.Names() {
		s, _ := c.Strategies.Lookup(n)
		k, _ := c.Strategies.kindOf(n)
		if err := k.checkSecondary(c, n, s); err != nil {
			return err
		}
	}
	if err := noneNegative("SecondaryConfig",
		field{"Lease", int64(c.Lease)}, field{"PollInterval", int64(c.PollInterval)},
		field{"HeartbeatInterval", int64(c.HeartbeatInterval)},
		field{"SyncCapacityPerType", int64(c.SyncCapacityPerType)}, field{"SyncCapacityTotal", int64(c.SyncCapacityTotal)},
		field{"ShutdownGrace", int64(c.ShutdownGrace)}, field{"BandwidthLimit", c.BandwidthLimit},
		field{"TransferTimeout", int64(c.TransferTimeout)}, field{"BackfillBatchSize", int64(c.BackfillBatchSize)},
		field{"ConsistencyInterval", int64(c.ConsistencyInterval)}, field{"EventBatchSize", int64(c.EventBatchSize)},
		field{"EventPollInterval", int64(c.EventPollInterval)}, field{"ExistenceScanInterval", int64(c.ExistenceScanInterval)},
		field{"ReverifyInterval", int64(c.ReverifyInterval)}, field{"VerifyConcurrency", int64(c.VerifyConcurrency)},
		field{"VerifyBatchSize", int64(c.VerifyBatchSize)}, field{"ChecksumWait", int64(c.ChecksumWait)},
	); err != nil {
		return err
	}
	switch {
	case c.Lease != 0 && c.Lease < LeaseMin:
		return configError("SecondaryConfig.Lease", "%v is below the %v minimum", c.Lease, LeaseMin)
	case c.HeartbeatInterval != 0 && c.HeartbeatInterval < HeartbeatIntervalMin:
		return configError("SecondaryConfig.HeartbeatInterval", "%v is below the %v minimum", c.HeartbeatInterval, HeartbeatIntervalMin)
	case c.EventPollInterval > EventPollIntervalMax:
		return configError("SecondaryConfig.EventPollInterval", "%v is above the %v maximum", c.EventPollInterval, EventPollIntervalMax)
	}
	return nil
}

// applyDefaults fills in the zero fields of a validated c.
func (c *SecondaryConfig) applyDefaults() {
	orDefault(&c.Logger, zap.NewNop())
	if c.Observer == nil {
		c.Observer = NopObserver{}
	}
	orDefault(&c.Owner, defaultOwner())
	orDefault(&c.Lease, LeaseDefault)
	orDefault(&c.PollInterval, PollIntervalDefault)
	orDefault(&c.HeartbeatInterval, HeartbeatIntervalDefault)
	orDefault(&c.SyncCapacityPerType, SyncCapacityPerTypeDefault)
	orDefault(&c.SyncCapacityTotal, c.SyncCapacityPerType*c.Strategies.Len())
	orDefault(&c.ShutdownGrace, ShutdownGraceDefault)
	orDefault(&c.TransferTimeout, TransferTimeoutDefault)
	orDefault(&c.BackfillBatchSize, BackfillBatchSizeDefault)
	orDefault(&c.ConsistencyInterval, ConsistencyIntervalDefault)
	orDefault(&c.EventBatchSize, EventBatchSizeDefault)
	orDefault(&c.EventPollInterval, EventPollIntervalDefault)
	orDefault(&c.ExistenceScanInterval, ExistenceScanIntervalDefault)
	orDefault(&c.ReverifyInterval, ReverifyIntervalDefault)
	orDefault(&c.VerifyConcurrency, VerifyConcurrencyDefault)
	orDefault(&c.VerifyBatchSize, VerifyBatchPerWorker*c.VerifyConcurrency)
	orDefault(&c.ChecksumWait, min(ChecksumWaitDefault, c.ReverifyInterval))
	orDefault(&c.GitBinary, GitBinaryDefault)
	if c.Retry == nil {
		c.Retry = strategy.DefaultBackoff()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// defaultOwner names a process when its config names none.
func defaultOwner() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
}
