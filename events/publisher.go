package events

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/lib/pq"

	"github.com/geoframework/geo/strategy"
)

// NotifyChannel is the PostgreSQL NOTIFY channel every publish signals
// (with an empty payload) when its transaction commits. It is a wake-up
// hint for consumers, never the way events are delivered.
const NotifyChannel = "geo_events"

// Querier is the part of a database handle the Publisher needs: one
// statement that returns a row (the Position of what it wrote). *sql.Tx,
// *sql.Conn, *sql.DB, *sqlx.Tx, *sqlx.DB and sqlx.ExtContext satisfy it.
// Pass the transaction that changes the application's own rows: see
// Publisher.
type Querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
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

// The data-modifying CTEs always run to completion; the outer SELECT
// (returnPosition) returns the Position of the greatest event written
// (every event of a statement has the transaction's xid, so that is the
// one with the greatest id) and queues the wake-up notification, in the
// same statement (one round trip). PostgreSQL folds identical
// notifications of one transaction into one.
//
// Each statement also invalidates the primary's checksum of the records in
// the same transaction (geo_checksums, read by registry.Checksums): a
// created or updated record's bytes changed legitimately, so its row
// becomes pending with a new generation and no checksum (a verification in
// flight then stores nothing); a deleted record's row is removed. Ids are
// deduplicated and sorted so that concurrent publishers lock checksum rows
// in the same order.
const (
	returnPosition = `SELECT p.xid::text, p.id
FROM (SELECT xid, id FROM ins ORDER BY id DESC LIMIT 1) AS p, pg_notify('` + NotifyChannel + `', '') AS n`

	insertOne = `WITH ins AS (
	INSERT INTO geo_events (replicable, op, model_id, blob_key)
	VALUES ($1, $2, $3, NULLIF($4, ''))
	RETURNING xid, id), ` + upsertOneChecksum + `
` + returnPosition

	upsertOneChecksum = `ck AS (
	INSERT INTO geo_checksums AS c (replicable, model_id) VALUES ($1, $3)
	ON CONFLICT (replicable, model_id) DO UPDATE SET
	  state = 0, gen = DEFAULT, checksum = NULL, size = NULL, verified_at = NULL, failure = NULL,
	  retry_count = 0, retry_at = NULL, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
	RETURNING 1)`

	deleteOne = `WITH ins AS (
	INSERT INTO geo_events (replicable, op, model_id, blob_key)
	VALUES ($1, $2, $3, NULLIF($4, ''))
	RETURNING xid, id), ck AS (
	DELETE FROM geo_checksums WHERE replicable = $1 AND model_id = $3
	RETURNING 1)
` + returnPosition

	insertMany = `WITH ins AS (
	INSERT INTO geo_events (replicable, op, model_id)
	SELECT $1, $2, u.id FROM unnest($3::bigint[]) WITH ORDINALITY AS u(id, n) ORDER BY u.n
	RETURNING xid, id), ` + upsertManyChecksums + `
` + returnPosition

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
	RETURNING xid, id), ck AS (
	DELETE FROM geo_checksums WHERE replicable = $1 AND model_id = ANY($2::bigint[])
	RETURNING 1)
` + returnPosition
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
//
// It returns the Position of the event it wrote (the zero Position with
// an error). The Position is known before tx commits and means something
// only if it does: a Consumer whose cursor is at or past it has handled
// the event (see Position for exactly what that guarantees). Several
// publishes in one transaction return increasing Positions.
func (p *Publisher) Publish(ctx context.Context, tx Querier, replicable string, op Op, modelID int64, blobKey string) (Position, error) {
	if err := p.check(replicable); err != nil {
		return Position{}, err
	}
	if !op.Valid() {
		return Position{}, fmt.Errorf("events: publish %s %d: invalid %v", replicable, modelID, op)
	}
	if modelID <= 0 {
		return Position{}, fmt.Errorf("events: publish %s %v: model id %d, want > 0", replicable, op, modelID)
	}
	if err := checkPublishKey(op, blobKey); err != nil {
		return Position{}, fmt.Errorf("events: publish %s %v %d: %w", replicable, op, modelID, err)
	}
	query := insertOne
	if op == OpDeleted {
		query = deleteOne
	}
	pos, err := write(ctx, tx, query, replicable, int16(op), modelID, blobKey)
	if err != nil {
		return Position{}, fmt.Errorf("events: publish %s %v %d: %w", replicable, op, modelID, err)
	}
	return pos, nil
}

// PublishMany writes one OpCreated or OpUpdated event per id, in one
// statement, inside tx, and invalidates their primary checksums as Publish
// does (the same statement). OpDeleted is refused: deletes need blob keys, use
// PublishDeleted. Every id must be > 0. It returns the Position of the
// last (the greatest) event written: every event up to it is handled once
// a Consumer's cursor is at or past it. An empty ids writes nothing and
// returns the zero Position. Errors are as for Publish.
func (p *Publisher) PublishMany(ctx context.Context, tx Querier, replicable string, op Op, ids []int64) (Position, error) {
	if err := p.check(replicable); err != nil {
		return Position{}, err
	}
	if op != OpCreated && op != OpUpdated {
		return Position{}, fmt.Errorf("events: publish many %s: %v, want created or updated (deletes need keys: PublishDeleted)", replicable, op)
	}
	for _, id := range ids {
		if id <= 0 {
			return Position{}, fmt.Errorf("events: publish many %s %v: model id %d, want > 0", replicable, op, id)
		}
	}
	if len(ids) == 0 {
		return Position{}, nil
	}
	pos, err := write(ctx, tx, insertMany, replicable, int16(op), pq.Array(ids))
	if err != nil {
		return Position{}, fmt.Errorf("events: publish many %s %v (%d ids): %w", replicable, op, len(ids), err)
	}
	return pos, nil
}

// PublishDeleted writes one OpDeleted event per item, in one statement,
// inside tx, and removes their primary checksum rows (the same statement).
// Every item needs ModelID > 0 and a BlobKey that passes
// strategy.ValidateKey (the error then matches strategy.ErrInvalidKey). It
// returns the Position of the last (the greatest) event written, as
// PublishMany does. An empty items writes nothing and returns the zero
// Position; an invalid item writes none of them. Errors are as for
// Publish.
func (p *Publisher) PublishDeleted(ctx context.Context, tx Querier, replicable string, items []Deleted) (Position, error) {
	if err := p.check(replicable); err != nil {
		return Position{}, err
	}
	if len(items) == 0 {
		return Position{}, nil
	}
	ids := make([]int64, len(items))
	keys := make([]string, len(items))
	for i, it := range items {
		if it.ModelID <= 0 {
			return Position{}, fmt.Errorf("events: publish deleted %s: model id %d, want > 0", replicable, it.ModelID)
		}
		if err := checkPublishKey(OpDeleted, it.BlobKey); err != nil {
			return Position{}, fmt.Errorf("events: publish deleted %s %d: %w", replicable, it.ModelID, err)
		}
		ids[i], keys[i] = it.ModelID, it.BlobKey
	}
	pos, err := write(ctx, tx, insertDeleted, replicable, pq.Array(ids), pq.Array(keys))
	if err != nil {
		return Position{}, fmt.Errorf("events: publish deleted %s (%d items): %w", replicable, len(items), err)
	}
	return pos, nil
}

// write runs one of the publish statements, which reports the Position of
// the greatest event it wrote.
func write(ctx context.Context, tx Querier, query string, args ...any) (Position, error) {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return Position{}, err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return Position{}, err
		}
		return Position{}, errors.New("the statement returned no position")
	}
	var xid string
	var pos Position
	if err := rows.Scan(&xid, &pos.ID); err != nil {
		return Position{}, err
	}
	if pos.XID, err = parseXID8(xid); err != nil {
		return Position{}, err
	}
	// PostgreSQL runs a statement with data-modifying CTEs to completion
	// before it sends the row, so a failure anywhere in it (the checksum
	// CTE's included) arrives instead of the row (QueryContext or rows.Err
	// reports it); Close would report one coming after the row.
	if err := rows.Close(); err != nil {
		return Position{}, err
	}
	return pos, nil
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
