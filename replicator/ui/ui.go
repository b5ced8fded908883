// Package ui is geo's web status page: an http.Handler ([Handler], built by
// [New]) a host application mounts on its own mux, on a secondary site or
// on the primary.
//
// On a secondary ([Config].Tracking) it shows, per type, the registry's rows
// by state as progress bars (synced, verified, failed, pending, missing on
// primary), the backfill's progress and ETA and whether the type is
// paused; the event consumer's lag; the secondary processes with their
// heartbeats; the most frequent failure reasons, each a link to its
// records; and each record's detail. With Config.Primary (a read-only
// handle to the primary's database, or on the primary site alone) it also
// shows the primary's checksum progress and failures.
//
// Operators act from it: resync or reverify one record, a type's failed
// rows or all of them; pause and resume a type. Actions are POSTs checked
// against cross-site requests (a CSRF token bound to a cookie, and
// net/http's CrossOriginProtection) and authorised by Config.Authorize, a
// hook of the host: the package has no user store. New refuses a handler
// that could act without that hook, unless Config.ReadOnly says it shows
// only.
//
// Pages are server-rendered (html/template, embedded assets, no
// JavaScript build step, nothing loaded from elsewhere) and readable
// without JavaScript; a small embedded script refreshes their live part
// every Config.RefreshInterval. The handler also serves /healthz, /readyz
// (databases reachable, the event consumer running, its lag under
// Config.ReadyMaxEventLag; controller-runtime's healthz is the model) and
// /status.json, the JSON of `geoctl status -o json`.
//
// It reads only what the databases hold (replicator.ReadStatus and the
// public registry reads), so it needs no running secondary in its
// process: `geoctl ui` serves it against a tracking database alone.
// Reading is not authorised here: put the host's authentication in front
// of the whole handler. See [Operating geo], "The web status page".
//
// [Operating geo]: https://github.com/geoframework/geo/blob/main/docs/operations.md
package ui

import (
	"crypto/rand"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"time"

	"github.com/jmoiron/sqlx"
	"go.uber.org/zap"

	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
)

// Defaults and bounds of Config.
const (
	// RefreshIntervalDefault is Config.RefreshInterval's default.
	RefreshIntervalDefault = 5 * time.Second
	// RefreshIntervalMin is the shortest RefreshInterval accepted.
	RefreshIntervalMin = 100 * time.Millisecond
	// PageSizeDefault is Config.PageSize's default.
	PageSizeDefault = 50
	// PageSizeMax is the largest PageSize accepted.
	PageSizeMax = 1000
	// ReadyMaxEventLagDefault is Config.ReadyMaxEventLag's default: the
	// lag past which a status report is unhealthy.
	ReadyMaxEventLagDefault = replicator.StatusMaxEventLagDefault
	// QueryTimeoutDefault is Config.QueryTimeout's default.
	QueryTimeoutDefault = 10 * time.Second
	// BatchTimeoutDefault is Config.BatchTimeout's default, as geoctl's
	// --timeout.
	BatchTimeoutDefault = 30 * time.Second
	// CSRFKeyLen is the length of a random Config.CSRFKey, and the least
	// accepted.
	CSRFKeyLen = 32
	// TitleDefault is Config.Title's default.
	TitleDefault = "geo"
)

// ErrNoAuthorize is returned (wrapped) by New for a configuration that
// could run actions (Tracking set) with neither Authorize nor ReadOnly.
var ErrNoAuthorize = errors.New("actions need an Authorize hook, or set ReadOnly")

// ErrNoDatabase is returned (wrapped) by New when neither Tracking nor
// Primary is set.
var ErrNoDatabase = errors.New("no database: set Tracking, Primary or both")

// Waker is told that rows changed, so engines running in this process
// start on them at once rather than at their next poll. A
// *replicator.Secondary is one.
type Waker interface{ Wake() }

// Config configures the status page. Tracking or Primary is required;
// every other field has the default its doc names when zero.
type Config struct {
	// Tracking is a secondary's tracking database, migrated with
	// registry.MigrateTracking: the page shows its status and runs the
	// actions on it. Nil on the primary site.
	Tracking *sqlx.DB
	// Primary is a read-only handle to the primary's database (on a
	// secondary, its streaming replica): the page shows the primary's
	// checksum progress and failures from it, and the event lag is
	// measured there (see Status). geo never writes there. On the primary
	// site, set it alone.
	Primary *sqlx.DB
	// Types lists types to show even before they have rows; nil means the
	// types the tracking database knows (registry.Store.Types).
	Types []string

	// ReadOnly makes the page show only: no action is offered and every
	// POST is refused (403 Forbidden).
	ReadOnly bool
	// Authorize decides whether a request may run an action; it must be
	// fast and safe for concurrent use. It is asked for every POST (false
	// answers 403 Forbidden) and for every page, to show the actions only
	// to those who may use them. Required when the page has actions (a
	// Tracking database and not ReadOnly): New returns an error matching
	// ErrNoAuthorize without it. It does not guard reading: wrap the
	// whole handler in the host's authentication for that.
	Authorize func(*http.Request) bool
	// Waker, when set, is woken after an action changed rows (a
	// *replicator.Secondary running in this process); nil means the
	// engines see the change at their next poll.
	Waker Waker

	// Status tunes the status report (see replicator.StatusOptions and its
	// defaults). When its Primary is nil, Config.Primary is used: the
	// event lag is then measured there rather than taken from the
	// consumer's heartbeat.
	Status replicator.StatusOptions
	// RefreshInterval is how often the page's script refreshes the live
	// part of the page; 0 means RefreshIntervalDefault, and less than
	// RefreshIntervalMin is an error.
	RefreshInterval time.Duration
	// PageSize is how many rows a list of failures shows per page; 0
	// means PageSizeDefault; at most PageSizeMax.
	PageSize int
	// ReadyMaxEventLag is the event lag above which /readyz fails; 0
	// means ReadyMaxEventLagDefault.
	ReadyMaxEventLag time.Duration
	// QueryTimeout bounds the database reads of one page, one status
	// report or one readiness check; 0 means QueryTimeoutDefault.
	QueryTimeout time.Duration
	// BatchTimeout bounds each batch of an action on a type's failed or
	// all rows (registry.BatchOptions.BatchTimeout); the walk itself is
	// bounded only by the request. 0 means BatchTimeoutDefault.
	BatchTimeout time.Duration
	// CSRFKey signs the CSRF tokens, at least CSRFKeyLen bytes; nil means
	// a random key of CSRFKeyLen bytes per handler. Handlers serving one
	// site behind a load balancer need the same key.
	CSRFKey []byte
	// Title names the site in the page's heading and title; "" means
	// TitleDefault.
	Title string
	// Logger receives one line per action and the errors the page shows;
	// nil means none.
	Logger *zap.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Handler serves the status page, its actions, /healthz, /readyz and
// /status.json. Mount it under a prefix with http.StripPrefix (its links
// are relative): mux.Handle("/geo/", http.StripPrefix("/geo", h)). It is
// safe for concurrent use.
type Handler struct {
	cfg       Config
	store     *registry.Store     // nil without Tracking
	checksums *registry.Checksums // nil without Primary
	actions   bool
	csrf      csrf
	origin    *http.CrossOriginProtection
	pages     map[string]*template.Template
	static    http.Handler
	mux       *http.ServeMux
	log       *zap.Logger
}

// New validates cfg (a bad field is an error naming it), applies the
// defaults and builds the handler. It touches no database.
func New(cfg Config) (*Handler, error) {
	if cfg.Tracking == nil && cfg.Primary == nil {
		return nil, fmt.Errorf("ui: Config: %w", ErrNoDatabase)
	}
	actions := cfg.Tracking != nil && !cfg.ReadOnly
	if actions && cfg.Authorize == nil {
		return nil, fmt.Errorf("ui: Config.Authorize: %w", ErrNoAuthorize)
	}
	if err := applyDefaults(&cfg); err != nil {
		return nil, err
	}
	h := &Handler{cfg: cfg, actions: actions, origin: http.NewCrossOriginProtection(), log: cfg.Logger}
	if h.log == nil {
		h.log = zap.NewNop()
	}
	key := cfg.CSRFKey
	if key == nil {
		key = make([]byte, CSRFKeyLen)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("ui: CSRF key: %w", err)
		}
	}
	h.csrf = csrf{key: append([]byte(nil), key...)}
	var err error
	if cfg.Tracking != nil {
		if h.store, err = registry.NewStore(cfg.Tracking, registry.Options{Now: cfg.Now}); err != nil {
			return nil, fmt.Errorf("ui: %w", err)
		}
	}
	if cfg.Primary != nil {
		if h.checksums, err = registry.NewChecksums(cfg.Primary); err != nil {
			return nil, fmt.Errorf("ui: %w", err)
		}
	}
	if h.pages, err = parsePages(); err != nil {
		return nil, fmt.Errorf("ui: templates: %w", err)
	}
	static, err := fs.Sub(assets, "static")
	if err != nil {
		return nil, fmt.Errorf("ui: assets: %w", err)
	}
	h.static = http.StripPrefix("/static/", staticHandler(static))
	h.routes()
	return h, nil
}

func applyDefaults(cfg *Config) error {
	switch {
	case cfg.RefreshInterval == 0:
		cfg.RefreshInterval = RefreshIntervalDefault
	case cfg.RefreshInterval < RefreshIntervalMin:
		return fmt.Errorf("ui: Config.RefreshInterval %v: want at least %v", cfg.RefreshInterval, RefreshIntervalMin)
	}
	switch {
	case cfg.PageSize == 0:
		cfg.PageSize = PageSizeDefault
	case cfg.PageSize < 0 || cfg.PageSize > PageSizeMax:
		return fmt.Errorf("ui: Config.PageSize %d: want 1 to %d", cfg.PageSize, PageSizeMax)
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"ReadyMaxEventLag", &cfg.ReadyMaxEventLag, ReadyMaxEventLagDefault},
		{"QueryTimeout", &cfg.QueryTimeout, QueryTimeoutDefault},
		{"BatchTimeout", &cfg.BatchTimeout, BatchTimeoutDefault},
	} {
		if *d.v < 0 {
			return fmt.Errorf("ui: Config.%s %v: want > 0 (0 means %v)", d.name, *d.v, d.def)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if cfg.CSRFKey != nil && len(cfg.CSRFKey) < CSRFKeyLen {
		return fmt.Errorf("ui: Config.CSRFKey: %d bytes, want at least %d", len(cfg.CSRFKey), CSRFKeyLen)
	}
	if cfg.Title == "" {
		cfg.Title = TitleDefault
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Status.Primary == nil {
		cfg.Status.Primary = cfg.Primary
	}
	if cfg.Status.Now == nil {
		cfg.Status.Now = cfg.Now
	}
	if cfg.Status.FailureSample <= 0 {
		cfg.Status.FailureSample = replicator.StatusFailureSampleDefault
	}
	cfg.Types = append([]string(nil), cfg.Types...)
	return nil
}

func (h *Handler) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", h.overview)
	m.HandleFunc("POST /{$}", h.typeAction)
	m.HandleFunc("GET /failures", h.failures)
	m.HandleFunc("GET /record", h.lookup)
	m.HandleFunc("GET /records/{type}/{id}", h.record)
	m.HandleFunc("POST /records/{type}/{id}", h.recordAction)
	m.HandleFunc("GET /checksums/failures", h.checksumFailures)
	m.Handle("GET /static/", h.static)
	m.HandleFunc("GET /healthz", h.healthz)
	m.HandleFunc("GET /readyz", h.readyz)
	m.HandleFunc("GET /readyz/{check}", h.readyz)
	m.HandleFunc("GET /status.json", h.statusJSON)
	h.mux = m
}

// ServeHTTP serves the page at the handler's root, its sub-pages and
// assets, and the health endpoints; see Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	// Everything the page loads is its own; it may not be framed (its
	// buttons act), and its URLs carry no secret but say nothing outside.
	hdr.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Referrer-Policy", "same-origin")
	h.mux.ServeHTTP(w, r)
}
