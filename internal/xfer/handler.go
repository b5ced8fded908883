package xfer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/replicator/transfer"
	"github.com/geoframework/geo/strategy"
)

// Headers of the transfer endpoint.
const (
	// HeaderChecksum carries, in a response, the primary's lowercase hex
	// SHA-256 of the blob. In a request it carries the checksum the client
	// already holds the bytes to (the primary's stored one, learnt
	// before); the endpoint then neither looks it up nor computes it.
	HeaderChecksum = "X-Geo-Checksum-Sha256"
	// HeaderSize carries the blob's full size in bytes (also on ranges).
	HeaderSize = "X-Geo-Size"
	// HeaderKey carries the storage key the primary served the record's
	// bytes from, so a secondary never stores a newer version of a record
	// under an older key (the record changed between the secondary's
	// lookup and the transfer).
	HeaderKey = "X-Geo-Key"
)

// Error codes of the transfer endpoint's JSON error bodies.
const (
	CodeUnknownReplicable = "unknown_replicable" // 404
	CodeRecordNotFound    = "record_not_found"   // 404
	CodeMissingOnPrimary  = "missing_on_primary" // 404: record exists, bytes do not
	CodeUnauthorized      = "unauthorized"       // 401: any authentication failure
	CodeBadID             = "bad_id"             // 400: id not a non-negative int64
	CodeBadChecksum       = "bad_checksum"       // 400: a malformed HeaderChecksum in the request
	CodeMethodNotAllowed  = "method_not_allowed" // 405
	CodeNotFound          = "not_found"          // 404: no such endpoint
	// CodeBadKey (500) says the primary's adapter gave the record a
	// storage key that fails ValidateKey: a defect of the primary's data
	// or adapter, not an outage, and retrying does not help until it is
	// fixed there. The Downloader returns transfer.ErrPrimaryAdapter for it.
	CodeBadKey   = "adapter_bad_key"
	CodeInternal = "internal" // 500: anything else
)

// ErrorBody is the JSON body of every error answer of the transfer
// endpoint.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// TransferPath returns the path of record id of replicable on the transfer
// endpoint.
func TransferPath(replicable string, id int64) string {
	return transfer.TransferPathPrefix + replicable + "/" + strconv.FormatInt(id, 10)
}

// Source is what the transfer endpoint serves for one record.
type Source struct {
	// Body is the blob's bytes; the handler closes it.
	Body io.ReadSeekCloser
	// Size is the blob's size in bytes.
	Size int64
	// ModTime is when the blob was last written (for Last-Modified and
	// conditional requests); zero means unknown.
	ModTime time.Time
	// Checksum is the primary's lowercase hex SHA-256 of the bytes, or ""
	// when unknown. A value that is not 64 hex digits is ignored.
	Checksum string
	// Key is the storage key the bytes come from, sent as HeaderKey; ""
	// when the bytes have no key (a strategy.Opener).
	Key string
}

// HandlerConfig configures the primary's transfer endpoint.
type HandlerConfig struct {
	// Resolve opens record id of replicable. It returns an error matching
	// strategy.ErrUnknownReplicable for an unknown name, strategy.ErrNotFound when
	// there is no such record, strategy.ErrBlobMissing when the record
	// exists but its bytes do not, and ErrInvalidKey when the record's
	// storage key (from the primary's adapter) fails ValidateKey (a 500
	// adapter_bad_key answer). Any other error is a 500 internal.
	// Required.
	Resolve func(ctx context.Context, replicable string, id int64) (Source, error)
	// Checksum looks up the primary's stored checksum of a record whose
	// Source has none (lowercase hex SHA-256, "" when none is stored). It
	// is not called when the request carries the checksum the client
	// already holds the record's bytes to (HeaderChecksum in the request,
	// sent by Downloader.Fetch with a wantChecksum): the client checks the
	// bytes against that one. When neither the client, Resolve nor
	// Checksum knows a checksum, the handler computes one by reading the
	// bytes before serving them, so every transfer can be checked end to
	// end. An error is logged and treated as "none stored". Optional.
	Checksum func(ctx context.Context, replicable string, id int64) (string, error)
	// transfer.Secrets authenticates secondaries. Required.
	Secrets transfer.Secrets
	// Logger receives one entry per request; nil means none.
	Logger *zap.Logger
	// Now is the clock for token checks; nil means time.Now.
	Now func() time.Time
	// Observe, when set, is called after each served blob (GET or HEAD,
	// whole or ranged) with when the serving started and ended and the
	// body bytes written.
	Observe func(replicable string, id int64, start, end time.Time, bytes int64)
}

// NewHandler returns the primary's transfer endpoint: GET and HEAD
// transfer.TransferPathPrefix + "{replicable}/{id}", authenticated by Verifier.Verify.
// It streams with http.ServeContent (Content-Length, Range, If-Range,
// Last-Modified) and sets HeaderSize and, unless the request carried
// HeaderChecksum, HeaderChecksum and an ETag (HandlerConfig.Checksum).
// Errors are JSON ErrorBody answers: 400 bad_id, then 401 unauthorized
// for any authentication failure (the reason goes to the log only), then
// 400 bad_checksum for a malformed HeaderChecksum in the request, then 404
// unknown_replicable, record_not_found or missing_on_primary, or 500
// adapter_bad_key when the record's key from the adapter is invalid, else
// 500 internal; 405 for other methods. Authentication comes before
// resolving, so an unauthenticated client learns nothing about what exists.
func NewHandler(cfg HandlerConfig) (http.Handler, error) {
	if cfg.Resolve == nil {
		return nil, errors.New("transfer: NewHandler: HandlerConfig.Resolve is nil")
	}
	if cfg.Secrets == nil {
		return nil, errors.New("transfer: NewHandler: HandlerConfig.Secrets is nil")
	}
	h := &handler{cfg: cfg, log: cfg.Logger, verifier: Verifier{Secrets: cfg.Secrets, Now: cfg.Now}}
	if h.log == nil {
		h.log = zap.NewNop()
	}
	h.now = time.Now
	if cfg.Now != nil {
		h.now = cfg.Now
	}
	mux := http.NewServeMux()
	pattern := transfer.TransferPathPrefix + "{replicable}/{id}"
	mux.HandleFunc("GET "+pattern, h.serveBlob) // GET patterns serve HEAD too
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, CodeMethodNotAllowed, "use GET or HEAD")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, CodeNotFound, "no such endpoint")
	})
	return mux, nil
}

type handler struct {
	cfg      HandlerConfig
	log      *zap.Logger
	verifier Verifier
	now      func() time.Time
}

// parseID parses a record id of the transfer path: decimal digits only
// (no sign, no spaces), fitting an int64.
func parseID(s string) (int64, error) {
	if s == "" || len(s) > 19 {
		return 0, errors.New("want 1 to 19 decimal digits")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("want decimal digits only")
		}
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, errors.New("out of range")
	}
	return id, nil
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(ErrorBody{Code: code, Message: message})
}

func (h *handler) serveBlob(w http.ResponseWriter, r *http.Request) {
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
		// err says which check failed and never holds a secret or token.
		log.Warn("blob transfer: unauthorized", zap.String("remote", r.RemoteAddr), zap.String("reason", err.Error()))
		writeError(w, http.StatusUnauthorized, CodeUnauthorized, "unauthorized")
		return
	}
	log = log.With(zap.String("site", site))
	known := strings.ToLower(r.Header.Get(HeaderChecksum))
	if known != "" && !validChecksum(known) {
		writeError(w, http.StatusBadRequest, CodeBadChecksum, "malformed "+HeaderChecksum+" header: want 64 hex digits")
		return
	}
	src, err := h.cfg.Resolve(ctx, replicable, id)
	if err != nil {
		switch {
		case errors.Is(err, strategy.ErrUnknownReplicable):
			writeError(w, http.StatusNotFound, CodeUnknownReplicable, "unknown replicable")
		case errors.Is(err, strategy.ErrBlobMissing):
			writeError(w, http.StatusNotFound, CodeMissingOnPrimary, "the record's bytes are missing on the primary")
		case errors.Is(err, strategy.ErrNotFound):
			writeError(w, http.StatusNotFound, CodeRecordNotFound, "no such record")
		case errors.Is(err, strategy.ErrInvalidKey):
			// The error names the rule broken, never the key.
			log.Error("blob transfer: the adapter returned an invalid storage key for the record", zap.Error(err))
			writeError(w, http.StatusInternalServerError, CodeBadKey,
				"the adapter's storage key for this record fails key validation; the primary's log names the rule")
			return
		default:
			log.Error("blob transfer: resolve", zap.Error(err))
			writeError(w, http.StatusInternalServerError, CodeInternal, "internal error")
			return
		}
		log.Info("blob transfer: not served", zap.Error(err))
		return
	}
	defer src.Body.Close()
	if src.Checksum == "" && known == "" {
		if err := h.checksum(ctx, log, replicable, id, &src); err != nil {
			log.Error("blob transfer: checksum", zap.Error(err))
			writeError(w, http.StatusInternalServerError, CodeInternal, "internal error")
			return
		}
	}

	hdr := w.Header()
	hdr.Set("Content-Type", "application/octet-stream")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set(HeaderSize, strconv.FormatInt(src.Size, 10))
	if src.Key != "" {
		hdr.Set(HeaderKey, src.Key)
	}
	if sum := strings.ToLower(src.Checksum); validChecksum(sum) {
		hdr.Set(HeaderChecksum, sum)
		hdr.Set("ETag", `"sha256-`+sum+`"`)
	}
	start := h.now()
	cw := &countingWriter{ResponseWriter: w, status: http.StatusOK}
	if r.Header.Get("Range") != "" || r.Header.Get("If-Range") != "" || r.Header.Get("If-None-Match") != "" ||
		r.Header.Get("If-Modified-Since") != "" || r.Header.Get("If-Match") != "" || r.Header.Get("If-Unmodified-Since") != "" {
		http.ServeContent(cw, r, "", src.ModTime, src.Body)
	} else {
		// The whole body: copied by the body's WriterTo, which for a
		// file hands it to the response's ReaderFrom, so the kernel
		// sends it (sendfile) instead of a copy through user space.
		hdr.Set("Content-Length", strconv.FormatInt(src.Size, 10))
		if !src.ModTime.IsZero() {
			hdr.Set("Last-Modified", src.ModTime.UTC().Format(http.TimeFormat))
		}
		hdr.Set("Accept-Ranges", "bytes")
		cw.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			if _, err := io.Copy(cw, src.Body); err != nil {
				log.Info("blob transfer: copy ended early", zap.Error(err))
			}
		}
	}
	end := h.now()
	if h.cfg.Observe != nil {
		h.cfg.Observe(replicable, id, start, end, cw.n)
	}
	log.Debug("blob transfer", zap.String("method", r.Method), zap.Int("status", cw.status),
		zap.Int64("bytes", cw.n), zap.Duration("duration", end.Sub(start)))
}

// countingWriter counts the body bytes written and records the status. It
// keeps the ResponseWriter's io.ReaderFrom, which the standard library uses
// to send files without copying through user space.
// checksum fills src.Checksum from HandlerConfig.Checksum or, when none
// is stored, by reading the bytes once and rewinding them.
func (h *handler) checksum(ctx context.Context, log *zap.Logger, replicable string, id int64, src *Source) error {
	if h.cfg.Checksum != nil {
		sum, err := h.cfg.Checksum(ctx, replicable, id)
		if err != nil {
			log.Warn("checksum lookup failed: computing it on the fly", zap.Error(err))
		}
		if sum = strings.ToLower(sum); err == nil && validChecksum(sum) {
			src.Checksum = sum
			return nil
		}
	}
	sum, _, err := blob.SHA256Reader(ctx, src.Body)
	if err != nil {
		return fmt.Errorf("checksum %s/%d: %w", replicable, id, err)
	}
	if _, err := src.Body.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("checksum %s/%d: rewind: %w", replicable, id, err)
	}
	src.Checksum = sum
	return nil
}

type countingWriter struct {
	http.ResponseWriter
	n      int64
	status int
}

func (c *countingWriter) WriteHeader(status int) {
	c.status = status
	c.ResponseWriter.WriteHeader(status)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) ReadFrom(r io.Reader) (n int64, err error) {
	if rf, ok := c.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(struct{ io.Writer }{c.ResponseWriter}, r)
	}
	c.n += n
	return n, err
}

// Unwrap gives http.ResponseController the underlying writer.
func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
