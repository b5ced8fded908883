package xfer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/geoframework/geo/replicator/transfer"
	"github.com/geoframework/geo/strategy"
)

// RepositoryPath returns the path of record id of replicable on the
// repository endpoint (NewRepositoryHandler): git appends /info/refs and
// /git-upload-pack to it.
func RepositoryPath(replicable string, id int64) string {
	return transfer.RepositoryPathPrefix + replicable + "/" + strconv.FormatInt(id, 10)
}

// RepositoryHandlerConfig configures the primary's repository endpoint.
type RepositoryHandlerConfig struct {
	// Resolve returns the handler serving record id of replicable's
	// repository (git's smart HTTP protocol for that one repository). It
	// returns an error matching strategy.ErrUnknownReplicable for an
	// unknown name, strategy.ErrNotFound when there is no such record,
	// strategy.ErrBlobMissing when the record exists but its repository
	// does not, and strategy.ErrInvalidKey when the record's path fails
	// validation. Any other error is a 500 internal. Required.
	Resolve func(ctx context.Context, replicable string, id int64) (http.Handler, error)
	// Secrets authenticates secondaries. Required.
	Secrets transfer.Secrets
	// Logger receives one entry per request; nil means none.
	Logger *zap.Logger
	// Now is the clock for token checks; nil means time.Now.
	Now func() time.Time
	// Observe, when set, is called after each request served (after
	// authentication and resolution) with when it started and ended and
	// the body bytes written.
	Observe func(replicable string, id int64, start, end time.Time, bytes int64)
}

// NewRepositoryHandler returns the primary's repository endpoint: any
// request under transfer.RepositoryPathPrefix + "{replicable}/{id}/",
// authenticated by Verifier.Verify with the token of that record, then
// handed to the handler Resolve gives for the record. The record's
// repository is chosen by the id in the path, whose token the request
// must carry; what follows the id only selects the protocol step, so a
// token for one repository opens no other. Errors before the handler runs
// are the blob endpoint's JSON answers: 400 bad_id, 401 unauthorized (for
// any authentication failure), 404 unknown_replicable, record_not_found
// or missing_on_primary, 500 adapter_bad_key or internal. Push
// (receive-pack) is refused with 403 before authentication, whatever the
// method, so a pushing client learns nothing either.
func NewRepositoryHandler(cfg RepositoryHandlerConfig) (http.Handler, error) {
	if cfg.Resolve == nil {
		return nil, errors.New("transfer: NewRepositoryHandler: RepositoryHandlerConfig.Resolve is nil")
	}
	if cfg.Secrets == nil {
		return nil, errors.New("transfer: NewRepositoryHandler: RepositoryHandlerConfig.Secrets is nil")
	}
	h := &repoHandler{cfg: cfg, log: cfg.Logger, verifier: Verifier{Secrets: cfg.Secrets, Now: cfg.Now}, now: time.Now}
	if h.log == nil {
		h.log = zap.NewNop()
	}
	if cfg.Now != nil {
		h.now = cfg.Now
	}
	mux := http.NewServeMux()
	mux.HandleFunc(transfer.RepositoryPathPrefix+"{replicable}/{id}/{rest...}", h.serve)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, CodeNotFound, "no such endpoint")
	})
	return mux, nil
}

type repoHandler struct {
	cfg      RepositoryHandlerConfig
	log      *zap.Logger
	verifier Verifier
	now      func() time.Time
}

func (h *repoHandler) serve(w http.ResponseWriter, r *http.Request) {
	if strings.Contains(r.URL.Path, "receive-pack") || strings.Contains(r.URL.RawQuery, "receive-pack") {
		writeError(w, http.StatusForbidden, "push_refused", "the primary's repository endpoint serves fetches only")
		return
	}
	replicable := r.PathValue("replicable")
	id, err := parseID(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeBadID, "bad record id: "+err.Error())
		return
	}
	log := h.log.With(zap.String("replicable", replicable), zap.Int64("model_record_id", id))
	ctx := r.Context()
	site, err := h.verifier.Verify(ctx, r.Header.Get("Authorization"), replicable, id)
	if err != nil {
		log.Warn("repository transfer: unauthorized", zap.String("remote", r.RemoteAddr), zap.String("reason", err.Error()))
		writeError(w, http.StatusUnauthorized, CodeUnauthorized, "unauthorized")
		return
	}
	log = log.With(zap.String("site", site))
	serve, err := h.cfg.Resolve(ctx, replicable, id)
	if err != nil {
		switch {
		case errors.Is(err, strategy.ErrUnknownReplicable):
			writeError(w, http.StatusNotFound, CodeUnknownReplicable, "unknown replicable")
		case errors.Is(err, strategy.ErrBlobMissing):
			writeError(w, http.StatusNotFound, CodeMissingOnPrimary, "the record's repository is missing on the primary")
		case errors.Is(err, strategy.ErrNotFound):
			writeError(w, http.StatusNotFound, CodeRecordNotFound, "no such record")
		case errors.Is(err, strategy.ErrInvalidKey):
			log.Error("repository transfer: the adapter returned an invalid repository path for the record", zap.Error(err))
			writeError(w, http.StatusInternalServerError, CodeBadKey,
				"the adapter's repository path for this record fails validation; the primary's log names the rule")
			return
		default:
			log.Error("repository transfer: resolve", zap.Error(err))
			writeError(w, http.StatusInternalServerError, CodeInternal, "internal error")
			return
		}
		log.Info("repository transfer: not served", zap.Error(err))
		return
	}
	start := h.now()
	cw := &countingWriter{ResponseWriter: w, status: http.StatusOK}
	serve.ServeHTTP(cw, r)
	end := h.now()
	if h.cfg.Observe != nil {
		h.cfg.Observe(replicable, id, start, end, cw.n)
	}
	log.Info("repository transfer", zap.String("method", r.Method), zap.String("step", r.PathValue("rest")),
		zap.Int("status", cw.status), zap.Int64("bytes", cw.n), zap.Duration("duration", end.Sub(start)))
}

// Flush lets git's streamed answers (a pack, progress) reach the client
// as they are written.
func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// CheckAnswer asks the endpoint at url (a repository's, on the primary)
// with authorization and returns nil for a 200 answer, else the error the
// answer stands for (a *StatusError: ErrRecordNotFound, ErrMissingOnPrimary,
// ErrUnauthorized, ...). A secondary uses it after git failed with a
// status that git cannot explain, to learn which of those it was.
func CheckAnswer(ctx context.Context, client *http.Client, url, authorization string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("transfer: check answer: %w", err)
	}
	req.Header.Set("Authorization", authorization)
	c := *client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("transfer: check answer: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	return statusError(resp)
}
