package events

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/lib/pq"

	"github.com/geoframework/geo/strategy"
)

// NotifyChannel is the PostgreSQL NOTIFY channel every publish signals
// (with an empty payload) when its transaction commits. It is a wake-up
// hint for consumers, never the way events are delivered.
const NotifyChannel = "geo_events"

// Execer is the part of a database handle the Publisher needs. *sql.Tx,
// *sqlx.Tx, *sql.DB and *sqlx.DB satisfy it. Pass the transaction that
// changes the application's own rows: see Publisher.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Deleted describes one deleted record for Publisher.PublishDeleted.
type Deleted struct {
	// ModelID is the deleted record's id; must be > 0.
	ModelID int64
	// BlobKey is where the record's bytes lived; must pass
	// strategy.ValidateKey (so it is not empty).
	BlobKey string
}

// Publisher writes events into the primary's outbox table, geo_events.
//
// It is an outbox: the application must call its methods with the same
// transaction that changes its own rows, so the event commits if and only
// if the change does. An event written outside that transaction (or with
// a plain *sql.DB) can announce a change that then rolls back, or miss one
// that commits; the secondary's periodic consistency pass repairs both, but
// late. Every publish also queues a NOTIFY on geo_events (empty payload),
// which PostgreSQL delivers at commit and drops on rollback.
//
// A Publisher holds only the set of registered names; it is safe for
// concurrent use.
type Publisher struct {
	names map[string]struct{}
}

// NewPublisher returns a Publisher accepting events for the given
// replicable names. Every name must pass strategy.ValidateName (the error
// wraps strategy.ErrInvalidName) and appear once.
func NewPublisher(names []string) (*Publisher, error) {
	p := &Publisher{names: make(map[string]struct{}, len(names))}
	for _, n := range names {
		if err := strategy.ValidateName(n); err != nil {
			return nil, fmt.Errorf("events: new publisher: %w", err)
		}
		if _, dup := p.names[n]; dup {
			return nil, fmt.Errorf("events: new publisher: replicable %q registered twice", n)
		}
		p.names[n] = struct{}{}
	}
	return p, nil
}

// Known reports whether replicable is one of the Publisher's names. It fits
// ConsumerConfig.Known.
func (p *Publisher) Known(replicable string) bool {
	_, ok := p.names[replicable]
	return ok
}

func (p *Publisher) check(replicable string) error {
	if !p.Known(replicable) {
		return fmt.Errorf("events: publish %q: %w", replicable, strategy.ErrUnknownReplicable)
	}
	return nil
}

// The data-modifying CTEs always run to completion; the outer SELECT queues
// the wake-up notification in the same statement (one round trip).
// PostgreSQL folds identical notifications of one transaction into one.
//
// Each statement also invalidates the primary's checksum of the records in
// the same transaction (geo_checksums, see registry.ChecksumStore): a
// created or updated record's bytes changed legitimately, so its row
// becomes pending with a new generation and no checksum (a verification in
// flight then stores nothing); a deleted record's row is removed. Ids are
// deduplicated and sorted so that concurrent publishers lock checksum rows
// in the same order.
const (
	insertOne = `WITH ins AS (
	INSERT INTO geo_events (replicable, op, model_id, blob_key)
	VALUES ($1, $2, $3, NULLIF($4, ''))
	RETURNING 1), ` + upsertOneChecksum + `
SELECT pg_notify('` + NotifyChannel + `', '')`

	upsertOneChecksum = `ck AS (
	INSERT INTO geo_checksums AS c (replicable, model_id) VALUES ($1, $3)
	ON CONFLICT (replicable, model_id) DO UPDATE SET
	  state = 0, gen = DEFAULT, checksum = NULL, size = NULL, verified_at = NULL, failure = NULL,
	  retry_count = 0, retry_at = NULL, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
	RETURNING 1)`

	deleteOne = `WITH ins AS (
	INSERT INTO geo_events (replicable, op, model_id, blob_key)
	VALUES ($1, $2, $3, NULLIF($4, ''))
	RETURNING 1), ck AS (
	DELETE FROM geo_checksums WHERE replicable = $1 AND model_id = $3
	RETURNING 1)
SELECT pg_notify('` + NotifyChannel + `', '')`

	insertMany = `WITH ins AS (
	INSERT INTO geo_events (replicable, op, model_id)
	SELECT $1, $2, u.id FROM unnest($3::bigint[]) WITH ORDINALITY AS u(id, n) ORDER BY u.n
	RETURNING 1), ` + upsertManyChecksums + `
SELECT pg_notify('` + NotifyChannel + `', '')`

	upsertManyChecksums = `ck AS (
	INSERT INTO geo_checksums AS c (replicable, model_id)
	SELECT $1, u.id FROM (SELECT DISTINCT id FROM unnest($3::bigint[]) AS t(id) ORDER BY id) u
	ON CONFLICT (replicable, model_id) DO UPDATE SET
	  state = 0, gen = DEFAULT, checksum = NULL, size = NULL, verified_at = NULL, failure = NULL,
	  retry_count = 0, retry_at = NULL, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
	RETURNING 1)`

	insertDeleted = `WITH ins AS (
	INSERT INTO geo_events (replicable, op, model_id, blob_key)
	SELECT $1, 3, u.id, u.key FROM unnest($2::bigint[], $3::text[]) WITH ORDINALITY AS u(id, key, n) ORDER BY u.n
	RETURNING 1), ck AS (
	DELETE FROM geo_checksums WHERE replicable = $1 AND model_id = ANY($2::bigint[])
	RETURNING 1)
SELECT pg_notify('` + NotifyChannel + `', '')`
)

// Publish writes one event for record modelID of type replicable inside tx
// (see Publisher for why it must be the application's own transaction),
// and in the same statement invalidates the record's primary checksum:
// OpCreated and OpUpdated make its geo_checksums row pending with a new
// generation and no checksum, OpDeleted removes the row.
//
// It returns an error matching strategy.ErrUnknownReplicable for a name the
// Publisher was not built with; an error matching strategy.ErrInvalidKey
// when blobKey fails strategy.ValidateKey (the rule the secondary's
// storage applies, so a key it would refuse is refused here, in the
// application's transaction, instead of failing later on the secondary),
// or when op is OpDeleted and blobKey is empty; and an error when op is
// not valid or modelID is not positive. blobKey may be empty for
// OpCreated and OpUpdated (the secondary looks the key up). Nothing is
// written when an error is returned before the statement runs.
func (p *Publisher) Publish(ctx context.Context, tx Execer, replicable string, op Op, modelID int64, blobKey string) error {
	if err := p.check(replicable); err != nil {
		return err
	}
	if !op.Valid() {
		return fmt.Errorf("events: publish %s %d: invalid %v", replicable, modelID, op)
	}
	if modelID <= 0 {
		return fmt.Errorf("events: publish %s %v: model id %d, want > 0", replicable, op, modelID)
	}
	if err := checkPublishKey(op, blobKey); err != nil {
		return fmt.Errorf("events: publish %s %v %d: %w", replicable, op, modelID, err)
	}
	query := insertOne
	if op == OpDeleted {
		query = deleteOne
	}
	if _, err := tx.ExecContext(ctx, query, replicable, int16(op), modelID, blobKey); err != nil {
		return fmt.Errorf("events: publish %s %v %d: %w", replicable, op, modelID, err)
	}
	return nil
}

// PublishMany writes one OpCreated or OpUpdated event per id, in one
// statement, inside tx, and invalidates their primary checksums as Publish
// does (the same statement). OpDeleted is refused: deletes need blob keys, use
// PublishDeleted. Every id must be > 0. An empty ids writes nothing.
// Errors are as for Publish.
func (p *Publisher) PublishMany(ctx context.Context, tx Execer, replicable string, op Op, ids []int64) error {
	if err := p.check(replicable); err != nil {
		return err
	}
	if op != OpCreated && op != OpUpdated {
		return fmt.Errorf("events: publish many %s: %v, want created or updated (deletes need keys: PublishDeleted)", replicable, op)
	}
	for _, id := range ids {
		if id <= 0 {
			return fmt.Errorf("events: publish many %s %v: model id %d, want > 0", replicable, op, id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, insertMany, replicable, int16(op), pq.Array(ids)); err != nil {
		return fmt.Errorf("events: publish many %s %v (%d ids): %w", replicable, op, len(ids), err)
	}
	return nil
}

// PublishDeleted writes one OpDeleted event per item, in one statement,
// inside tx, and removes their primary checksum rows (the same statement).
// Every item needs ModelID > 0 and a BlobKey that passes
// strategy.ValidateKey (the error then matches strategy.ErrInvalidKey). An
// empty items writes nothing; an invalid item writes none of them. Errors
// are as for Publish.
func (p *Publisher) PublishDeleted(ctx context.Context, tx Execer, replicable string, items []Deleted) error {
	if err := p.check(replicable); err != nil {
		return err
	}
	if len(items) == 0 {
		return nil
	}
	ids := make([]int64, len(items))
	keys := make([]string, len(items))
	for i, it := range items {
		if it.ModelID <= 0 {
			return fmt.Errorf("events: publish deleted %s: model id %d, want > 0", replicable, it.ModelID)
		}
		if err := checkPublishKey(OpDeleted, it.BlobKey); err != nil {
			return fmt.Errorf("events: publish deleted %s %d: %w", replicable, it.ModelID, err)
		}
		ids[i], keys[i] = it.ModelID, it.BlobKey
	}
	if _, err := tx.ExecContext(ctx, insertDeleted, replicable, pq.Array(ids), pq.Array(keys)); err != nil {
		return fmt.Errorf("events: publish deleted %s (%d items): %w", replicable, len(items), err)
	}
	return nil
}

// checkPublishKey is the publisher's key rule, stricter than the
// consumer's (checkBlobKey): a key that is given must pass
// strategy.ValidateKey, and OpDeleted needs one. Every error matches
// strategy.ErrInvalidKey and never quotes the key.
func checkPublishKey(op Op, key string) error {
	if key == "" {
		if op == OpDeleted {
			return fmt.Errorf("deleted event without a blob key (it needs the key the record had): %w", strategy.ErrInvalidKey)
		}
		return nil
	}
	return strategy.ValidateKey(key)
}
