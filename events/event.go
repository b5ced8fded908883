package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Op is what happened to a model record. Its numeric value is persisted in
// geo_events.op and must never change.
type Op int16

// The operations an event can carry.
const (
	// OpCreated: the record and its bytes appeared on the primary.
	OpCreated Op = 1
	// OpUpdated: the record's bytes (or its blob key) changed.
	OpUpdated Op = 2
	// OpDeleted: the record is gone. An OpDeleted event always carries the blob
	// key the record had, so the secondary can remove the bytes of a record
	// it can no longer look up.
	OpDeleted Op = 3
)

// String returns "created", "updated", "deleted", or "op(N)" for a value
// that is not a known Op.
func (o Op) String() string {
	switch o {
	case OpCreated:
		return "created"
	case OpUpdated:
		return "updated"
	case OpDeleted:
		return "deleted"
	}
	return "op(" + strconv.Itoa(int(o)) + ")"
}

// Valid reports whether o is OpCreated, Updated or Deleted.
func (o Op) Valid() bool { return o >= OpCreated && o <= OpDeleted }

// Event is one row of the primary's outbox (geo_events) as the consumer
// delivers it.
type Event struct {
	// ID is the row's bigserial id: unique, but NOT in commit order.
	ID int64
	// XID is the 64-bit id (xid8) of the transaction that wrote the event.
	// Events are delivered in (XID, ID) order.
	XID uint64
	// Replicable is the registered type's name ("package_file").
	Replicable string
	// Op is OpCreated, Updated or Deleted.
	Op Op
	// ModelID is the record's id in the application's table; always > 0.
	ModelID int64
	// BlobKey is the record's storage key; always set for OpDeleted, may be
	// empty otherwise. The Publisher refuses keys that fail
	// strategy.ValidateKey, but a row written otherwise (by hand, by an
	// older version) is delivered with its key as it is: check it before
	// using it.
	BlobKey string
	// Payload is optional extra JSON (nil when the row has none). When
	// non-nil it is valid JSON.
	Payload json.RawMessage
	// CreatedAt is when the primary's transaction wrote the event
	// (PostgreSQL now(): the transaction's start time).
	CreatedAt time.Time
}

// Position returns the event's place in the outbox, (XID, ID): the
// Position Publish returned when it wrote the event.
func (e Event) Position() Position { return Position{XID: e.XID, ID: e.ID} }

// ErrMalformed marks an outbox row the consumer cannot deliver: an unknown
// op, a model id that is not positive, an OpDeleted event without a blob key,
// or a payload that is not valid JSON. The consumer logs and skips such rows.
var ErrMalformed = errors.New("malformed event")

// rawEvent is an outbox row exactly as scanned, before any checks: the
// outside input the consumer must not trust.
type rawEvent struct {
	XID        string  // xid8 as text
	ID         int64   //
	Replicable string  //
	Op         int64   // smallint in SQL; wider here so no value is lost before the check
	ModelID    int64   //
	BlobKey    *string // NULL allowed
	Payload    []byte  // jsonb as text, nil for NULL
	CreatedAt  time.Time
}

// parseXID8 parses PostgreSQL's text form of an xid8 (a decimal uint64).
func parseXID8(s string) (uint64, error) {
	x, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("events: parse xid8 %q: %w", s, err)
	}
	return x, nil
}

// decode checks a raw row and turns it into an Event. Every error matches
// ErrMalformed. It does not check whether the replicable name is known: that
// is the consumer's Known function's job.
func decode(r rawEvent) (Event, error) {
	x, err := parseXID8(r.XID)
	if err != nil {
		return Event{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	e := Event{ID: r.ID, XID: x, Replicable: r.Replicable, ModelID: r.ModelID, CreatedAt: r.CreatedAt}
	if r.Op < int64(OpCreated) || r.Op > int64(OpDeleted) {
		return Event{}, fmt.Errorf("%w: unknown op %d", ErrMalformed, r.Op)
	}
	e.Op = Op(r.Op)
	if r.ModelID <= 0 {
		return Event{}, fmt.Errorf("%w: model_id %d, want > 0", ErrMalformed, r.ModelID)
	}
	if r.Replicable == "" {
		return Event{}, fmt.Errorf("%w: empty replicable", ErrMalformed)
	}
	if r.BlobKey != nil {
		e.BlobKey = *r.BlobKey
	}
	if err := checkBlobKey(e.Op, e.BlobKey); err != nil {
		return Event{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if r.Payload != nil {
		if !json.Valid(r.Payload) {
			return Event{}, fmt.Errorf("%w: payload is not valid JSON", ErrMalformed)
		}
		e.Payload = json.RawMessage(append([]byte(nil), r.Payload...))
	}
	return e, nil
}

// checkBlobKey is the consumer's key rule for rows it reads: OpDeleted
// needs a key, and no key may hold a NUL byte (PostgreSQL text cannot
// store one). It is deliberately looser than the publisher's
// (checkPublishKey, strategy.ValidateKey): a deleted event whose key fails
// strategy.ValidateKey (written by an older publisher or by hand) is still
// delivered, so the secondary removes the record's row and the key it
// recorded itself, and only the event's own key is ignored.
func checkBlobKey(op Op, key string) error {
	if op == OpDeleted && key == "" {
		return errors.New("deleted event without a blob key")
	}
	if strings.IndexByte(key, 0) >= 0 {
		return errors.New("blob key contains a NUL byte")
	}
	return nil
}
