package ui

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/strategy"
)

// Kinds of failure, as the failures page's kind parameter names them.
const (
	kindSync         = "sync"
	kindVerification = "verification"
)

// overviewBody is the overview page's.
type overviewBody struct {
	Secondary bool // a tracking database: Status is set
	Primary   bool // a primary database: Checksums is set
	Status    replicator.Status
	Types     []typeView
	Checksums []checksumView
}

// typeView is one type on the overview.
type typeView struct {
	replicator.TypeStatus
	// Whole is what the percentages are of: the larger of the registry's
	// rows and the primary's records.
	Whole   int64
	Bar     []segment
	Metrics []metric
	// Untracked is how many of the primary's records have no row yet.
	Untracked int64
	Reasons   []reasonView
	// Sample is the most failed rows of each kind the reasons are counted
	// over (StatusOptions.FailureSample); Sampled says the type has more
	// failed rows than that, so the reasons' counts are a sample's, not
	// totals.
	Sample  int64
	Sampled bool
}

// metric is one line of a type's counts.
type metric struct {
	Key, Label, Class string
	N                 int64
	Pct               float64
	Note              string
}

// reasonView is a failure reason with the link to its records.
type reasonView struct {
	registry.FailureReason
	Kind string
	Href string
}

// checksumView is one type's primary verification on the overview.
type checksumView struct {
	Replicable string
	Counts     registry.ChecksumCounts
	Bar        []segment
	Metrics    []metric
}

func (h *Handler) ctx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), h.cfg.QueryTimeout)
}

func (h *Handler) overview(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	p := h.newPage(w, r, "Replication status")
	p.Flash = flash(r.URL.Query())
	body := &overviewBody{Secondary: h.store != nil, Primary: h.checksums != nil}
	p.Body = body
	ctx, cancel := h.ctx(r)
	defer cancel()
	code := http.StatusOK
	if h.store != nil {
		st, err := replicator.ReadStatus(ctx, h.cfg.Tracking, h.cfg.Types, h.cfg.Status)
		if err != nil {
			h.log.Warn("ui: status: " + err.Error())
			p.Errors = append(p.Errors, "The tracking database could not be read: "+err.Error())
			code = http.StatusServiceUnavailable
		} else {
			body.Status = st
			p.Health = string(st.Health)
			for _, ts := range st.Types {
				body.Types = append(body.Types, typeOf(ts, h.cfg.Status.FailureSample))
			}
		}
	}
	if h.checksums != nil {
		counts, err := h.checksums.Counts(ctx)
		if err != nil {
			h.log.Warn("ui: checksum counts: " + err.Error())
			p.Errors = append(p.Errors, "The primary's database could not be read: "+err.Error())
			if h.store == nil {
				code = http.StatusServiceUnavailable
			}
		}
		names := make([]string, 0, len(counts))
		for name := range counts {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			body.Checksums = append(body.Checksums, checksumOf(name, counts[name]))
		}
	}
	h.render(w, "overview", code, p, start)
}

// typeOf is ts on the overview; sample is the failure sample its reasons
// were counted over.
func typeOf(ts replicator.TypeStatus, sample int) typeView {
	c := ts.Counts
	v := typeView{TypeStatus: ts, Whole: max(c.Total, ts.PrimaryRecords), Sample: int64(sample)}
	// VerificationFailed counts every row whose verification failed, the
	// sampled ones (synced) among them: more than the sample may still be
	// all of those, but it is never said to be when it is not.
	v.Sampled = c.Failed > v.Sample || c.VerificationFailed > v.Sample
	verified := min(c.VerificationSucceeded, c.Synced)
	if ts.PrimaryRecords > c.Total {
		v.Untracked = ts.PrimaryRecords - c.Total
	}
	v.Bar = bar(v.Whole,
		part{"verified", "synced and verified", verified},
		part{"synced", "synced, not verified yet", c.Synced - verified},
		part{"started", "syncing", c.Started},
		part{"failed", "failed", c.Failed},
		part{"pending", "pending", c.Pending},
	)
	m := func(key, label, class string, n int64, note string) metric {
		return metric{Key: key, Label: label, Class: class, N: n, Pct: pctOf(n, v.Whole), Note: note}
	}
	v.Metrics = []metric{
		m("synced", "Synced", "synced", c.Synced, ""),
		m("verified", "Verified", "verified", verified, "of the synced, checked against the primary's checksum"),
		m("failed", "Failed", "failed", c.Failed, "retried with backoff"),
		m("pending", "Pending", "pending", c.Pending, ""),
		m("started", "Syncing", "started", c.Started, ""),
		m("missing", "Missing on primary", "missing", c.MissingOnPrimary, "of the failed: the primary lacks the file"),
	}
	if c.ChecksumMismatch > 0 {
		v.Metrics = append(v.Metrics, m("mismatch", "Checksum mismatch", "failed", c.ChecksumMismatch, "copies that differ from the primary's"))
	}
	if c.VerificationFailed > 0 {
		v.Metrics = append(v.Metrics, m("verification_failed", "Verification failed", "failed", c.VerificationFailed, ""))
	}
	if v.Untracked > 0 {
		v.Metrics = append(v.Metrics, m("untracked", "Not tracked yet", "", v.Untracked, "on the primary, no registry row yet (backfill)"))
	}
	for _, f := range ts.SyncFailures {
		v.Reasons = append(v.Reasons, reasonOf(ts.Replicable, kindSync, f))
	}
	for _, f := range ts.VerificationFailures {
		v.Reasons = append(v.Reasons, reasonOf(ts.Replicable, kindVerification, f))
	}
	return v
}

func reasonOf(typ, kind string, f registry.FailureReason) reasonView {
	q := url.Values{"type": {typ}, "kind": {kind}, "reason": {f.Reason}}
	return reasonView{FailureReason: f, Kind: kind, Href: "failures?" + q.Encode()}
}

func checksumOf(name string, c registry.ChecksumCounts) checksumView {
	v := checksumView{Replicable: name, Counts: c}
	v.Bar = bar(c.Total,
		part{"verified", "checksummed", c.Succeeded},
		part{"started", "checksumming", c.Started},
		part{"failed", "failed", c.Failed},
		part{"pending", "pending", c.Pending},
		part{"disabled", "disabled", c.Disabled},
	)
	m := func(key, label, class string, n int64) metric {
		return metric{Key: key, Label: label, Class: class, N: n, Pct: pctOf(n, c.Total)}
	}
	v.Metrics = []metric{
		m("succeeded", "Checksummed", "verified", c.Succeeded),
		m("failed", "Failed", "failed", c.Failed),
		m("pending", "Pending", "pending", c.Pending+c.Started),
	}
	if c.Disabled > 0 {
		v.Metrics = append(v.Metrics, m("disabled", "Disabled", "disabled", c.Disabled))
	}
	return v
}

// flash is the message of an action's redirect (see redirectDone).
func flash(q url.Values) string {
	done, typ, id := q.Get("done"), q.Get("type"), q.Get("id")
	if done == "" {
		return ""
	}
	n, _ := strconv.ParseInt(q.Get("n"), 10, 64)
	rows := rows(n)
	switch done {
	case actPause:
		return typ + " is paused: no new sync of it starts until it is resumed."
	case actResume:
		return typ + " is resumed."
	case actResync:
		if id != "" {
			if n == 0 {
				return typ + "/" + id + " has no registry row: nothing changed."
			}
			return typ + "/" + id + " is pending: it will be downloaded again."
		}
	case actReverify:
		if id != "" {
			if n == 0 {
				return typ + "/" + id + " is not synced: its next sync verifies it."
			}
			return typ + "/" + id + " will be verified again."
		}
	case actResyncFailed:
		return typ + ": " + rows + " that had failed are pending again."
	case actResyncAll:
		return typ + ": " + rows + " are pending again: they will be downloaded again."
	case actReverifyFailed, actReverifyAll:
		return typ + ": " + rows + " will be verified again."
	}
	return ""
}

// failuresBody is the failures page's.
type failuresBody struct {
	Types   []string
	Type    string
	Kind    string
	Reason  string
	Rows    []registry.Row
	Next    string // the next page's link, "" on the last
	Scanned bool   // the page stopped at registry.ReasonScanRows
}

func (h *Handler) failures(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if h.store == nil {
		seeOther(w, "checksums/failures")
		return
	}
	q := r.URL.Query()
	body := &failuresBody{Type: q.Get("type"), Kind: q.Get("kind"), Reason: q.Get("reason")}
	heading := "Failed records"
	if body.Type != "" {
		heading += " of " + body.Type
	}
	p := h.newPage(w, r, heading)
	p.Refresh = 0 // a list being paged must not move
	p.Body = body
	if body.Kind == "" {
		body.Kind = kindSync
	}
	if body.Kind != kindSync && body.Kind != kindVerification {
		h.fail(w, r, http.StatusBadRequest, "kind "+strconv.Quote(body.Kind)+": want sync or verification")
		return
	}
	ctx, cancel := h.ctx(r)
	defer cancel()
	types, err := h.store.Types(ctx)
	if err != nil {
		h.fail(w, r, http.StatusServiceUnavailable, "The tracking database could not be read: "+err.Error())
		return
	}
	body.Types = types
	next := url.Values{}
	for _, k := range []string{"type", "kind", "reason"} {
		if v := q.Get(k); v != "" {
			next.Set(k, v)
		}
	}
	if body.Reason != "" {
		if body.Type == "" {
			h.fail(w, r, http.StatusBadRequest, "a reason needs its type")
			return
		}
		after, _ := strconv.ParseInt(q.Get("after"), 10, 64)
		page, err := h.store.FailedWithReason(ctx, registry.ReasonQuery{Replicable: body.Type,
			Verification: body.Kind == kindVerification, Reason: body.Reason, After: after, Limit: h.cfg.PageSize})
		if err != nil {
			h.fail(w, r, http.StatusServiceUnavailable, "The tracking database could not be read: "+err.Error())
			return
		}
		body.Rows = page.Rows
		body.Scanned = !page.Done && len(page.Rows) < h.cfg.PageSize
		if !page.Done {
			next.Set("after", strconv.FormatInt(page.After, 10))
			body.Next = "failures?" + next.Encode()
		}
	} else {
		after, err := parseKey(q.Get("after"))
		if err != nil {
			h.fail(w, r, http.StatusBadRequest, err.Error())
			return
		}
		rows, err := h.store.Failed(ctx, registry.FailedQuery{Replicable: body.Type, After: after, Limit: h.cfg.PageSize})
		if err != nil {
			h.fail(w, r, http.StatusServiceUnavailable, "The tracking database could not be read: "+err.Error())
			return
		}
		body.Rows = rows
		if len(rows) == h.cfg.PageSize {
			last := rows[len(rows)-1]
			next.Set("after", last.Replicable+":"+strconv.FormatInt(last.ModelID, 10))
			body.Next = "failures?" + next.Encode()
		}
	}
	h.render(w, "failures", http.StatusOK, p, start)
}

// parseKey parses an "after" of the form TYPE:ID ("" is the start).
func parseKey(s string) (registry.Key, error) {
	if s == "" {
		return registry.Key{}, nil
	}
	typ, id, ok := strings.Cut(s, ":")
	n, err := strconv.ParseInt(id, 10, 64)
	if !ok || err != nil || n < 0 {
		return registry.Key{}, errors.New("after " + strconv.Quote(s) + ": want TYPE:ID")
	}
	return registry.Key{Replicable: typ, ModelID: n}, nil
}

// seeOther redirects to loc, a reference relative to the request's URL
// as the browser sees it. (http.Redirect would make it absolute from the
// path the handler sees, without the host's prefix.)
func seeOther(w http.ResponseWriter, loc string) {
	w.Header().Set("Location", loc)
	w.WriteHeader(http.StatusSeeOther)
}

// lookup sends the record form's type and id to the record's page.
func (h *Handler) lookup(w http.ResponseWriter, r *http.Request) {
	typ, id := r.URL.Query().Get("type"), strings.TrimSpace(r.URL.Query().Get("id"))
	n, err := strconv.ParseInt(id, 10, 64)
	if strategy.ValidateName(typ) != nil || err != nil || n <= 0 {
		h.fail(w, r, http.StatusBadRequest, "Look a record up by its type's name and its id (a positive number).")
		return
	}
	seeOther(w, "records/"+typ+"/"+strconv.FormatInt(n, 10))
}

// recordBody is the record page's.
type recordBody struct {
	Type     string
	ID       int64
	Row      *registry.Row         // nil when not tracked (or no tracking database)
	Checksum *registry.ChecksumRow // nil when the primary has none (or no primary database)
	Paused   bool
	// ChecksumMatch says the local copy's verified checksum equals the
	// primary's; both are known.
	ChecksumKnown, ChecksumMatch bool
	Secondary, Primary           bool
}

// recordKey parses the record page's path values.
func recordKey(r *http.Request) (string, int64, bool) {
	typ := r.PathValue("type")
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if strategy.ValidateName(typ) != nil || err != nil || id <= 0 {
		return "", 0, false
	}
	return typ, id, true
}

func (h *Handler) record(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	typ, id, ok := recordKey(r)
	if !ok {
		h.fail(w, r, http.StatusNotFound, "No such record: a record is TYPE/ID, a type's name and a positive id.")
		return
	}
	p := h.newPage(w, r, typ+"/"+strconv.FormatInt(id, 10))
	p.Flash = flash(r.URL.Query())
	body := &recordBody{Type: typ, ID: id, Secondary: h.store != nil, Primary: h.checksums != nil}
	p.Body = body
	ctx, cancel := h.ctx(r)
	defer cancel()
	if h.store != nil {
		row, err := h.store.Get(ctx, typ, id)
		switch {
		case err == nil:
			body.Row = &row
		case !errors.Is(err, registry.ErrNotFound):
			h.fail(w, r, http.StatusServiceUnavailable, "The tracking database could not be read: "+err.Error())
			return
		}
		paused, err := h.store.Paused(ctx)
		if err != nil {
			h.fail(w, r, http.StatusServiceUnavailable, "The tracking database could not be read: "+err.Error())
			return
		}
		_, body.Paused = paused[typ]
	}
	if h.checksums != nil {
		c, err := h.checksums.Get(ctx, typ, id)
		switch {
		case err == nil:
			body.Checksum = &c
		case !errors.Is(err, registry.ErrNotFound):
			p.Errors = append(p.Errors, "The primary's database could not be read: "+err.Error())
		}
	}
	if body.Row == nil && body.Checksum == nil && len(p.Errors) == 0 {
		h.fail(w, r, http.StatusNotFound, typ+"/"+strconv.FormatInt(id, 10)+" is not tracked here.")
		return
	}
	if body.Row != nil && body.Checksum != nil && body.Row.VerificationChecksum != "" && body.Checksum.Checksum != "" {
		body.ChecksumKnown = true
		body.ChecksumMatch = body.Row.VerificationChecksum == body.Checksum.Checksum
	}
	h.render(w, "record", http.StatusOK, p, start)
}

// checksumsBody is the primary's failures page's.
type checksumsBody struct {
	Type string
	Rows []registry.ChecksumRow
	Next string
}

func (h *Handler) checksumFailures(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if h.checksums == nil {
		h.fail(w, r, http.StatusNotFound, "No primary database is configured: the primary's checksums are not shown here.")
		return
	}
	q := r.URL.Query()
	body := &checksumsBody{Type: q.Get("type")}
	heading := "Primary checksum failures"
	if body.Type != "" {
		heading += " of " + body.Type
	}
	p := h.newPage(w, r, heading)
	p.Refresh = 0
	p.Body = body
	after, err := parseKey(q.Get("after"))
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := h.ctx(r)
	defer cancel()
	rows, err := h.checksums.Failed(ctx, registry.FailedQuery{Replicable: body.Type, After: after, Limit: h.cfg.PageSize})
	if err != nil {
		h.fail(w, r, http.StatusServiceUnavailable, "The primary's database could not be read: "+err.Error())
		return
	}
	body.Rows = rows
	if len(rows) == h.cfg.PageSize {
		last := rows[len(rows)-1]
		next := url.Values{"after": {last.Replicable + ":" + strconv.FormatInt(last.ModelID, 10)}}
		if body.Type != "" {
			next.Set("type", body.Type)
		}
		body.Next = "failures?" + next.Encode()
	}
	h.render(w, "checksums", http.StatusOK, p, start)
}
