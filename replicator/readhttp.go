package replicator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/replicator/transfer"
	"github.com/geoframework/geo/strategy"
)

// ReadSourceHeader is the response header in which a ReadHandler says
// where the bytes came from: "local" or "primary" (ReadSource).
const ReadSourceHeader = "Geo-Read-Source"

// ReadWaitTimeoutDefault is ReadHandlerConfig.WaitTimeout's default.
const ReadWaitTimeoutDefault = 5 * time.Second

// ReadHandlerConfig configures NewReadHandler.
type ReadHandlerConfig struct {
	// Authorize decides whether the request may read record id of
	// replicable: nil lets it, an error answers 403 Forbidden (the error
	// is logged, never sent). It runs before anything else is looked at,
	// so an unauthorised client learns nothing, not even whether the
	// record exists. It is the host's own authentication and
	// authorisation (a session, a token, the record's permissions).
	// Required: a host that serves blobs to anyone says so with a func
	// that returns nil.
	Authorize func(r *http.Request, replicable string, id int64) error
	// Wait makes a request that names a Position (events.PositionHeader)
	// the local copy cannot serve yet wait up to WaitTimeout for the
	// secondary to catch up (ReadOptions.Wait), then read from the
	// primary if it has not. False reads from the primary at once.
	Wait bool
	// WaitTimeout bounds that wait; 0 means ReadWaitTimeoutDefault.
	WaitTimeout time.Duration
	// SpoolDir is where a Range request that must read from the primary
	// keeps the whole blob while it is checked (a temporary file, removed
	// when the response ends); "" means os.TempDir().
	SpoolDir string
	// Logger receives refusals and failed read-throughs; nil means the
	// Secondary's.
	Logger *zap.Logger
}

// NewReadHandler returns an http.Handler that serves record bytes from
// secondary s, with Secondary.Open's fallback to the primary. Mount it
// under a prefix of the host's choice with http.StripPrefix: it serves
// GET and HEAD of "/{replicable}/{id}".
//
// The answer:
//   - 200 with the bytes, or 206 for a Range, or 304 / 412 for a
//     conditional request, through http.ServeContent. The ETag is the
//     quoted SHA-256 of the bytes, Last-Modified the copy's (or the
//     primary's) time, Content-Type application/octet-stream.
//     ReadSourceHeader says where the bytes came from and
//     events.PositionHeader how fresh they are (BlobReader.Fresh).
//   - A request carrying events.PositionHeader (a Position Publish
//     returned on the primary, which the primary's application handed
//     its client) gets bytes at least that new (ReadOptions.After); a
//     malformed one is 400.
//   - A read-through whose bytes fail their size or checksum check shows
//     the failure only at the end: the handler then aborts the response
//     (http.ErrAbortHandler), so the client sees a broken connection, not
//     a complete-looking body. A Range request that must read from the
//     primary first fetches and checks the whole blob, so a wrong range is
//     never sent.
//   - 403 when Authorize refuses; 404 for an unknown type, a type that is
//     not a blob type, or a record the primary does not have (deleted,
//     never created, out of scope); 502 when the primary lacks the
//     record's bytes (missing on primary) or cannot be read; 504 when it
//     stalls; 400 for an id that is not a positive integer; 405 for other
//     methods.
//
// It fails with an error matching ErrInvalidConfig when cfg.Authorize is
// nil or a duration is negative.
func NewReadHandler(s *Secondary, cfg ReadHandlerConfig) (http.Handler, error) {
	switch {
	case s == nil:
		return nil, configError("NewReadHandler", "needs a Secondary")
	case cfg.Authorize == nil:
		return nil, configError("ReadHandlerConfig.Authorize", "is required (a func returning nil serves everyone)")
	case cfg.WaitTimeout < 0:
		return nil, configError("ReadHandlerConfig.WaitTimeout", "is negative")
	}
	if cfg.WaitTimeout == 0 {
		cfg.WaitTimeout = ReadWaitTimeoutDefault
	}
	if cfg.SpoolDir == "" {
		cfg.SpoolDir = os.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = s.cfg.Logger
	}
	h := &readHandler{s: s, cfg: cfg}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{replicable}/{id}", h.serve) // HEAD too
	return mux, nil
}

type readHandler struct {
	s   *Secondary
	cfg ReadHandlerConfig
}

func (h *readHandler) serve(w http.ResponseWriter, r *http.Request) {
	replicable := r.PathValue("replicable")
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		http.Error(w, "bad record id", http.StatusBadRequest)
		return
	}
	log := h.cfg.Logger.With(zap.String("replicable", replicable), zap.Int64("model_record_id", id))
	if err := h.cfg.Authorize(r, replicable, id); err != nil {
		log.Info("read refused by Authorize", zap.String("remote", r.RemoteAddr), zap.Error(err))
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	var opts ReadOptions
	if v := r.Header.Get(events.PositionHeader); v != "" {
		if opts.After, err = events.ParsePosition(v); err != nil {
			http.Error(w, "bad "+events.PositionHeader+" header", http.StatusBadRequest)
			return
		}
	}
	rd, err := h.open(r.Context(), replicable, id, opts)
	if err != nil {
		status := readErrorStatus(err)
		if status >= 500 {
			log.Warn("read on the secondary failed", zap.Int("status", status), zap.Error(err))
		}
		http.Error(w, http.StatusText(status), status)
		return
	}
	defer rd.Close()
	hd := w.Header()
	hd.Set("Content-Type", "application/octet-stream")
	hd.Set(ReadSourceHeader, string(rd.Source))
	hd.Set(events.PositionHeader, rd.Fresh.String())
	if rd.Checksum != "" {
		hd.Set("ETag", `"`+rd.Checksum+`"`)
	}
	content, cleanup, err := h.content(rd, r)
	if err != nil {
		// Nothing was sent: the whole blob was read and failed its check.
		log.Warn("read through the primary failed its check", zap.Error(err))
		status := readErrorStatus(err)
		http.Error(w, http.StatusText(status), status)
		return
	}
	defer cleanup()
	http.ServeContent(w, r, "", rd.ModTime, content)
	if err := rd.failed(); err != nil {
		// The bytes sent are wrong or short: break the response so the
		// client cannot take them for the blob.
		log.Warn("read through the primary failed its check; response aborted", zap.Error(err))
		panic(http.ErrAbortHandler)
	}
}

// open is Secondary.Open with the handler's wait: bounded by WaitTimeout,
// after which the read goes to the primary.
func (h *readHandler) open(ctx context.Context, replicable string, id int64, opts ReadOptions) (*BlobReader, error) {
	if !h.cfg.Wait || opts.After.IsZero() {
		return h.s.Open(ctx, replicable, id, &opts)
	}
	wctx, cancel := context.WithTimeout(ctx, h.cfg.WaitTimeout)
	defer cancel()
	waited := opts
	waited.Wait = true
	rd, err := h.s.Open(wctx, replicable, id, &waited)
	if err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return h.s.Open(ctx, replicable, id, &opts)
	}
	return rd, err
}

// content returns what http.ServeContent serves for rd: the local file; a
// read-through's stream, seekable only to where ServeContent seeks
// without a Range (its end, to learn the size, and back to its start); or,
// for a Range request reading through, the whole blob spooled to a
// temporary file and checked first.
func (h *readHandler) content(rd *BlobReader, r *http.Request) (io.ReadSeeker, func(), error) {
	if rd.local != nil {
		return rd.local, func() {}, nil
	}
	if r.Header.Get("Range") == "" || r.Method == http.MethodHead {
		return &streamSeeker{r: rd, size: rd.Size}, func() {}, nil
	}
	f, err := os.CreateTemp(h.cfg.SpoolDir, "geo-read-*")
	if err != nil {
		return nil, nil, fmt.Errorf("spool a read-through for a Range request: %w", err)
	}
	cleanup := func() {
		_ = f.Close()
		_ = os.Remove(f.Name())
	}
	if _, err := io.Copy(f, rd); err != nil {
		cleanup()
		return nil, nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		cleanup()
		return nil, nil, err
	}
	return f, cleanup, nil
}

// streamSeeker lets http.ServeContent serve a stream whole: it learns the
// size by seeking to the end and back to the start, which is all it does
// without a Range.
type streamSeeker struct {
	r    io.Reader
	size int64
	read bool
}

// errStreamSeek is returned for a seek a stream cannot do.
var errStreamSeek = errors.New("replicator: a read-through stream seeks only to its start or end before reading")

func (s *streamSeeker) Read(p []byte) (int, error) {
	s.read = true
	return s.r.Read(p)
}

func (s *streamSeeker) Seek(offset int64, whence int) (int64, error) {
	switch {
	case s.read || offset != 0:
		return 0, errStreamSeek
	case whence == io.SeekStart:
		return 0, nil
	case whence == io.SeekEnd:
		return s.size, nil
	}
	return 0, errStreamSeek
}

// readErrorStatus is the HTTP status for an error of Secondary.Open or of
// a read-through.
func readErrorStatus(err error) int {
	switch {
	case errors.Is(err, strategy.ErrUnknownReplicable), errors.Is(err, ErrUnsupportedKind),
		errors.Is(err, strategy.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, transfer.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	default:
		return http.StatusBadGateway
	}
}
