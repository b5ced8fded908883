package s3test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Fault is what a FaultProxy does to one request.
type Fault int

const (
	// Pass forwards the request and its answer unchanged.
	Pass Fault = iota
	// ServerError answers 503 SlowDown (S3's throttling answer) without
	// forwarding the request: the SDK retries it.
	ServerError
	// ResetBefore resets the client's connection (TCP RST) without
	// forwarding the request.
	ResetBefore
	// ResetAfter forwards the request, lets the server act on it and read
	// its whole answer, then resets the client's connection instead of
	// answering: the request took effect but the client cannot know.
	ResetAfter
	// TruncateRequest forwards only the first half of the request body,
	// then breaks the connection to the server, and resets the client's.
	TruncateRequest
	// TruncateResponse forwards the request, then sends the client the
	// answer's headers and only half of its body, and breaks the
	// connection.
	TruncateResponse
	// Stall holds the request for FaultProxyOptions.Stall (or until the
	// client gives up), then forwards it.
	Stall
	// SlowUpload forwards the request body at FaultProxyOptions.SlowRate
	// bytes per second.
	SlowUpload
)

// String returns the fault's name.
func (f Fault) String() string {
	switch f {
	case Pass:
		return "pass"
	case ServerError:
		return "server-error"
	case ResetBefore:
		return "reset-before"
	case ResetAfter:
		return "reset-after"
	case TruncateRequest:
		return "truncate-request"
	case TruncateResponse:
		return "truncate-response"
	case Stall:
		return "stall"
	case SlowUpload:
		return "slow-upload"
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

// Faults returns every fault but Pass (a fresh slice on each call).
func Faults() []Fault {
	return []Fault{ServerError, ResetBefore, ResetAfter, TruncateRequest, TruncateResponse, Stall, SlowUpload}
}

// Policy decides the fault for each request. It is called concurrently.
type Policy func(r *http.Request) Fault

// Always injects f into every request that match accepts (every request
// when match is nil).
func Always(f Fault, match func(*http.Request) bool) Policy {
	return func(r *http.Request) Fault {
		if match == nil || match(r) {
			return f
		}
		return Pass
	}
}

// FirstN injects f into the first n requests that match accepts (every
// request when match is nil), then passes everything.
func FirstN(n int, f Fault, match func(*http.Request) bool) Policy {
	var mu sync.Mutex
	return func(r *http.Request) Fault {
		if match != nil && !match(r) {
			return Pass
		}
		mu.Lock()
		defer mu.Unlock()
		if n <= 0 {
			return Pass
		}
		n--
		return f
	}
}

// Random injects one of faults, chosen at random, into each request that
// match accepts (every request when match is nil) with probability p.
func Random(p float64, faults []Fault, match func(*http.Request) bool) Policy {
	return func(r *http.Request) Fault {
		if len(faults) == 0 || (match != nil && !match(r)) || rand.Float64() >= p {
			return Pass
		}
		return faults[rand.IntN(len(faults))]
	}
}

// Op names requests the S3 API way.
type Op string

// The S3 operations Operation tells apart.
const (
	OpPutObject               Op = "PutObject"
	OpCreateMultipartUpload   Op = "CreateMultipartUpload"
	OpUploadPart              Op = "UploadPart"
	OpCompleteMultipartUpload Op = "CompleteMultipartUpload"
	OpAbortMultipartUpload    Op = "AbortMultipartUpload"
	OpGetObject               Op = "GetObject"
	OpHeadObject              Op = "HeadObject"
	OpDeleteObject            Op = "DeleteObject"
	OpDeleteObjects           Op = "DeleteObjects"
	OpListObjects             Op = "ListObjects"
	OpOther                   Op = "Other"
)

// Operation returns the S3 operation of a path-style request.
func Operation(r *http.Request) Op {
	q := r.URL.Query()
	path := strings.TrimPrefix(r.URL.Path, "/")
	object := strings.Contains(path, "/") // bucket/key, not bucket alone
	switch {
	case !object && r.Method == http.MethodGet && (q.Has("list-type") || len(q) == 0 || q.Has("prefix")):
		return OpListObjects
	case !object && r.Method == http.MethodPost && q.Has("delete"):
		return OpDeleteObjects
	case !object:
		return OpOther
	case r.Method == http.MethodPut && q.Has("partNumber") && q.Has("uploadId"):
		return OpUploadPart
	case r.Method == http.MethodPut:
		return OpPutObject
	case r.Method == http.MethodPost && q.Has("uploads"):
		return OpCreateMultipartUpload
	case r.Method == http.MethodPost && q.Has("uploadId"):
		return OpCompleteMultipartUpload
	case r.Method == http.MethodDelete && q.Has("uploadId"):
		return OpAbortMultipartUpload
	case r.Method == http.MethodDelete:
		return OpDeleteObject
	case r.Method == http.MethodGet:
		return OpGetObject
	case r.Method == http.MethodHead:
		return OpHeadObject
	}
	return OpOther
}

// OnOps matches the requests of the given operations.
func OnOps(ops ...Op) func(*http.Request) bool {
	return func(r *http.Request) bool {
		op := Operation(r)
		for _, o := range ops {
			if o == op {
				return true
			}
		}
		return false
	}
}

// Writes matches the requests that write an object (PutObject and the
// multipart operations but Abort).
func Writes() func(*http.Request) bool {
	return OnOps(OpPutObject, OpCreateMultipartUpload, OpUploadPart, OpCompleteMultipartUpload)
}

// FaultProxyOptions tune a FaultProxy. The zero value uses the defaults.
type FaultProxyOptions struct {
	// Stall is how long Stall holds a request; 0 means DefaultStall.
	Stall time.Duration
	// SlowRate is SlowUpload's rate in bytes per second, for each request
	// on its own; 0 means DefaultSlowRate.
	SlowRate int
}

const (
	// DefaultStall is how long Stall holds a request by default: longer
	// than a test's patience for one request, shorter than its watchdog.
	DefaultStall = 2 * time.Second
	// DefaultSlowRate is SlowUpload's default rate: 1 MiB/s.
	DefaultSlowRate = 1 << 20
)

// FaultProxy is an HTTP proxy on a loopback port in front of an S3 server
// (any HTTP server) that injects faults chosen by its Policy: 5xx answers,
// connection resets before and after the server acted, truncated request
// and response bodies, stalls and slow uploads. Clients use URL() as their
// endpoint, path-style; the Host header is forwarded unchanged, so SigV4
// signatures stay valid for servers that do not route by Host (versitygw,
// MinIO; not AWS itself).
//
// It is for tests and chaos runs (geochaos). Its methods are safe for
// concurrent use.
type FaultProxy struct {
	upstream *url.URL
	opts     FaultProxyOptions
	ln       net.Listener
	srv      *http.Server
	rp       *httputil.ReverseProxy
	tr       *http.Transport

	mu       sync.Mutex
	policy   Policy
	injected map[Fault]int
	requests map[Op]int
}

// NewFaultProxy starts a FaultProxy in front of upstream (an http:// URL)
// that passes everything until SetPolicy. Close it when done.
func NewFaultProxy(upstream string, opts FaultProxyOptions) (*FaultProxy, error) {
	u, err := url.Parse(upstream)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("s3test: fault proxy: upstream %q is not a URL", upstream)
	}
	if opts.Stall == 0 {
		opts.Stall = DefaultStall
	}
	if opts.SlowRate == 0 {
		opts.SlowRate = DefaultSlowRate
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("s3test: fault proxy: %w", err)
	}
	p := &FaultProxy{
		upstream: u, opts: opts, ln: ln,
		tr:       &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true},
		injected: map[Fault]int{},
		requests: map[Op]int{},
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = u.Scheme, u.Host
			pr.Out.Host = pr.In.Host // signed by the client
		},
		Transport:    p.tr,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) { reset(w) },
	}
	p.srv = &http.Server{Handler: http.HandlerFunc(p.serve), ReadHeaderTimeout: time.Minute}
	go p.srv.Serve(ln)
	return p, nil
}

// URL is the proxy's endpoint, http://127.0.0.1:PORT.
func (p *FaultProxy) URL() string { return "http://" + p.ln.Addr().String() }

// SetPolicy sets the policy for the requests that follow (nil passes
// everything).
func (p *FaultProxy) SetPolicy(policy Policy) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.policy = policy
}

// Injected returns how many requests got each fault so far (Pass
// included).
func (p *FaultProxy) Injected() map[Fault]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[Fault]int, len(p.injected))
	for k, v := range p.injected {
		m[k] = v
	}
	return m
}

// Requests returns how many requests of each operation the proxy saw.
func (p *FaultProxy) Requests() map[Op]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[Op]int, len(p.requests))
	for k, v := range p.requests {
		m[k] = v
	}
	return m
}

// Close stops the proxy and breaks the connections it holds.
func (p *FaultProxy) Close() error {
	err := p.srv.Close()
	p.tr.CloseIdleConnections()
	return err
}

// errTruncated ends a truncated request body.
var errTruncated = errors.New("s3test: fault proxy truncated the request body")

func (p *FaultProxy) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	policy := p.policy
	p.mu.Unlock()
	f := Pass
	if policy != nil {
		f = policy(r)
	}
	p.mu.Lock()
	p.injected[f]++
	p.requests[Operation(r)]++
	p.mu.Unlock()
	switch f {
	case ServerError:
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>injected by s3test.FaultProxy</Message></Error>`)
	case ResetBefore:
		reset(w)
	case ResetAfter:
		if resp, err := p.forward(r, r.Body); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		reset(w)
	case TruncateRequest:
		half := max(r.ContentLength/2, 0)
		body := io.MultiReader(io.LimitReader(r.Body, half), errReader{errTruncated})
		if resp, err := p.forward(r, body); err == nil {
			resp.Body.Close()
		}
		reset(w)
	case TruncateResponse:
		resp, err := p.forward(r, r.Body)
		if err != nil {
			reset(w)
			return
		}
		defer resp.Body.Close()
		for k, vs := range resp.Header {
			w.Header()[k] = vs
		}
		w.WriteHeader(resp.StatusCode)
		n := resp.ContentLength / 2
		if n <= 0 {
			n = 0
		}
		io.CopyN(w, resp.Body, n)
		http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler) // breaks the connection: the body ends short
	case Stall:
		t := time.NewTimer(p.opts.Stall)
		defer t.Stop()
		select {
		case <-t.C:
			p.rp.ServeHTTP(w, r)
		case <-r.Context().Done():
		}
	case SlowUpload:
		r2 := r.Clone(r.Context())
		r2.Body = &slowReader{ctx: r.Context(), r: r.Body, l: rate.NewLimiter(rate.Limit(p.opts.SlowRate), max(p.opts.SlowRate/10, 1))}
		p.rp.ServeHTTP(w, r2)
	default:
		p.rp.ServeHTTP(w, r)
	}
}

// forward sends r, with body, to the upstream and returns its answer.
func (p *FaultProxy) forward(r *http.Request, body io.Reader) (*http.Response, error) {
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = p.upstream.Scheme, p.upstream.Host
	out.Host = r.Host
	out.Body = io.NopCloser(body)
	if r.ContentLength == 0 {
		out.Body = http.NoBody
	}
	out.Header.Del("Connection")
	return p.tr.RoundTrip(out)
}

// reset resets the client's connection (TCP RST, not a clean close).
func reset(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

// errReader fails every read with err.
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// slowReader reads r no faster than l allows.
type slowReader struct {
	ctx context.Context
	r   io.ReadCloser
	l   *rate.Limiter
}

func (s *slowReader) Read(p []byte) (int, error) {
	if len(p) > s.l.Burst() {
		p = p[:s.l.Burst()]
	}
	n, err := s.r.Read(p)
	if n > 0 {
		if werr := s.l.WaitN(s.ctx, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}

func (s *slowReader) Close() error { return s.r.Close() }
