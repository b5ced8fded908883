package ui

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"go.uber.org/zap"

	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/strategy"
)

// Actions, as the forms' action field names them.
const (
	actPause          = "pause"
	actResume         = "resume"
	actResync         = "resync"
	actReverify       = "reverify"
	actResyncFailed   = "resync-failed"
	actResyncAll      = "resync-all"
	actReverifyFailed = "reverify-failed"
	actReverifyAll    = "reverify-all"
)

// maxFormBytes bounds the body of an action's form.
const maxFormBytes = 16 << 10

// guard checks an action's POST and answers it when it may not run:
// 403 Forbidden on a read-only page, for a cross-origin request, without
// the CSRF token of the request's cookie, or when Config.Authorize says
// no. It returns true when the action may run.
func (h *Handler) guard(w http.ResponseWriter, r *http.Request) bool {
	if !h.actions {
		h.fail(w, r, http.StatusForbidden, "This page is read-only: it runs no action.")
		return false
	}
	if err := h.origin.Check(r); err != nil {
		h.log.Warn("ui: action refused: cross-origin request", zap.String("remote", r.RemoteAddr))
		h.fail(w, r, http.StatusForbidden, "Cross-origin request refused: act from this site's own page.")
		return false
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		h.fail(w, r, http.StatusBadRequest, "The form could not be read.")
		return false
	}
	if !h.csrf.valid(r) {
		h.log.Warn("ui: action refused: no valid CSRF token", zap.String("remote", r.RemoteAddr))
		h.fail(w, r, http.StatusForbidden, "The form's CSRF token is missing or does not match: reload the page and try again.")
		return false
	}
	if !h.cfg.Authorize(r) {
		h.log.Warn("ui: action refused by Authorize", zap.String("remote", r.RemoteAddr))
		h.fail(w, r, http.StatusForbidden, "You may not run actions here.")
		return false
	}
	return true
}

// done redirects an action's POST to the page it came from, saying what
// it did (see flash).
func done(w http.ResponseWriter, q url.Values) {
	seeOther(w, "?"+q.Encode())
}

func (h *Handler) wake() {
	if h.cfg.Waker != nil {
		h.cfg.Waker.Wake()
	}
}

// typeAction runs a type's action: pause, resume, resync or reverify of
// its failed or all rows.
func (h *Handler) typeAction(w http.ResponseWriter, r *http.Request) {
	if !h.guard(w, r) {
		return
	}
	act, typ := r.PostForm.Get("action"), r.PostForm.Get("type")
	ctx, cancel := h.ctx(r)
	defer cancel()
	if strategy.ValidateName(typ) != nil {
		h.fail(w, r, http.StatusBadRequest, "No such type: "+strconv.Quote(typ)+".")
		return
	}
	if !slices.Contains(h.cfg.Types, typ) {
		known, err := h.store.Types(ctx)
		if err != nil {
			h.fail(w, r, http.StatusServiceUnavailable, "The tracking database could not be read: "+err.Error())
			return
		}
		if !slices.Contains(known, typ) {
			h.fail(w, r, http.StatusNotFound, "No such type here: "+typ+".")
			return
		}
	}
	var (
		n   int64
		err error
	)
	// A walk over a type's rows is bounded by the request, each batch by
	// BatchTimeout; batches committed before an error stay done.
	batch := registry.BatchOptions{BatchTimeout: h.cfg.BatchTimeout, Progress: func(registry.BatchProgress) error {
		h.wake()
		return nil
	}}
	var p registry.BatchProgress
	switch act {
	case actPause:
		err = h.store.Pause(ctx, typ)
	case actResume:
		err = h.store.Resume(ctx, typ)
	case actResyncFailed, actResyncAll:
		batch.OnlyFailed = act == actResyncFailed
		p, err = h.store.ResyncBatches(r.Context(), typ, batch)
		n = p.Changed
	case actReverifyFailed, actReverifyAll:
		batch.OnlyFailed = act == actReverifyFailed
		p, err = h.store.ReverifyBatches(r.Context(), typ, batch)
		n = p.Changed
	default:
		h.fail(w, r, http.StatusBadRequest, "No such action: "+strconv.Quote(act)+".")
		return
	}
	h.log.Info("ui: action", zap.String("action", act), zap.String("replicable", typ), zap.Int64("rows", n),
		zap.String("remote", r.RemoteAddr), zap.Error(err))
	if err != nil {
		msg := act + " " + typ + " failed: " + err.Error()
		if p.Batches > 0 {
			msg += " (" + num(p.Changed) + " rows changed by the batches committed before, up to id " + strconv.FormatInt(p.After, 10) + ")"
		}
		h.fail(w, r, http.StatusInternalServerError, msg)
		return
	}
	h.wake()
	done(w, url.Values{"done": {act}, "type": {typ}, "n": {strconv.FormatInt(n, 10)}})
}

// recordAction resyncs or reverifies one record.
func (h *Handler) recordAction(w http.ResponseWriter, r *http.Request) {
	typ, id, ok := recordKey(r)
	if !ok {
		h.fail(w, r, http.StatusNotFound, "No such record: a record is TYPE/ID, a type's name and a positive id.")
		return
	}
	if !h.guard(w, r) {
		return
	}
	ctx, cancel := h.ctx(r)
	defer cancel()
	act := r.PostForm.Get("action")
	var (
		n   int64
		err error
	)
	switch act {
	case actResync:
		n, err = h.store.Resync(ctx, typ, []int64{id})
	case actReverify:
		n, err = h.store.Reverify(ctx, typ, []int64{id})
	default:
		h.fail(w, r, http.StatusBadRequest, "No such action: "+strconv.Quote(act)+".")
		return
	}
	h.log.Info("ui: action", zap.String("action", act), zap.String("replicable", typ), zap.Int64("model_record_id", id),
		zap.Int64("rows", n), zap.String("remote", r.RemoteAddr), zap.Error(err))
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, act+" "+typ+"/"+strconv.FormatInt(id, 10)+" failed: "+err.Error())
		return
	}
	h.wake()
	done(w, url.Values{"done": {act}, "type": {typ}, "id": {strconv.FormatInt(id, 10)}, "n": {strconv.FormatInt(n, 10)}})
}
