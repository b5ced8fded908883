package replicator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"

	"github.com/geoframework/geo/blob/dirblob"
	"github.com/geoframework/geo/replicator/transfer"
	"github.com/geoframework/geo/strategy"
)

// noneStrategy is a blob strategy with no records, for config tests.
type noneStrategy struct{}

func (noneStrategy) Name() string                                     { return "item" }
func (noneStrategy) IDs(context.Context, int64, int) ([]int64, error) { return nil, nil }
func (noneStrategy) BlobKey(context.Context, int64) (string, error)   { return "", strategy.ErrNotFound }

// minimalConfigs returns a secondary and a primary config holding only
// their required fields. The databases are handles that never connect:
// validation and defaults must not need them.
func minimalConfigs(t *testing.T) (SecondaryConfig, PrimaryConfig) {
	t.Helper()
	db, err := sqlx.Open("postgres", "postgres://nobody@127.0.0.1:1/none?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	storage, err := dirblob.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { storage.Close() })
	set := NewSet()
	set.MustRegister(noneStrategy{})
	creds := transfer.Credentials{Site: "s", AccessKey: "k", Secret: make([]byte, 32)}
	return SecondaryConfig{Strategies: set, Tracking: db, Primary: db, PrimaryURL: "http://127.0.0.1:1", Credentials: creds, Storage: storage},
		PrimaryConfig{Strategies: set, DB: db, Storage: storage, Secrets: transfer.NewStaticSecrets(creds)}
}

// TestConfigDefaultsAreTheNamedConstants checks that every zero tuning
// field of both configs becomes the constant its doc names, that a knob
// both sites have gets the same default on both, and that validation
// alone fills in nothing.
func TestConfigDefaultsAreTheNamedConstants(t *testing.T) {
	sec, pri := minimalConfigs(t)
	asGiven := sec
	if err := sec.validate(); err != nil {
		t.Fatal(err)
	}
	if sec.Lease != 0 || sec.Owner != "" || sec.Logger != nil || sec.Observer != nil {
		t.Fatalf("validate filled in defaults: %+v", sec)
	}
	sec.applyDefaults()
	for _, c := range []struct {
		field     string
		got, want any
	}{
		{"Lease", sec.Lease, LeaseDefault},
		{"PollInterval", sec.PollInterval, PollIntervalDefault},
		{"HeartbeatInterval", sec.HeartbeatInterval, HeartbeatIntervalDefault},
		{"SyncCapacityPerType", sec.SyncCapacityPerType, SyncCapacityPerTypeDefault},
		{"SyncCapacityTotal", sec.SyncCapacityTotal, SyncCapacityPerTypeDefault * asGiven.Strategies.Len()},
		{"ShutdownGrace", sec.ShutdownGrace, ShutdownGraceDefault},
		{"TransferTimeout", sec.TransferTimeout, TransferTimeoutDefault},
		{"BackfillBatchSize", sec.BackfillBatchSize, BackfillBatchSizeDefault},
		{"ConsistencyInterval", sec.ConsistencyInterval, ConsistencyIntervalDefault},
		{"EventBatchSize", sec.EventBatchSize, EventBatchSizeDefault},
		{"EventPollInterval", sec.EventPollInterval, EventPollIntervalDefault},
		{"ExistenceScanInterval", sec.ExistenceScanInterval, ExistenceScanIntervalDefault},
		{"ReverifyInterval", sec.ReverifyInterval, ReverifyIntervalDefault},
		{"VerifyConcurrency", sec.VerifyConcurrency, VerifyConcurrencyDefault},
		{"VerifyBatchSize", sec.VerifyBatchSize, VerifyBatchPerWorker * VerifyConcurrencyDefault},
		{"ChecksumWait", sec.ChecksumWait, ChecksumWaitDefault},
	} {
		if c.got != c.want {
			t.Errorf("SecondaryConfig.%s = %v, want %v", c.field, c.got, c.want)
		}
	}
	if sec.Owner == "" || sec.Logger == nil || sec.Observer == nil || sec.Retry == nil || sec.Now == nil {
		t.Errorf("SecondaryConfig: Owner, Logger, Observer, Retry or Now left unset: %+v", sec)
	}

	if err := pri.validate(); err != nil {
		t.Fatal(err)
	}
	pri.applyDefaults()
	for _, c := range []struct {
		field     string
		got, want any
	}{
		{"Lease", pri.Lease, sec.Lease},
		{"PollInterval", pri.PollInterval, sec.PollInterval},
		{"ReverifyInterval", pri.ReverifyInterval, sec.ReverifyInterval},
		{"VerifyConcurrency", pri.VerifyConcurrency, sec.VerifyConcurrency},
		{"VerifyBatchSize", pri.VerifyBatchSize, sec.VerifyBatchSize},
		{"BackfillBatchSize", pri.BackfillBatchSize, sec.BackfillBatchSize},
		{"ConsistencyInterval", pri.ConsistencyInterval, sec.ConsistencyInterval},
		{"EventRetention", pri.EventRetention, EventRetentionDefault},
		{"EventPruneInterval", pri.EventPruneInterval, EventPruneIntervalDefault},
	} {
		if c.got != c.want {
			t.Errorf("PrimaryConfig.%s = %v, want %v (the secondary's, or its constant)", c.field, c.got, c.want)
		}
	}

	// A derived default follows what it derives from.
	short, _ := minimalConfigs(t)
	short.ReverifyInterval = 10 * time.Second
	short.VerifyConcurrency = 2
	short.applyDefaults()
	if short.ChecksumWait != 10*time.Second || short.VerifyBatchSize != 2*VerifyBatchPerWorker {
		t.Errorf("ChecksumWait %v, VerifyBatchSize %d: want the ReverifyInterval (10s) and %d", short.ChecksumWait, short.VerifyBatchSize, 2*VerifyBatchPerWorker)
	}
}

// TestConfigErrorsNameTheField checks that NewPrimary and NewSecondary
// refuse bad configs with an error matching ErrInvalidConfig that names the
// field, before touching a database.
func TestConfigErrorsNameTheField(t *testing.T) {
	for _, c := range []struct {
		field string
		bad   func(*SecondaryConfig)
	}{
		{"SecondaryConfig.Strategies", func(c *SecondaryConfig) { c.Strategies = NewSet() }},
		{"SecondaryConfig.Tracking", func(c *SecondaryConfig) { c.Tracking = nil }},
		{"SecondaryConfig.Primary", func(c *SecondaryConfig) { c.Primary = nil }},
		{"SecondaryConfig.PrimaryURL", func(c *SecondaryConfig) { c.PrimaryURL = "" }},
		{"SecondaryConfig.Storage", func(c *SecondaryConfig) { c.Storage = nil }},
		{"SecondaryConfig.Credentials", func(c *SecondaryConfig) { c.Credentials.Secret = nil }},
		{"SecondaryConfig.Lease", func(c *SecondaryConfig) { c.Lease = LeaseMin - 1 }},
		{"SecondaryConfig.Lease", func(c *SecondaryConfig) { c.Lease = -time.Second }},
		{"SecondaryConfig.HeartbeatInterval", func(c *SecondaryConfig) { c.HeartbeatInterval = HeartbeatIntervalMin / 2 }},
		{"SecondaryConfig.EventPollInterval", func(c *SecondaryConfig) { c.EventPollInterval = EventPollIntervalMax + 1 }},
		{"SecondaryConfig.SyncCapacityTotal", func(c *SecondaryConfig) { c.SyncCapacityTotal = -1 }},
		{"SecondaryConfig.VerifyBatchSize", func(c *SecondaryConfig) { c.VerifyBatchSize = -1 }},
	} {
		sec, _ := minimalConfigs(t)
		c.bad(&sec)
		_, err := NewSecondary(sec)
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(fmt.Sprint(err), c.field+" ") {
			t.Errorf("%s: NewSecondary error %v, want one matching ErrInvalidConfig naming %s", c.field, err, c.field)
		}
	}
	for _, c := range []struct {
		field string
		bad   func(*PrimaryConfig)
	}{
		{"PrimaryConfig.Strategies", func(c *PrimaryConfig) { c.Strategies = nil }},
		{"PrimaryConfig.DB", func(c *PrimaryConfig) { c.DB = nil }},
		{"PrimaryConfig.Secrets", func(c *PrimaryConfig) { c.Secrets = nil }},
		{"PrimaryConfig.Storage", func(c *PrimaryConfig) { c.Storage = nil }},
		{"PrimaryConfig.Lease", func(c *PrimaryConfig) { c.Lease = LeaseMin / 2 }},
		{"PrimaryConfig.EventRetention", func(c *PrimaryConfig) { c.EventRetention = -1 }},
	} {
		_, pri := minimalConfigs(t)
		c.bad(&pri)
		_, err := NewPrimary(pri)
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(fmt.Sprint(err), c.field+" ") {
			t.Errorf("%s: NewPrimary error %v, want one matching ErrInvalidConfig naming %s", c.field, err, c.field)
		}
	}
}
