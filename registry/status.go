package registry

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// TypeCounts is one type's row counts plus what a status report needs
// from the same pass.
type TypeCounts struct {
	Counts
	// LastProgressAt is when a row of the type last became synced
	// (last_synced_at) or synced and verified (verified_at): the latest
	// such time recorded since the counts were created, kept when the row
	// later changes or goes. Zero when no row ever got there.
	LastProgressAt time.Time
}

// statusCountsSQL sums the deltas of geo_registry_counts (migration
// 0007), which triggers append for every statement that changes
// geo_registry. It reads a few rows per group changed since the last
// FoldCounts, whatever the size of the registry.
const statusCountsSQL = `
SELECT replicable, state, verification_state, checksum_mismatch, missing_on_primary,
  sum(n) AS n, max(progress_at) AS last, count(*) AS deltas
FROM geo_registry_counts
GROUP BY replicable, state, verification_state, checksum_mismatch, missing_on_primary`

// foldAfter is the number of delta rows past which Counts folds
// them (FoldCounts) after answering, should nothing else fold them.
const foldAfter = 5000

// Counts returns, per type, the rows by state ([Counts]) and LastProgressAt,
// from the counts the registry's triggers maintain (migration 0007): its
// cost depends on the changes since the last FoldCounts, not on the
// number of rows (1,000,000 rows: well under a millisecond once folded,
// against ~130 ms for a bare count(*)). The counts are exact and
// transactional: they are those of the rows as of the statement's
// snapshot. Types without rows are absent.
//
// When it read more than a few thousand deltas it folds them before
// returning (an error of that fold is ignored: the answer stands).
func (s *Store) Counts(ctx context.Context) (map[string]TypeCounts, error) {
	rows, err := s.db.QueryContext(ctx, statusCountsSQL)
	if err != nil {
		return nil, fmt.Errorf("registry: status counts: %w", err)
	}
	defer rows.Close()
	out := map[string]TypeCounts{}
	var deltas int64
	for rows.Next() {
		var (
			name             string
			state, vstate    int16
			mismatch, missed bool
			n, d             int64
			last             sql.NullTime
		)
		if err := rows.Scan(&name, &state, &vstate, &mismatch, &missed, &n, &last, &d); err != nil {
			return nil, fmt.Errorf("registry: status counts: %w", err)
		}
		deltas += d
		c, seen := out[name]
		if last.Valid && last.Time.After(c.LastProgressAt) {
			c.LastProgressAt = last.Time
		}
		if n == 0 {
			if seen || !c.LastProgressAt.IsZero() {
				out[name] = c
			}
			continue
		}
		c.Total += n
		switch State(state) {
		case StatePending:
			c.Pending += n
		case StateStarted:
			c.Started += n
		case StateSynced:
			c.Synced += n
		case StateFailed:
			c.Failed += n
		}
		switch VerificationState(vstate) {
		case VerificationPending:
			c.VerificationPending += n
		case VerificationStarted:
			c.VerificationStarted += n
		case VerificationSucceeded:
			c.VerificationSucceeded += n
		case VerificationFailed:
			c.VerificationFailed += n
		case VerificationDisabled:
			c.VerificationDisabled += n
		}
		if mismatch {
			c.ChecksumMismatch += n
		}
		if missed {
			c.MissingOnPrimary += n
		}
		out[name] = c
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("registry: status counts: %w", err)
	}
	rows.Close()
	// A type whose rows all went is absent, as Counts has it.
	for name, c := range out {
		if c.Total == 0 {
			delete(out, name)
		}
	}
	if deltas > foldAfter {
		_ = s.FoldCounts(ctx)
	}
	return out, nil
}

// FoldCounts folds the deltas of geo_registry_counts into one row per
// group (groups whose count is zero and that carry no progress time
// vanish), in one statement, so Counts stays cheap. The secondary
// runs it on an interval; it is safe at any time, concurrently with
// writers (who only append) and with another FoldCounts (each folds the
// rows it deleted; a row is deleted by one of them only).
func (s *Store) FoldCounts(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `
WITH folded AS (DELETE FROM geo_registry_counts RETURNING *)
INSERT INTO geo_registry_counts
SELECT replicable, state, verification_state, checksum_mismatch, missing_on_primary, sum(n), max(progress_at)
FROM folded
GROUP BY replicable, state, verification_state, checksum_mismatch, missing_on_primary
HAVING sum(n) <> 0 OR max(progress_at) IS NOT NULL`); err != nil {
		return fmt.Errorf("registry: fold counts: %w", err)
	}
	return nil
}

// RecountCounts rebuilds geo_registry_counts from the rows themselves, in
// one transaction that holds off writers of geo_registry (a SHARE lock)
// and folds (a SHARE ROW EXCLUSIVE lock on the counts, so a fold in
// flight cannot leave its sums beside the new ones) while it counts: a repair for counts known to be wrong, say after rows
// were changed with triggers disabled. It reads the whole registry
// (seconds for millions of rows) and blocks syncs meanwhile. Progress
// times are recomputed from the rows there now.
func (s *Store) RecountCounts(ctx context.Context) error {
	err := s.inTx(ctx, func(tx *sqlx.Tx) error {
		_, err := tx.ExecContext(ctx, `
LOCK TABLE geo_registry IN SHARE MODE;
LOCK TABLE geo_registry_counts IN SHARE ROW EXCLUSIVE MODE;
DELETE FROM geo_registry_counts;
INSERT INTO geo_registry_counts
SELECT replicable, state, verification_state, checksum_mismatch, missing_on_primary, count(*),
  max(CASE WHEN state = 2 THEN CASE WHEN verification_state = 2 THEN verified_at ELSE last_synced_at END END)
FROM geo_registry GROUP BY 1, 2, 3, 4, 5`)
		return err
	})
	if err != nil {
		return fmt.Errorf("registry: recount counts: %w", err)
	}
	return nil
}

// FailureReason is one kind of failure message and how many rows carry
// it. Messages that differ only in what names the record are grouped
// (record ids, the object part of keys, digests, sizes and ephemeral ports
// become placeholders; the rules are in [Operating geo], "Status"), so
// that one cause affecting many records is one reason.
//
// [Operating geo]: https://github.com/geoframework/geo/blob/main/docs/operations.md
type FailureReason struct {
	// Reason is the normalized message: what TopFailures groups by and
	// ReasonQuery.Reason selects.
	Reason string `json:"reason"`
	// Count is the number of rows whose message normalizes to Reason.
	Count int64 `json:"count"`
	// Example is one of the original messages (the least, in byte order).
	Example string `json:"example"`
}

// Failures is a type's most frequent failure reasons.
type Failures struct {
	// Sync groups last_sync_failure of failed rows.
	Sync []FailureReason
	// Verification groups verification_failure of synced rows whose
	// verification failed (not yet sent back to sync).
	Verification []FailureReason
}

// Placeholders of normalizeReason.
const (
	// reasonNumber stands for a record id, a size, a count or an
	// ephemeral port.
	reasonNumber = "N"
	// reasonDigest stands for a hex digest (a checksum, an object id) or
	// a UUID.
	reasonDigest = "H"
	// reasonKeyTail stands for the rest of a storage key or path from its
	// first segment that names one object.
	reasonKeyTail = "*"
)

// reasonHexRunLen is the shortest run of hex digits normalizeReason takes
// for a digest: shorter runs (error codes, short words) are kept.
const reasonHexRunLen = 16

var (
	reasonUUID = regexp.MustCompile(`\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b`)
	reasonHex  = regexp.MustCompile(`\b[0-9a-fA-F]{` + strconv.Itoa(reasonHexRunLen) + `,}\b`)
	// reasonLocalPort is the local end of a connection in a network error
	// ("read tcp 127.0.0.1:37430->127.0.0.1:5432"): an ephemeral port.
	reasonLocalPort = regexp.MustCompile(`:[0-9]+->`)
)

// numberNamesObject reports whether a number between the words prev and
// next names a record or measures one object (a size, a count), so that
// normalizeReason folds it to N.
func numberNamesObject(prev, next string) bool {
	switch contextWord(prev) {
	case "than", "most", "least", "max", "limit", "over", "under":
		return false // a bound, not a measurement: "longer than 1024 bytes"
	case "id", "ids", "record", "records", "row", "rows", "model", "for", "of", "size", "offset",
		"received", "announced", "content-length", "x-geo-size":
		return true
	}
	switch contextWord(next) {
	case "byte", "bytes", "row", "rows", "record", "records":
		return true
	}
	return false
}

// normalizeReason folds what names one record or object in a failure
// message, so that messages differing only in that are one reason, while
// messages of different causes stay distinct:
//
//   - A word holding a slash (a storage key, a path, "type/id") keeps its
//     segments up to the first that names one object: a segment with a
//     digit, a short hex fan-out directory ("bb" in "lfs/bb/63/bb63..."),
//     or a long mixed-case random token. The rest becomes "*", or "N"
//     when it is one number: "lfs/bb/63/bb634d8..." is "lfs/*",
//     "packages/7/files/9/a.tgz" is "packages/*", "upload/42" is
//     "upload/N". A URL keeps its scheme and host. Slashed words with no
//     such segment ("net/http", "i/o") are kept.
//   - A hex run of at least 16 digits or a UUID becomes "H".
//   - A number becomes "N" after a word naming a record or a size ("id",
//     "record", "for", "of", "received", "announced", "Content-Length",
//     "X-Geo-Size"...) or before "bytes", "rows" or "records", and so
//     does the local port of a connection ("127.0.0.1:37430->"). Other
//     numbers are kept: HTTP statuses ("answered 503"), SQLSTATE codes
//     ("(57014)"), ports of a server, bounds ("longer than 1024 bytes").
//   - Durations ("after 30s") are kept: in geo's messages they are
//     configured timeouts, not measurements.
//   - A message cut to MaxFailureLen ends with "…": the cut word before it
//     is dropped, since where a message is cut depends on the lengths of
//     the ids before it.
func normalizeReason(reason string) string {
	toks := reasonTokens(reason)
	if n := len(toks); n >= 2 && toks[n-1].text == "…" && toks[n-2].word {
		toks = append(toks[:n-2], toks[n-1])
	}
	words := make([]int, 0, len(toks))
	for i, t := range toks {
		if t.word {
			words = append(words, i)
		}
	}
	var b strings.Builder
	b.Grow(len(reason))
	w := 0
	for _, t := range toks {
		if !t.word {
			b.WriteString(t.text)
			continue
		}
		var prev, next string
		if w > 0 {
			prev = toks[words[w-1]].text
		}
		if w+1 < len(words) {
			next = toks[words[w+1]].text
		}
		w++
		b.WriteString(normalizeWord(t.text, prev, next))
	}
	return b.String()
}

// reasonToken is a word of a failure message or the separators between
// two words.
type reasonToken struct {
	text string
	word bool
}

// reasonTokensCap is the tokens reasonTokens makes room for at first:
// enough for most failure messages (a word and a separator each), so the
// slice is not grown word by word.
const reasonTokensCap = 32

// reasonSeparator reports whether r separates words of a failure message.
// Colons, dots, slashes, dashes and brackets are part of words (host:port,
// paths, keys, IPv6 addresses).
func reasonSeparator(r rune) bool {
	return unicode.IsSpace(r) || strings.ContainsRune("\"'`(),;={}…", r)
}

func reasonTokens(s string) []reasonToken {
	toks := make([]reasonToken, 0, reasonTokensCap)
	start, inWord := 0, false
	for i, r := range s {
		if sep := reasonSeparator(r); sep == inWord {
			if i > start {
				toks = append(toks, reasonToken{text: s[start:i], word: inWord})
			}
			start, inWord = i, !sep
		}
	}
	if len(s) > start {
		toks = append(toks, reasonToken{text: s[start:], word: inWord})
	}
	return toks
}

// normalizeWord normalizes one word given its neighbours (see
// normalizeReason). A trailing colon or dot is punctuation, not part of
// the word.
func normalizeWord(w, prev, next string) string {
	core := strings.TrimRight(w, ":.")
	punct := w[len(core):]
	if core == "" {
		return w
	}
	switch {
	case strings.Contains(core, "/"):
		core = normalizePath(core)
	case isDecimal(core):
		if numberNamesObject(prev, next) {
			core = reasonNumber
		}
	default:
		// Each expression runs only on words that could match it: most
		// words cannot, and a status report normalizes a thousand messages
		// or more.
		if strings.Contains(core, "->") {
			core = reasonLocalPort.ReplaceAllString(core, ":"+reasonNumber+"->")
		}
		if len(core) >= reasonUUIDLen && strings.IndexByte(core, '-') >= 0 {
			core = reasonUUID.ReplaceAllString(core, reasonDigest)
		}
		if hasHexRun(core, reasonHexRunLen) {
			core = reasonHex.ReplaceAllString(core, reasonDigest)
		}
	}
	return core + punct
}

// reasonUUIDLen is the length of a UUID in its text form, the shortest word
// reasonUUID can match in.
const reasonUUIDLen = 36

// hasHexRun reports whether s holds n or more hex digits in a row, which
// reasonHex needs to match.
func hasHexRun(s string, n int) bool {
	run := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' {
			if run++; run >= n {
				return true
			}
		} else {
			run = 0
		}
	}
	return false
}

// contextWord is a neighbouring word as the number rules compare it.
func contextWord(w string) string {
	w = strings.ToLower(strings.TrimRight(w, ":.#"))
	if strings.HasSuffix(w, "_id") {
		return "id"
	}
	return w
}

// normalizePath keeps a slashed word's segments up to the first that
// names one object (see normalizeReason).
func normalizePath(w string) string {
	prefix, rest := "", w
	if i := strings.Index(w, "://"); i > 0 {
		j := strings.IndexByte(w[i+3:], '/')
		if j < 0 {
			return w
		}
		prefix, rest = w[:i+3+j+1], w[i+3+j+1:]
	}
	segs := strings.Split(rest, "/")
	for k, seg := range segs {
		if !objectSegment(seg) {
			continue
		}
		kept := prefix + strings.Join(segs[:k], "/")
		if k > 0 {
			kept += "/"
		}
		if k == len(segs)-1 && isDecimal(seg) {
			return kept + reasonNumber
		}
		return kept + reasonKeyTail
	}
	return w
}

// reasonFanOutLen is the longest all-hex key segment taken for a fan-out
// directory (content-addressed layouts split a digest into "bb/63/...").
const reasonFanOutLen = 4

// reasonTokenLen is the shortest mixed-case segment taken for a random
// token (a key's secret segment).
const reasonTokenLen = 16

// objectSegment reports whether a path segment names one object: it holds
// a digit, or is a short hex fan-out directory, or a long mixed-case
// random token.
func objectSegment(seg string) bool {
	if seg == "" {
		return false
	}
	hex, upper, lower, token := true, false, false, true
	for _, r := range seg {
		switch {
		case r >= '0' && r <= '9':
			return true
		case r >= 'a' && r <= 'f':
			lower = true
		case r >= 'A' && r <= 'F':
			upper = true
		case r >= 'a' && r <= 'z':
			hex, lower = false, true
		case r >= 'A' && r <= 'Z':
			hex, upper = false, true
		case r == '-' || r == '_':
			hex = false
		default:
			hex, token = false, false
		}
	}
	return (hex && len(seg) <= reasonFanOutLen) || (token && upper && lower && len(seg) >= reasonTokenLen)
}

func isDecimal(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// topFailuresSQL samples, per type ($1), the sample ($2) most recent sync
// failures (geo_registry_failed_due) and verification failures
// (geo_registry_verify_failed), counted per exact reason; TopFailures
// groups them by normalizeReason. Both indexes carry the failure message
// (migration 0011), so each sample is an index-only scan of at most
// sample entries (1,000,000 rows, 10,000 failed: 2-7 ms for two types,
// against 25 ms with the table cached and 230 ms without when the
// messages were read from the heap).
const topFailuresSQL = `
SELECT t.replicable, 'sync' AS kind, f.reason, count(*) AS n
FROM unnest($1::text[]) AS t(replicable)
CROSS JOIN LATERAL (SELECT coalesce(r.last_sync_failure, '') AS reason FROM geo_registry r
  WHERE r.replicable = t.replicable AND r.state = 3 ORDER BY r.retry_at DESC LIMIT $2) f
GROUP BY 1, 2, 3
UNION ALL
SELECT t.replicable, 'verification', f.reason, count(*)
FROM unnest($1::text[]) AS t(replicable)
CROSS JOIN LATERAL (SELECT coalesce(r.verification_failure, '') AS reason FROM geo_registry r
  WHERE r.replicable = t.replicable AND r.state = 2 AND r.verification_state = 3
  ORDER BY coalesce(r.verification_retry_at, '-infinity'::timestamptz) DESC LIMIT $2) f
GROUP BY 1, 2, 3`

// TopFailures returns, for each of types with failures, its top most
// frequent sync and verification failure reasons (see FailureReason), most
// frequent first (ties by reason). To stay cheap when a type has very many
// failures, the reasons are counted over at most sample rows of each kind
// per type, the ones failed most recently (by their next retry time): the
// counts are exact when a type has at most sample failed rows of a kind
// (Counts.Failed, Counts.VerificationFailed), and otherwise counts within
// that sample, which a reader must label as such. top and sample must be
// positive.
func (s *Store) TopFailures(ctx context.Context, types []string, top, sample int) (map[string]Failures, error) {
	if top <= 0 || sample <= 0 {
		return nil, fmt.Errorf("registry: top failures: top = %d, sample = %d, want > 0", top, sample)
	}
	var got []struct {
		Replicable string `db:"replicable"`
		Kind       string `db:"kind"`
		Reason     string `db:"reason"`
		N          int64  `db:"n"`
	}
	err := s.db.SelectContext(ctx, &got, topFailuresSQL, pq.Array(types), sample)
	if err != nil {
		return nil, fmt.Errorf("registry: top failures: %w", err)
	}
	type group struct{ replicable, kind, reason string }
	groups := map[group]*FailureReason{}
	for _, g := range got {
		k := group{g.Replicable, g.Kind, normalizeReason(g.Reason)}
		r := groups[k]
		if r == nil {
			r = &FailureReason{Reason: k.reason, Example: g.Reason}
			groups[k] = r
		}
		r.Count += g.N
		if g.Reason < r.Example {
			r.Example = g.Reason
		}
	}
	out := map[string]Failures{}
	for k, r := range groups {
		f := out[k.replicable]
		if k.kind == "sync" {
			f.Sync = append(f.Sync, *r)
		} else {
			f.Verification = append(f.Verification, *r)
		}
		out[k.replicable] = f
	}
	for name, f := range out {
		f.Sync, f.Verification = topReasons(f.Sync, top), topReasons(f.Verification, top)
		out[name] = f
	}
	return out, nil
}

func topReasons(rs []FailureReason, top int) []FailureReason {
	sort.Slice(rs, func(i, j int) bool {
		if rs[i].Count != rs[j].Count {
			return rs[i].Count > rs[j].Count
		}
		return rs[i].Reason < rs[j].Reason
	})
	if len(rs) > top {
		rs = rs[:top]
	}
	return rs
}

// FailedQuery selects a page of Failed rows.
type FailedQuery struct {
	// Replicable narrows the list to one type; "" lists every type.
	Replicable string
	// After is the last key of the previous page; the zero Key starts at
	// the beginning. Rows are ordered by (replicable, model id).
	After Key
	// Limit is the page size; it must be positive.
	Limit int
}

// Failed returns a page of rows that need an operator's attention: sync
// failed (state failed) or verification failed on a synced row, ordered
// by (replicable, model id) after q.After. A short page is the last one.
func (s *Store) Failed(ctx context.Context, q FailedQuery) ([]Row, error) {
	if q.Limit <= 0 {
		return nil, fmt.Errorf("registry: failed rows: limit = %d, want > 0", q.Limit)
	}
	var got []rowScan
	err := s.db.SelectContext(ctx, &got, `SELECT `+rowColumns+` FROM geo_registry
WHERE (state = 3 OR (state = 2 AND verification_state = 3))
  AND ($1 = '' OR replicable = $1)
  AND (replicable, model_id) > ($2, $3)
ORDER BY replicable, model_id
LIMIT $4`, q.Replicable, q.After.Replicable, q.After.ModelID, q.Limit)
	if err != nil {
		return nil, fmt.Errorf("registry: failed rows: %w", err)
	}
	out := make([]Row, len(got))
	for i, r := range got {
		out[i] = r.row()
	}
	return out, nil
}

// Paused returns the paused types and when each was paused.
func (s *Store) Paused(ctx context.Context) (map[string]time.Time, error) {
	var got []struct {
		Replicable string    `db:"replicable"`
		PausedAt   time.Time `db:"paused_at"`
	}
	if err := s.db.SelectContext(ctx, &got, `SELECT replicable, paused_at FROM geo_paused`); err != nil {
		return nil, fmt.Errorf("registry: paused types: %w", err)
	}
	out := make(map[string]time.Time, len(got))
	for _, g := range got {
		out[g.Replicable] = g.PausedAt
	}
	return out, nil
}

// EventCursor is a saved position of an outbox consumer
// (geo_event_cursor).
type EventCursor struct {
	// Consumer is the consumer's name (events.ConsumerConfig.Name).
	Consumer string
	// XID and ID are the position: the last event read is (XID, ID).
	XID uint64
	ID  int64
	// UpdatedAt is when the consumer last saved the cursor: it saves after
	// every batch it handles, so an idle primary leaves it unchanged.
	UpdatedAt time.Time
}

// EventCursors returns every consumer's saved cursor, by name.
func (s *Store) EventCursors(ctx context.Context) ([]EventCursor, error) {
	var got []struct {
		Consumer  string    `db:"consumer"`
		XID       string    `db:"xid"`
		ID        int64     `db:"id"`
		UpdatedAt time.Time `db:"updated_at"`
	}
	if err := s.db.SelectContext(ctx, &got,
		`SELECT consumer, xid::text AS xid, id, updated_at FROM geo_event_cursor ORDER BY consumer`); err != nil {
		return nil, fmt.Errorf("registry: event cursors: %w", err)
	}
	out := make([]EventCursor, len(got))
	for i, g := range got {
		x, err := strconv.ParseUint(g.XID, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("registry: event cursors: xid %q of %s: %w", g.XID, g.Consumer, err)
		}
		out[i] = EventCursor{Consumer: g.Consumer, XID: x, ID: g.ID, UpdatedAt: g.UpdatedAt}
	}
	return out, nil
}

// Types returns the names of the types that have registry rows, a
// consistency cursor or a pause, sorted: what an admin tool can list
// without the process's registered set. It walks the primary key's
// distinct leading values (a skip scan), not every row.
func (s *Store) Types(ctx context.Context) ([]string, error) {
	names := []string{}
	err := s.db.SelectContext(ctx, &names, `
WITH RECURSIVE t(name) AS (
  (SELECT replicable FROM geo_registry ORDER BY replicable LIMIT 1)
  UNION ALL
  SELECT (SELECT replicable FROM geo_registry WHERE replicable > t.name ORDER BY replicable LIMIT 1)
  FROM t WHERE t.name IS NOT NULL
)
SELECT name FROM t WHERE name IS NOT NULL
UNION SELECT replicable FROM geo_consistency
UNION SELECT replicable FROM geo_paused
ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("registry: tracked types: %w", err)
	}
	return names, nil
}
