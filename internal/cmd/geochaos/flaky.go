package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/blob/dirblob"
	"github.com/geoframework/geo/internal/xfer"
)

// Faults the proxy injects.
const (
	faultNone       = "none"
	fault5xx        = "5xx"
	faultReset      = "reset-mid-body"
	faultTruncate   = "truncated-body"
	faultTruncSize  = "truncated-body-consistent-size"
	faultFlip       = "flipped-byte"
	faultStallBody  = "stall-mid-body"
	faultStallHead  = "stall-before-headers"
	faultCLTooLarge = "content-length-too-large"
	faultCLTooSmall = "content-length-too-small"
)

var allFaults = []string{fault5xx, faultReset, faultTruncate, faultTruncSize, faultFlip, faultStallBody, faultStallHead, faultCLTooLarge, faultCLTooSmall}

// faultProxy sits between the secondary and the primary's transfer
// endpoint and breaks a share of the transfers, each in one of the ways
// a network or a sick primary does.
type faultProxy struct {
	upstream string
	client   *http.Client
	rate     float64       // share of requests that get a fault
	stall    time.Duration // longer than the secondary's transfer timeout

	mu       sync.Mutex
	r        *mrand.Rand
	attempts map[int64]int
	faultsOf map[int64]int
	faults   map[string]int
}

func newFaultProxy(upstream string, rate float64, stall time.Duration, seed uint64) *faultProxy {
	return &faultProxy{
		upstream: upstream, rate: rate, stall: stall,
		client:   &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}},
		r:        mrand.New(mrand.NewPCG(seed, 11)),
		attempts: map[int64]int{}, faultsOf: map[int64]int{}, faults: map[string]int{},
	}
}

func (p *faultProxy) pick(id int64) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.attempts[id]++
	f := faultNone
	if p.r.Float64() < p.rate {
		f = allFaults[p.r.IntN(len(allFaults))]
		p.faultsOf[id]++
	}
	p.faults[f]++
	return f
}

func (p *faultProxy) intn(n int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.r.IntN(n)
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, _ := strconv.ParseInt(r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:], 10, 64)
	fault := p.pick(id)
	switch fault {
	case fault5xx:
		codes := []int{http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable}
		http.Error(w, "injected fault", codes[p.intn(len(codes))])
		return
	case faultStallHead:
		select {
		case <-time.After(p.stall):
		case <-r.Context().Done():
		}
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, p.upstream+r.URL.RequestURI(), nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := p.client.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	h := w.Header()
	for k, v := range resp.Header {
		if k != "Content-Length" {
			h[k] = v
		}
	}
	if resp.StatusCode != http.StatusOK || len(body) < 2 {
		// Errors and tiny blobs pass unharmed.
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(resp.StatusCode)
		w.Write(body)
		return
	}
	half := 1 + p.intn(len(body)-1)
	switch fault {
	case faultReset:
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		w.Write(body[:half])
		rc := http.NewResponseController(w)
		rc.Flush()
		if conn, _, err := rc.Hijack(); err == nil {
			if tc, ok := conn.(*net.TCPConn); ok {
				tc.SetLinger(0) // RST, not FIN
			}
			conn.Close()
		}
	case faultTruncate:
		h.Set("Content-Length", strconv.Itoa(half))
		w.WriteHeader(http.StatusOK)
		w.Write(body[:half])
	case faultTruncSize:
		// Both sizes agree with the short body: only the checksum can tell.
		h.Set("Content-Length", strconv.Itoa(half))
		h.Set(xfer.HeaderSize, strconv.Itoa(half))
		w.WriteHeader(http.StatusOK)
		w.Write(body[:half])
	case faultFlip:
		b := append([]byte(nil), body...)
		b[p.intn(len(b))] ^= byte(1 + p.intn(255))
		h.Set("Content-Length", strconv.Itoa(len(b)))
		w.WriteHeader(http.StatusOK)
		w.Write(b)
	case faultStallBody:
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		w.Write(body[:half])
		http.NewResponseController(w).Flush()
		select {
		case <-time.After(p.stall):
		case <-r.Context().Done():
		}
	case faultCLTooLarge:
		h.Set("Content-Length", strconv.Itoa(len(body)+1+p.intn(1000)))
		w.WriteHeader(http.StatusOK)
		w.Write(body) // the server then closes the connection: a short body
	case faultCLTooSmall:
		h.Set("Content-Length", strconv.Itoa(half))
		w.WriteHeader(http.StatusOK)
		w.Write(body) // the server sends only Content-Length bytes
	default:
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		w.Write(body)
	}
}

// syncedChecker watches registry rows turn synced and checks each one's
// file against the bytes the primary application wrote at its key: a
// corrupted file marked synced is counted the moment it appears, not only
// at the end.
type syncedChecker struct {
	e       *env
	checked int
	bad     []string
	reasons map[string]int    // failure reasons seen on failed rows, by class
	samples map[string]string // one full reason per class
	seen    map[string]bool
	seenF   map[string]bool
	mark    time.Time
}

func newSyncedChecker(e *env) *syncedChecker {
	return &syncedChecker{e: e, reasons: map[string]int{}, samples: map[string]string{}, seen: map[string]bool{}, seenF: map[string]bool{}}
}

// run polls every 50ms until ctx ends, then once more (with its own
// deadline), so the settles that came just before the end are checked.
func (c *syncedChecker) run(ctx context.Context) error {
	sec, err := dirblob.Open(c.e.SecondaryRoot)
	if err != nil {
		return err
	}
	defer sec.Close()
	for ctx.Err() == nil {
		if err := c.poll(ctx, sec); err != nil && ctx.Err() == nil {
			return err
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	last, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return c.poll(last, sec)
}

// startChecker runs a syncedChecker of e in the background; stop ends it
// after its last pass and returns its error.
func startChecker(ctx context.Context, e *env) (c *syncedChecker, stop func() error) {
	c = newSyncedChecker(e)
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.run(cctx) }()
	var once sync.Once
	var err error
	return c, func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
}

func (c *syncedChecker) poll(ctx context.Context, sec *blob.Bucket) error {
	// Overlap the window by a few seconds: a settle's timestamp is taken
	// before its transaction commits.
	since := c.mark.Add(-5 * time.Second)
	rows, err := c.e.TrackingDB.QueryContext(ctx, `
SELECT model_id, state, coalesce(blob_key, ''), coalesce(last_synced_at, updated_at), coalesce(last_sync_failure, ''), retry_count
FROM geo_registry WHERE updated_at > $1 AND state IN (2, 3)`, since)
	if err != nil {
		return err
	}
	type rowT struct {
		id      int64
		state   int
		key     string
		at      time.Time
		failure string
		retries int
	}
	var list []rowT
	for rows.Next() {
		var r rowT
		if err := rows.Scan(&r.id, &r.state, &r.key, &r.at, &r.failure, &r.retries); err != nil {
			rows.Close()
			return err
		}
		list = append(list, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, r := range list {
		if r.at.After(c.mark) {
			c.mark = r.at
		}
		tag := fmt.Sprintf("%d@%d", r.id, r.at.UnixNano())
		if r.state == 3 {
			ftag := fmt.Sprintf("%d/%d/%s", r.id, r.retries, r.failure)
			if !c.seenF[ftag] {
				c.seenF[ftag] = true
				cls := classify(r.failure)
				c.reasons[cls]++
				if _, ok := c.samples[cls]; !ok {
					c.samples[cls] = fmt.Sprintf("retry_count=%d: %s", r.retries, r.failure)
				}
			}
			continue
		}
		if c.seen[tag] {
			continue
		}
		c.seen[tag] = true
		want, ok := c.e.contents.get(r.key)
		if !ok {
			c.bad = append(c.bad, fmt.Sprintf("%d: synced at unknown key %q", r.id, r.key))
			continue
		}
		got, _, err := shaOf(ctx, sec, r.key)
		if errors.Is(err, blob.ErrNotExist) {
			// Deleted since (a deleted event) or moved to a newer key: the
			// row must be gone or changed. A settle that moves a record
			// to a new key removes the old key's file under the row lock
			// before it commits, so for the length of that transaction
			// the row still names the old key: look again for a while
			// before calling it a violation.
			if c.stillSyncedAt(ctx, sec, r.id, r.key, 5*time.Second) {
				c.bad = append(c.bad, fmt.Sprintf("%d: synced but no file at %s", r.id, r.key))
			}
			continue
		}
		if err != nil {
			return err
		}
		c.checked++
		if got != want {
			c.bad = append(c.bad, fmt.Sprintf("%d: synced with sha %s, primary wrote %s at %s", r.id, got[:12], want[:12], r.key))
		}
	}
	return nil
}

// stillSyncedAt reports whether, for all of wait, record id's row stays
// synced at key while no file is there.
func (c *syncedChecker) stillSyncedAt(ctx context.Context, sec *blob.Bucket, id int64, key string, wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	for {
		var still int
		if err := c.e.TrackingDB.GetContext(ctx, &still, `SELECT count(*) FROM geo_registry WHERE replicable = $1 AND model_id = $2 AND state = 2 AND blob_key = $3`, typeName, id, key); err != nil {
			return false // the database's error is not a violation; the final comparison still runs
		}
		if still == 0 {
			return false
		}
		if _, _, err := shaOf(ctx, sec, key); !errors.Is(err, blob.ErrNotExist) {
			return false
		}
		if ctx.Err() != nil {
			return false // stopped before it could tell
		}
		if time.Now().After(deadline) {
			return true
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// classify names the kind of a failure reason shown to operators.
func classify(reason string) string {
	switch {
	case strings.Contains(reason, "checksum mismatch"):
		return "checksum-mismatch"
	case strings.Contains(reason, "size mismatch"):
		return "size-mismatch"
	case strings.Contains(reason, "stalled") || strings.Contains(reason, "timeout"):
		return "stalled"
	case strings.Contains(reason, "primary answered 5"):
		return "primary-5xx"
	case strings.Contains(reason, "reset") || strings.Contains(reason, "EOF"):
		return "connection-reset"
	case strings.Contains(reason, "ENOSPC") || strings.Contains(reason, "no space"):
		return "ENOSPC"
	case strings.Contains(reason, "input/output error") || strings.Contains(reason, "EIO"):
		return "EIO"
	case strings.Contains(reason, "connection refused"):
		return "connection-refused"
	}
	return "other"
}

func shaOf(ctx context.Context, s *blob.Bucket, key string) (string, int64, error) {
	r, err := s.Open(ctx, key)
	if err != nil {
		return "", 0, err
	}
	defer r.Close()
	return blob.SHA256Reader(ctx, r)
}

// runFlaky: a fault-injecting proxy between the secondary and the
// primary breaks a third of all transfers (5xx answers, connections reset
// mid-body, truncated bodies with and without a consistent size, flipped
// bytes, stalls past the transfer timeout before and after the headers,
// Content-Length too large and too small) while the primary keeps
// changing data. Every row that turns synced is checked against the
// primary's bytes as it appears; at the end, the exact comparison.
func runFlaky(ctx context.Context, o options) error {
	const name = "flaky-primary"
	n := o.size(o.n, 200, 2000)
	seedN := n * 3 / 5
	e, w, err := seededEnv(ctx, o, name, envConfig{}, seedN, false)
	if err != nil {
		return err
	}
	defer e.close()
	const timeout = time.Second
	proxy := newFaultProxy(e.PrimaryURL, 0.35, timeout+500*time.Millisecond, o.seed)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	psrv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}
	go psrv.Serve(ln)
	defer psrv.Close()

	storage, err := dirblob.Open(e.SecondaryRoot)
	if err != nil {
		return err
	}
	defer storage.Close()
	cfg := e.secondaryConfig(storage)
	cfg.PrimaryURL = "http://" + ln.Addr().String()
	cfg.TransferTimeout = timeout
	sec, err := startSecondary(cfg)
	if err != nil {
		return err
	}
	defer sec.stop()

	checker, stopCheck := startChecker(ctx, e)
	defer stopCheck()
	// Churn until the application has created the rest of the items.
	if err := w.churnUntilCreated(ctx, n-seedN, 3*time.Millisecond, false); err != nil {
		return err
	}
	o.logf(name, "application %s; waiting for convergence through the faults", w)
	d, took, cerr := e.waitConverged(ctx, o.timeout)
	if err := stopCheck(); err != nil { // its last pass covers the last settles
		return err
	}
	if err := sec.stop(); err != nil {
		return err
	}
	proxy.mu.Lock()
	var faultsPer, attemptsPer []int
	for id, a := range proxy.attempts {
		attemptsPer = append(attemptsPer, a)
		faultsPer = append(faultsPer, proxy.faultsOf[id])
	}
	faults := countReasons(proxy.faults)
	proxy.mu.Unlock()
	o.logf(name, "injected (per request): %s", faults)
	o.logf(name, "retries per record (failed transfers before the good one): %s", stats(faultsPer))
	o.logf(name, "transfers per record: %s", stats(attemptsPer))
	o.logf(name, "failure reasons recorded on rows: %s", countReasons(checker.reasons))
	for _, k := range sortedKeys(checker.samples) {
		o.logf(name, "  e.g. %s: %s", k, oneLine(checker.samples[k], 220))
	}
	o.logf(name, "synced transitions checked as they appeared: %d, corrupted marked synced: %d", checker.checked, len(checker.bad))
	if cerr != nil {
		summary(o.out, name, d, took)
		return cerr
	}
	if d, err = e.compare(ctx); err != nil {
		return err
	}
	serr := summary(o.out, name, d, took)
	if len(checker.bad) > 0 {
		return fmt.Errorf("%d corrupted or missing files were marked synced: %s", len(checker.bad), strings.Join(checker.bad[:min(5, len(checker.bad))], "; "))
	}
	return serr
}

// sortedKeys returns m's keys in order.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}
