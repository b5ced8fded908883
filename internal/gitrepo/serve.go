package gitrepo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/cgi"
	"net/url"
	"regexp"
	"strings"
)

// DefaultMaxRequestBody bounds a request body (the client's wants, haves
// and commands) when ServerOptions.MaxRequestBody is 0. A fetch of a
// repository with a million refs sends about 50 MiB of wants.
const DefaultMaxRequestBody = 64 << 20

// ServerOptions configure NewServer. The zero value (or nil) means every
// default.
type ServerOptions struct {
	// MaxRequestBody bounds the body of an upload-pack request, in bytes:
	// one announced larger is refused with 413; one sent chunked (no
	// length) is cut there, and git then fails the request. 0 means
	// DefaultMaxRequestBody.
	MaxRequestBody int64
	// ErrorLog receives what git http-backend writes on its standard
	// error (the tail of it, one entry per request) and CGI errors. Nil
	// discards them; the response's status still says what failed.
	ErrorLog *log.Logger
}

// Server serves the repositories under one root, on the primary, one
// repository per request: the git smart HTTP protocol's upload-pack side
// (clone and fetch, protocol v0, v1 and v2) through git http-backend, and
// the repositories' checksums. It is safe for concurrent use.
//
// A Server does no authentication: the caller checks the request's
// credentials (the engine's per-record token), resolves the record to its
// repository path, and only then calls Serve with that path. The request's
// own URL never selects the repository; only its last segments select the
// protocol step.
type Server struct {
	git  *Git
	root string
	opts ServerOptions
}

// NewServer returns a Server for the repositories under root (which must
// exist; symbolic links in it are resolved once, here).
func NewServer(g *Git, root string, opts *ServerOptions) (*Server, error) {
	if g == nil {
		return nil, errors.New("gitrepo: NewServer: nil Git")
	}
	var o ServerOptions
	if opts != nil {
		o = *opts
	}
	if o.MaxRequestBody == 0 {
		o.MaxRequestBody = DefaultMaxRequestBody
	}
	if o.MaxRequestBody < 0 {
		return nil, fmt.Errorf("gitrepo: NewServer: ServerOptions.MaxRequestBody %d is negative", o.MaxRequestBody)
	}
	if o.ErrorLog == nil {
		o.ErrorLog = log.New(io.Discard, "", 0)
	}
	r, err := resolveRoot(root, false)
	if err != nil {
		return nil, fmt.Errorf("gitrepo: NewServer: root: %w", err)
	}
	return &Server{git: g, root: r, opts: o}, nil
}

// Root returns the server's root, absolute and with symbolic links
// resolved.
func (s *Server) Root() string { return s.root }

// Handler returns an http.Handler serving the repository at relPath (see
// Serve). The caller mounts it behind its own authentication, at any
// prefix.
func (s *Server) Handler(relPath string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.Serve(w, r, relPath) })
}

// The protocol steps Serve answers, chosen by the end of the request's
// path.
const (
	infoRefsSuffix   = "/info/refs"
	uploadPackSuffix = "/git-upload-pack"
	headSuffix       = "/HEAD"
	uploadPack       = "git-upload-pack"
)

// Serve answers one request of git's smart HTTP protocol for the
// repository at relPath under the root, which the caller has already
// authorized. The step is chosen by the end of r.URL.Path, whatever comes
// before it (the caller's prefix):
//
//   - GET .../info/refs?service=git-upload-pack: the ref advertisement
//     (protocol v2's capabilities when the client sends Git-Protocol:
//     version=2, passed to git as GIT_PROTOCOL);
//   - POST .../git-upload-pack: the negotiation and the pack;
//   - GET .../HEAD: the HEAD file (which branch is the default), read
//     without running git, for Store.Fetch.
//
// Anything naming receive-pack (push), in the path or the query, is
// refused with 403, whatever the method; dumb HTTP (info/refs without a
// service) with 403 too; other paths (objects, config, ...) with 404,
// wrong methods with 405. A relPath that breaks the key rule answers 500
// (the caller's bug, not the client's); one with no bare repository 404.
// Only the request's
// Content-Type, Content-Encoding and Git-Protocol headers reach git (never
// its Authorization or cookies), and git http-backend sees the repository
// itself as its project root, so no part of the request can make it open
// another repository.
func (s *Server) Serve(w http.ResponseWriter, r *http.Request, relPath string) {
	if mentionsReceivePack(r.URL) {
		http.Error(w, "gitrepo: push is not served", http.StatusForbidden)
		return
	}
	var pathInfo, query string
	switch p := r.URL.Path; {
	case strings.HasSuffix(p, infoRefsSuffix):
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, "gitrepo: method not allowed", http.StatusMethodNotAllowed)
			return
		}
		q := r.URL.Query()["service"]
		if len(q) != 1 || q[0] != uploadPack {
			http.Error(w, "gitrepo: only the smart protocol's git-upload-pack is served", http.StatusForbidden)
			return
		}
		pathInfo, query = infoRefsSuffix, "service="+uploadPack
	case strings.HasSuffix(p, uploadPackSuffix):
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "gitrepo: method not allowed", http.StatusMethodNotAllowed)
			return
		}
		pathInfo = uploadPackSuffix
	case strings.HasSuffix(p, headSuffix):
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, "gitrepo: method not allowed", http.StatusMethodNotAllowed)
			return
		}
		pathInfo = headSuffix
	default:
		http.NotFound(w, r)
		return
	}
	dir, err := within(s.root, relPath)
	if err != nil {
		s.opts.ErrorLog.Printf("gitrepo: serve: %v", err)
		http.Error(w, "gitrepo: invalid repository path", http.StatusInternalServerError)
		return
	}
	if err := bareRepository(dir); err != nil {
		if errors.Is(err, ErrNotRepository) {
			http.Error(w, "gitrepo: repository not found", http.StatusNotFound)
			return
		}
		s.opts.ErrorLog.Printf("gitrepo: serve: %v", err)
		http.Error(w, "gitrepo: repository unreadable", http.StatusInternalServerError)
		return
	}
	if pathInfo == headSuffix {
		s.serveHead(w, dir)
		return
	}
	s.serveCGI(w, r, dir, pathInfo, query)
}

// serveHead answers the repository's HEAD file, as the dumb protocol
// would, without running git: "ref: refs/heads/main\n", or an object id.
func (s *Server) serveHead(w http.ResponseWriter, dir string) {
	b, err := readHeadFile(dir)
	if err == nil {
		if _, ok := parseHead(b); !ok {
			err = errors.New("HEAD file holds neither a ref nor an object id")
		}
	}
	if err != nil {
		s.opts.ErrorLog.Printf("gitrepo: serve HEAD: %v", err)
		http.Error(w, "gitrepo: HEAD unreadable", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(b)
}

// mentionsReceivePack reports whether any segment of the path or any
// query value names receive-pack.
func mentionsReceivePack(u *url.URL) bool {
	if strings.Contains(strings.ToLower(u.Path), "receive-pack") {
		return true
	}
	raw, _ := url.QueryUnescape(u.RawQuery)
	return strings.Contains(strings.ToLower(raw+u.RawQuery), "receive-pack")
}

// gitProtocolRE matches the Git-Protocol values passed to git: colon
// separated key[=value] items of safe characters ("version=2").
var gitProtocolRE = regexp.MustCompile(`^[A-Za-z0-9._=:-]{1,256}$`)

// serveCGI runs git http-backend for the repository dir. It is separate
// from Serve's checks so tests can show that, even with a repository
// removed between the check and the run, git never opens a sibling.
func (s *Server) serveCGI(w http.ResponseWriter, r *http.Request, dir, pathInfo, query string) {
	body, n := r.Body, r.ContentLength
	switch {
	case n > s.opts.MaxRequestBody:
		http.Error(w, "gitrepo: request body too large", http.StatusRequestEntityTooLarge)
		return
	case n == 0 || body == nil:
		body, n = nil, 0
	case n < 0:
		// Chunked: no length for CGI, so none for git, which then reads
		// to the end of the body, cut at the limit.
		body = io.NopCloser(&limitedBody{r: r.Body, left: s.opts.MaxRequestBody})
	}
	// A request of our own: only the headers git needs, our path and query.
	cr := (&http.Request{
		Method:        r.Method,
		URL:           &url.URL{Path: pathInfo, RawQuery: query},
		Proto:         r.Proto,
		ProtoMajor:    r.ProtoMajor,
		ProtoMinor:    r.ProtoMinor,
		Header:        http.Header{},
		Body:          http.NoBody,
		ContentLength: n,
		Host:          r.Host,
		RemoteAddr:    r.RemoteAddr,
		TLS:           r.TLS,
	}).WithContext(r.Context())
	if body != nil {
		cr.Body = body // read by CGI when ContentLength != 0
	}
	for _, h := range []string{"Content-Type", "Content-Encoding"} {
		if v := r.Header.Get(h); v != "" {
			cr.Header.Set(h, v)
		}
	}
	vars := []string{
		// The repository itself is the project root, and "/." keeps every
		// name git http-backend's repository lookup tries (dir/.git, dir,
		// dir.git/.git, dir.git with the suffixes it appends) inside dir:
		// without it, a repository removed after Serve's check would make
		// git serve a sibling named dir.git.
		"GIT_PROJECT_ROOT=" + dir + "/.",
		"GIT_HTTP_EXPORT_ALL=1",
	}
	if v := r.Header.Get("Git-Protocol"); gitProtocolRE.MatchString(v) {
		vars = append(vars, "GIT_PROTOCOL="+v)
	}
	stderr := &tailBuffer{limit: s.git.stderrLimit}
	h := &cgi.Handler{
		Path: s.git.path,
		Args: []string{"http-backend"},
		Dir:  s.root, // git http-backend works from GIT_PROJECT_ROOT, not its cwd
		Env: s.git.gitEnv(cmd{env: vars, config: []ConfigEntry{
			{"http.receivepack", "false"},
			{"http.getanyfile", "false"},
			{"http.uploadpack", "true"},
		}}),
		Logger: s.opts.ErrorLog,
		Stderr: stderr,
	}
	h.ServeHTTP(w, cr)
	if msg := strings.TrimSpace(stderr.String()); msg != "" {
		s.opts.ErrorLog.Printf("gitrepo: git http-backend: %s", msg)
	}
}

// limitedBody reads at most left bytes of r, then fails.
type limitedBody struct {
	r    io.Reader
	left int64
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, errors.New("request body too large")
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// Checksum returns the refs checksum of the repository at relPath (see
// ChecksumRefs); the error wraps ErrInvalidPath or ErrNotRepository when
// there is no repository to checksum.
func (s *Server) Checksum(ctx context.Context, relPath string) (string, error) {
	dir, err := within(s.root, relPath)
	if err != nil {
		return "", fmt.Errorf("gitrepo: checksum: %w", err)
	}
	if err := bareRepository(dir); err != nil {
		return "", fmt.Errorf("gitrepo: checksum: %w", err)
	}
	return checksum(ctx, s.git, dir)
}
