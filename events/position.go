package events

import (
	"cmp"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// PositionHeader is the HTTP header that carries a Position in its text
// form ("<xid>:<id>", see ParsePosition): the primary's application can
// hand the Position of a write to its client, which forwards it to a
// secondary to ask for a copy at least that fresh.
const PositionHeader = "Geo-Position"

// maxPositionLen is the length of the longest text form of a Position:
// 20 digits of xid, the colon, 19 digits of id. ParsePosition refuses
// longer input before looking at it.
const maxPositionLen = 20 + 1 + 19

// ErrInvalidPosition is wrapped by the errors of ParsePosition and
// Position.UnmarshalText for text that is not a Position's text form.
var ErrInvalidPosition = errors.New("invalid position")

// Position is a place in the primary's outbox: XID is the xid8 of the
// transaction that wrote an event (PostgreSQL's pg_current_xact_id()) and
// ID the event's geo_events id. Positions are ordered by XID, then ID
// (Compare): the order in which a Consumer hands events over. The zero
// Position is before every event. Positions compare with == and can be map
// keys.
//
// Publisher.Publish returns the Position of the event it wrote, and a
// Consumer's cursor (Stats.Cursor) is the Position after which it reads
// next: the last event it read, the end of the log on its first start, or
// the retention's pruned mark once it moved there.
//
// What comparing them guarantees. Let p be a Position that Publish returned
// in a transaction that committed, and c the cursor of a Consumer reading
// that primary's outbox (directly or through a hot standby of it):
//
//   - When c is at or past p (!c.Less(p)), the Consumer has handled the
//     event at p and every other committed event at or before p: its
//     Handler returned nil for a batch holding each of them, except events
//     it skips (a replicable Known rejects, a malformed row), events of
//     transactions that had ended before the Consumer's first start (it
//     starts at the end of the log: earlier records are backfill's), and
//     events retention pruned before it read them (Stats.FellBehind:
//     those are lost).
//   - Conversely the cursor reaches p: once the transaction that published
//     p and every transaction with a smaller xid (in any database of the
//     cluster: the snapshot's xmin is cluster-wide) have ended, the
//     Consumer's next reads hand p over and, once its Handler accepts the
//     batch, move the cursor to p or past it.
//
// Both hold although xids are not in commit order: a transaction takes its
// xid at its first write and may commit after younger ones. The Consumer
// reads an event only once its xid is below the xmin of the snapshot it
// reads in, that is once its transaction and every older one have ended.
// So when the cursor passes (x, i) no transaction with an xid of x or less
// can still add an event at or before it, and an event of a younger
// transaction that committed first is held back until the older ones end;
// the cursor never passes a Position whose event can still appear. A hot
// standby holds rows back the same way (see the package doc).
//
// What a Position does not say:
//
//   - Position order is not commit order. Of two concurrent transactions,
//     the one that committed first may hold the greater Position. It is
//     causal order: a transaction that begins after another has committed
//     takes its xid after that commit, so its Positions are greater, and
//     the events of one transaction have increasing IDs. So the Position
//     of a client's latest write covers its earlier ones (as the greatest
//     of several Positions covers them all).
//   - A Position returned in a transaction that rolled back (or whose
//     publish was rolled back to a savepoint) names no event. A cursor
//     passes it only when a later event is read; the Position a
//     Consumer reports to ConsumerConfig.OnProgress passes it once that
//     transaction and every older one have ended.
//   - Positions belong to one primary's history. A standby promoted after
//     a failover goes on from the xids it replayed: events the old primary
//     committed after the standby's last replay are lost, and their xids
//     may be taken again on the new primary, so a cursor there passes such
//     a Position without its event.
//   - Stats.Cursor is one Consumer's. While another process's Consumer of
//     the same Name is active, the saved cursor (geo_event_cursor in the
//     tracking database) is the current one.
//
// The text form (String, ParsePosition, MarshalText, and so JSON) is
// "<xid>:<id>" in decimal, for example "7451:1203".
type Position struct {
	// XID is the xid8 of the transaction that wrote the event.
	XID uint64
	// ID is the event's id in geo_events (a bigserial: > 0 for an event;
	// 0 in a first start's cursor).
	ID int64
}

// Compare returns -1 if p is before q, 0 if they are equal and +1 if p is
// after q, in (XID, ID) order. It fits slices.SortFunc.
func (p Position) Compare(q Position) int {
	if c := cmp.Compare(p.XID, q.XID); c != 0 {
		return c
	}
	return cmp.Compare(p.ID, q.ID)
}

// Less reports whether p is before q in (XID, ID) order. A cursor c has
// handled the event at p exactly when !c.Less(p) (see Position).
func (p Position) Less(q Position) bool { return p.Compare(q) < 0 }

// IsZero reports whether p is the zero Position, before every event.
func (p Position) IsZero() bool { return p == Position{} }

// String returns p's text form, "<xid>:<id>" in decimal ("0:0" for the
// zero Position). ParsePosition reads it back.
func (p Position) String() string {
	return strconv.FormatUint(p.XID, 10) + ":" + strconv.FormatInt(p.ID, 10)
}

// MarshalText returns p's text form (see String), so Position is a string
// in JSON. It never fails.
func (p Position) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText sets p from its text form as ParsePosition reads it. On
// error (matching ErrInvalidPosition) p is left unchanged.
func (p *Position) UnmarshalText(text []byte) error {
	q, err := ParsePosition(string(text))
	if err != nil {
		return err
	}
	*p = q
	return nil
}

// ParsePosition reads a Position's text form as String writes it:
// "<xid>:<id>", both in decimal ASCII digits without sign, spaces or
// leading zeros, the xid at most 2^64-1 and the id at most 2^63-1. Only
// that canonical form is accepted, so a Position has one text form (ParsePosition(s)
// succeeds only when its result's String is s). Any other input, however
// long or hostile (it may come from an HTTP header), returns an error
// matching ErrInvalidPosition that quotes at most 40 bytes of it.
func ParsePosition(s string) (Position, error) {
	bad := func(why string) (Position, error) {
		quoted := s
		if len(quoted) > maxPositionLen {
			quoted = quoted[:maxPositionLen] + "..."
		}
		return Position{}, fmt.Errorf("events: parse position %q: %w: %s (want <xid>:<id> in decimal)", quoted, ErrInvalidPosition, why)
	}
	if len(s) > maxPositionLen {
		return bad(fmt.Sprintf("longer than %d bytes", maxPositionLen))
	}
	xs, is, ok := strings.Cut(s, ":")
	if !ok {
		return bad("no colon")
	}
	if why := checkDigits(xs); why != "" {
		return bad("xid " + why)
	}
	if why := checkDigits(is); why != "" {
		return bad("id " + why)
	}
	xid, err := strconv.ParseUint(xs, 10, 64)
	if err != nil {
		return bad("xid out of range")
	}
	id, err := strconv.ParseInt(is, 10, 64)
	if err != nil {
		return bad("id out of range")
	}
	return Position{XID: xid, ID: id}, nil
}

// checkDigits returns why s is not a canonical decimal number (non-empty,
// ASCII digits only, no leading zero unless it is "0"), or "" if it is.
func checkDigits(s string) string {
	if s == "" {
		return "empty"
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return "not a decimal number"
		}
	}
	if len(s) > 1 && s[0] == '0' {
		return "has a leading zero"
	}
	return ""
}
