package xfer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/replicator/transfer"
	"github.com/geoframework/geo/strategy"
)

// Downloader defaults.
const (
	ConcurrencyDefault = 64
	TimeoutDefault     = 30 * time.Second
	maxRedirects       = 10
)

// DownloaderConfig configures a Downloader. Only BaseURL and transfer.Credentials
// are required.
type DownloaderConfig struct {
	// BaseURL is the primary's transfer base URL, scheme and host and an
	// optional path prefix ("https://primary.example:8443"); requests go
	// to BaseURL + TransferPath(replicable, id). Required.
	BaseURL string
	// transfer.Credentials sign every request's token. Required.
	Credentials transfer.Credentials
	// Client sends the requests. nil means a client whose transport keeps
	// Concurrency idle connections to the primary (the default of 2 leaves
	// sockets in TIME_WAIT under load), waits at most Timeout for response
	// headers and does not ask for compression. The Downloader uses a
	// copy of Client whose CheckRedirect first removes the Authorization
	// header, then calls Client.CheckRedirect.
	Client *http.Client
	// Concurrency is how many downloads the caller runs at once, used to
	// size the default Client's connection pool. 0 means
	// ConcurrencyDefault.
	Concurrency int
	// Timeout bounds the wait for the response headers and for each read
	// of the body (an idle deadline re-armed on every read, so large
	// transfers are not cut short while bytes flow). 0 means
	// TimeoutDefault.
	Timeout time.Duration
	// Limiter, when set, limits the body bytes per second shared by all of
	// this Downloader's transfers (and by anything else sharing it): each
	// read of at most Limiter.Burst() bytes waits for its bytes. Its burst
	// must be at least 1 unless its limit is rate.Inf.
	Limiter *rate.Limiter
	// Now is the clock for signing tokens; nil means time.Now.
	Now func() time.Time
}

// Downloader fetches blobs from the primary's transfer endpoint into a
// Storage. It is safe for concurrent use.
type Downloader struct {
	base    string
	creds   transfer.Credentials
	client  *http.Client
	timeout time.Duration
	limiter *rate.Limiter
	now     func() time.Time
	bufs    sync.Pool // *[]byte of copyBufSize
}

// NewDownloader checks cfg and returns a Downloader. A bad field is an
// error naming it.
func NewDownloader(cfg DownloaderConfig) (*Downloader, error) {
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("transfer: NewDownloader: DownloaderConfig.BaseURL must be an http or https URL without query or fragment")
	}
	if err := cfg.Credentials.Validate(); err != nil {
		return nil, fmt.Errorf("transfer: NewDownloader: DownloaderConfig.%w", err)
	}
	if cfg.Concurrency < 0 || cfg.Timeout < 0 {
		return nil, errors.New("transfer: NewDownloader: DownloaderConfig.Concurrency and Timeout must not be negative")
	}
	if cfg.Limiter != nil && cfg.Limiter.Limit() != rate.Inf && cfg.Limiter.Burst() < 1 {
		return nil, errors.New("transfer: NewDownloader: DownloaderConfig.Limiter has a burst below 1")
	}
	d := &Downloader{
		base:    strings.TrimRight(u.String(), "/"),
		creds:   cfg.Credentials,
		timeout: cfg.Timeout,
		limiter: cfg.Limiter,
		now:     cfg.Now,
	}
	if d.timeout == 0 {
		d.timeout = TimeoutDefault
	}
	if d.now == nil {
		d.now = time.Now
	}
	conc := cfg.Concurrency
	if conc == 0 {
		conc = ConcurrencyDefault
	}
	var client http.Client
	if cfg.Client != nil {
		client = *cfg.Client
	} else {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConns = 2 * conc
		tr.MaxIdleConnsPerHost = conc
		tr.ResponseHeaderTimeout = d.timeout
		tr.DisableCompression = true
		client.Transport = tr
	}
	next := client.CheckRedirect
	client.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		req.Header.Del("Authorization")
		if next != nil {
			return next(req, via)
		}
		if len(via) >= maxRedirects {
			return fmt.Errorf("stopped after %d redirects", maxRedirects)
		}
		return nil
	}
	d.client = &client
	d.bufs.New = func() any { b := make([]byte, copyBufSize); return &b }
	return d, nil
}

// Result is the outcome of a successful Fetch.
type Result struct {
	// Writer holds the verified bytes, not yet committed: the caller must
	// call Commit or Abort exactly once. (Download has committed it.)
	Writer *blob.Writer
	// Size is the number of bytes received.
	Size int64
	// Checksum is the lowercase hex SHA-256 of the bytes received.
	Checksum string
	// PrimaryChecksum is what the primary announced in HeaderChecksum, or
	// "" when it did not know.
	PrimaryChecksum string
	// Duration is how long the transfer took.
	Duration time.Duration
}

// StatusError is a non-200 answer of the transfer endpoint. It unwraps to
// transfer.ErrUnauthorized (401), strategy.ErrUnknownReplicable, transfer.ErrRecordNotFound or
// transfer.ErrMissingOnPrimary (404 with the matching code), transfer.ErrPrimaryAdapter (500
// adapter_bad_key), or nothing.
type StatusError struct {
	StatusCode int
	Code       string // ErrorBody.Code, "" when the body was not one
	Message    string // ErrorBody.Message, at most 200 bytes
	err        error
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("primary answered %d", e.StatusCode)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.err == transfer.ErrPrimaryAdapter {
		// Say first, in the secondary's own words, what failed: this text
		// becomes the registry row's failure reason.
		return transfer.ErrPrimaryAdapter.Error() + " (" + s + ")"
	}
	// No package prefix: Fetch's error, which wraps this one, has it.
	return s
}

// Unwrap returns the sentinel the answer stands for, if any.
func (e *StatusError) Unwrap() error { return e.err }

func statusError(resp *http.Response) error {
	var body ErrorBody
	json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&body)
	e := &StatusError{StatusCode: resp.StatusCode, Code: body.Code, Message: body.Message}
	if len(e.Message) > 200 {
		e.Message = e.Message[:200]
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		e.err = transfer.ErrUnauthorized
	case resp.StatusCode == http.StatusNotFound && body.Code == CodeUnknownReplicable:
		e.err = strategy.ErrUnknownReplicable
	case resp.StatusCode == http.StatusNotFound && body.Code == CodeRecordNotFound:
		e.err = transfer.ErrRecordNotFound
	case resp.StatusCode == http.StatusNotFound && body.Code == CodeMissingOnPrimary:
		e.err = transfer.ErrMissingOnPrimary
	case resp.StatusCode == http.StatusInternalServerError && body.Code == CodeBadKey:
		e.err = transfer.ErrPrimaryAdapter
	}
	return e
}

// errStalled is the cancellation cause of a request whose idle timer
// fired.
var errStalled = errors.New("stalled")

// Fetch downloads record id of replicable into dst at key and verifies it,
// WITHOUT committing: on success the Result's Writer holds the bytes, their
// size equals the announced Content-Length and HeaderSize, and their
// SHA-256 equals the primary's HeaderChecksum and wantChecksum (lowercase
// hex), whichever are known ("" means unknown). The caller then calls
// Result.Writer.Commit (for example while holding its registry row lock)
// or Abort. ctx also governs the uncommitted Writer: cancelling it
// discards the bytes.
//
// On failure nothing is left in dst (the Writer is aborted) and the error
// matches ErrInvalidKey (key, the caller's, is invalid), transfer.ErrUnauthorized,
// strategy.ErrUnknownReplicable, transfer.ErrRecordNotFound, transfer.ErrMissingOnPrimary,
// transfer.ErrPrimaryAdapter (the primary's own key for the record is invalid),
// blob.ErrChecksumMismatch, transfer.ErrSizeMismatch, transfer.ErrTimeout or ctx's error, or wraps
// a transport error.
// Each request carries a fresh token; a redirect is followed without the
// Authorization header.
func (d *Downloader) Fetch(ctx context.Context, replicable string, id int64, dst *blob.Bucket, key, wantChecksum string) (Result, error) {
	fail := func(err error) (Result, error) {
		return Result{}, fmt.Errorf("transfer: fetch %s/%d: %w", replicable, id, err)
	}
	if err := strategy.ValidateKey(key); err != nil {
		return fail(err)
	}
	x, err := d.send(ctx, replicable, id, wantChecksum)
	if err != nil {
		return fail(err)
	}
	defer x.close()

	if served := x.resp.Header.Get(HeaderKey); served != "" && served != key {
		return fail(fmt.Errorf("%w: asked for %q, served from %q", transfer.ErrKeyChanged, key, served))
	}
	size := int64(0)
	if x.announced > 0 {
		size = x.announced
	}
	// The portable writer checks the bytes against the checksum known
	// before the transfer (ours, else the primary's announcement) at
	// Commit; the backend may have its service check it too.
	w, err := dst.Create(ctx, key, &blob.WriteOptions{SHA256: x.expect(), Size: size})
	if err != nil {
		return fail(err)
	}
	n, err := d.copy(ctx, w, x.resp.Body, x.announced, x.stall, func() { x.cancel(context.Canceled) })
	if err == nil && x.announced >= 0 && n != x.announced {
		err = fmt.Errorf("%w: received %d bytes, announced %d", transfer.ErrSizeMismatch, n, x.announced)
	}
	var sum string
	if err == nil {
		_, sum = w.Written()
		switch {
		case x.primary != "" && sum != x.primary:
			err = fmt.Errorf("%w: received %s, primary announced %s", blob.ErrChecksumMismatch, sum, x.primary)
		case x.want != "" && sum != x.want:
			err = fmt.Errorf("%w: received %s, want %s", blob.ErrChecksumMismatch, sum, x.want)
		}
	} else {
		err = x.transportErr(err)
	}
	if err == nil {
		// The bytes are checked: make them durable now, in this sync's
		// own time, so the Commit under the row lock only publishes.
		err = w.Sync(ctx)
	}
	if err != nil {
		w.Abort()
		return fail(err)
	}
	return Result{Writer: w, Size: n, Checksum: sum, PrimaryChecksum: x.primary, Duration: time.Since(x.start)}, nil
}

// exchange is one request to the transfer endpoint whose answer was a 200
// with well-formed headers: what Fetch and Stream share. close releases it.
type exchange struct {
	ctx    context.Context // the caller's
	resp   *http.Response
	cancel context.CancelCauseFunc
	rctx   context.Context
	// stall cancels rctx with errStalled when it fires; it is stopped
	// once the headers are in, and re-armed around each read of the body.
	stall   *time.Timer
	timeout time.Duration
	start   time.Time
	// want is the caller's expected checksum, primary the one the primary
	// announced (lowercase hex; "" when unknown).
	want, primary string
	// announced is the body's size from Content-Length and HeaderSize
	// (they agree), -1 when neither was sent.
	announced int64
}

// expect is the checksum the bytes must have: the caller's, else the
// primary's announcement ("" when neither is known).
func (x *exchange) expect() string {
	if x.want != "" {
		return x.want
	}
	return x.primary
}

func (x *exchange) close() {
	x.stall.Stop()
	x.resp.Body.Close()
	x.cancel(nil)
}

// transportErr says what a failed request or body read means: a stall
// (transfer.ErrTimeout), the caller's cancellation, a body that ended
// early (transfer.ErrSizeMismatch), or err itself.
func (x *exchange) transportErr(err error) error {
	switch {
	case context.Cause(x.rctx) == errStalled:
		return fmt.Errorf("%w after %v", transfer.ErrTimeout, x.timeout)
	case x.ctx.Err() != nil:
		return context.Cause(x.ctx)
	case isTimeout(err):
		// The client's own timeout (ResponseHeaderTimeout, which the
		// default client sets to the same Timeout) may fire before the
		// stall timer: the same stall, reported the same way.
		return fmt.Errorf("%w after %v: %w", transfer.ErrTimeout, x.timeout, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: body ended early: %w", transfer.ErrSizeMismatch, err)
	}
	return err
}

// send asks the transfer endpoint for record id of replicable, with a
// fresh token, sending wantChecksum (lowercase or upper-case hex, "" for
// none) so the primary need not look its checksum up. It returns the
// exchange of a 200 answer whose checksum and size headers are well
// formed and agree with wantChecksum and each other; otherwise an error
// (not wrapped with the record) matching the sentinels of Fetch.
func (d *Downloader) send(ctx context.Context, replicable string, id int64, wantChecksum string) (*exchange, error) {
	if err := strategy.ValidateName(replicable); err != nil {
		return nil, err
	}
	if id < 0 {
		return nil, errors.New("negative record id")
	}
	want := strings.ToLower(wantChecksum)
	if want != "" && !validChecksum(want) {
		return nil, errors.New("wantChecksum is not a hex SHA-256")
	}
	auth, err := Authorization(d.creds, replicable, id, d.now())
	if err != nil {
		return nil, err
	}

	x := &exchange{ctx: ctx, timeout: d.timeout, start: time.Now(), want: want}
	x.rctx, x.cancel = context.WithCancelCause(ctx)
	x.stall = time.AfterFunc(d.timeout, func() { x.cancel(errStalled) })
	ok := false
	defer func() {
		if !ok {
			x.stall.Stop()
			if x.resp != nil {
				x.resp.Body.Close()
			}
			x.cancel(nil)
		}
	}()
	req, err := http.NewRequestWithContext(x.rctx, http.MethodGet, d.base+TransferPath(replicable, id), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", auth)
	if want != "" {
		// The bytes are checked against want: the primary need not look
		// its checksum up or compute it.
		req.Header.Set(HeaderChecksum, want)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // its message quotes the URL only; keep it short
		}
		return nil, x.transportErr(err)
	}
	x.resp = resp
	x.stall.Stop()
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(resp)
	}
	x.primary = strings.ToLower(resp.Header.Get(HeaderChecksum))
	if x.primary != "" && !validChecksum(x.primary) {
		return nil, fmt.Errorf("primary sent a malformed %s header", HeaderChecksum)
	}
	if want != "" && x.primary != "" && want != x.primary {
		return nil, fmt.Errorf("%w: primary announces %s, want %s", blob.ErrChecksumMismatch, x.primary, want)
	}
	x.announced = resp.ContentLength
	if s := resp.Header.Get(HeaderSize); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("primary sent a malformed %s header", HeaderSize)
		}
		if x.announced >= 0 && n != x.announced {
			return nil, fmt.Errorf("%w: Content-Length %d, %s %d", transfer.ErrSizeMismatch, x.announced, HeaderSize, n)
		}
		x.announced = n
	}
	ok = true
	return x, nil
}

// isTimeout reports whether err is a network timeout (a net.Error whose
// Timeout is true), such as the transport's response header timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// copy streams body into w, re-arming the idle timer around each read and
// waiting on the limiter for each chunk. Bodies larger than one buffer (or
// of unknown size) are read in their own goroutine into pooled 1 MiB
// buffers while this one writes and hashes the previous chunk: on two
// cores that overlap is worth about 20% (DESIGN §11). abort unblocks a
// read in flight.
func (d *Downloader) copy(ctx context.Context, w io.Writer, body io.Reader, size int64, stall *time.Timer, abort func()) (int64, error) {
	chunk := copyBufSize
	if d.limiter != nil && d.limiter.Limit() != rate.Inf {
		chunk = min(chunk, d.limiter.Burst())
	}
	read := func(buf []byte) (int, error) {
		stall.Reset(d.timeout)
		m, err := body.Read(buf)
		stall.Stop()
		if m > 0 && d.limiter != nil {
			if werr := d.limiter.WaitN(ctx, m); werr != nil {
				return m, werr
			}
		}
		return m, err
	}
	if size >= 0 && size < int64(chunk) {
		// Small: one goroutine, a buffer just big enough to see EOF.
		buf := make([]byte, size+1)
		var n int64
		for {
			m, rerr := read(buf)
			if m > 0 {
				if _, err := w.Write(buf[:m]); err != nil {
					return n, err
				}
				n += int64(m)
			}
			if rerr == io.EOF {
				return n, nil
			}
			if rerr != nil {
				return n, rerr
			}
		}
	}

	type filled struct {
		buf *[]byte
		n   int
		err error
	}
	const nbufs = 3
	free := make(chan *[]byte, nbufs)
	full := make(chan filled, nbufs)
	for range nbufs {
		free <- d.bufs.Get().(*[]byte)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			var bp *[]byte
			select {
			case bp = <-free:
			case <-done:
				return
			}
			m, err := read((*bp)[:chunk])
			full <- filled{bp, m, err} // never blocks: at most nbufs in flight
			if err != nil {
				return
			}
		}
	})
	var n int64
	var err error
	for err == nil {
		f := <-full
		if f.n > 0 {
			m, werr := w.Write((*f.buf)[:f.n])
			n += int64(m)
			err = werr
		}
		free <- f.buf
		if err == nil && f.err != nil {
			if f.err != io.EOF {
				err = f.err
			}
			break
		}
	}
	close(done)
	if err != nil {
		abort()
	}
	wg.Wait()
	close(free)
	for bp := range free {
		d.bufs.Put(bp)
	}
	close(full)
	for f := range full {
		d.bufs.Put(f.buf)
	}
	return n, err
}

// Download is Fetch followed by Commit: on success the bytes are durable
// at key and Result.Writer is already committed. For tools, tests and
// benchmarks; the sync engine uses Fetch to commit under its row lock.
func (d *Downloader) Download(ctx context.Context, replicable string, id int64, dst *blob.Bucket, key, wantChecksum string) (Result, error) {
	res, err := d.Fetch(ctx, replicable, id, dst, key, wantChecksum)
	if err != nil {
		return Result{}, err
	}
	if err := res.Writer.Commit(ctx); err != nil {
		return Result{}, fmt.Errorf("transfer: download %s/%d: %w", replicable, id, err)
	}
	return res, nil
}
