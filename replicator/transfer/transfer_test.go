package transfer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/blob/dirblob"
	"github.com/geoframework/geo/blob/driver"
	"github.com/geoframework/geo/blob/storagetest"
	"github.com/geoframework/geo/replicator/transfer"
	"github.com/geoframework/geo/strategy"
)

func TestDownloadRoundTrip(t *testing.T) {
	p := newPrimary(t)
	sec := newDir(t)
	d := p.downloader(t, nil)
	for i, size := range []int{0, 1, 4096, 1<<20 + 3} {
		id := int64(i + 1)
		data := randBytes(size)
		sum := p.add(id, data)
		key := fmt.Sprintf("copies/%d.bin", id)
		res, err := d.Download(t.Context(), testReplicable, id, sec, key, sum)
		if err != nil {
			t.Fatalf("Download %d bytes: %v", size, err)
		}
		if res.Size != int64(size) || res.Checksum != sum || res.PrimaryChecksum != sum || res.Duration <= 0 {
			t.Errorf("Result = %+v, want size %d, checksum and primary checksum %s", res, size, sum)
		}
		if got := readAll(t, sec, key); sha(got) != sum {
			t.Errorf("stored %d bytes with sha %s, want %d bytes %s", len(got), sha(got), size, sum)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.observed) != 4 || p.observed[3] != 1<<20+3 {
		t.Errorf("Observe saw byte counts %v, want 4 transfers ending with %d", p.observed, 1<<20+3)
	}
}

func TestFetchDoesNotCommit(t *testing.T) {
	p := newPrimary(t)
	sec := newDir(t)
	d := p.downloader(t, nil)
	data := randBytes(10_000)
	p.add(1, data)
	res, err := d.Fetch(t.Context(), testReplicable, 1, sec, "k", "")
	if err != nil {
		t.Fatal(err)
	}
	wantNothingAt(t, sec, "k")
	if err := res.Writer.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, sec, "k"); sha(got) != sha(data) {
		t.Errorf("committed bytes differ")
	}

	res, err = d.Fetch(t.Context(), testReplicable, 1, sec, "aborted", "")
	if err != nil {
		t.Fatal(err)
	}
	res.Writer.Abort()
	wantNothingAt(t, sec, "aborted")

	// Cancelling the Fetch context after Fetch returns discards the bytes.
	ctx, cancel := context.WithCancel(t.Context())
	res, err = d.Fetch(ctx, testReplicable, 1, sec, "cancelled", "")
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := res.Writer.Commit(t.Context()); err == nil {
		t.Errorf("Commit after the Fetch context was cancelled = nil, want an error")
	}
	wantNothingAt(t, sec, "cancelled")
}

func TestDownloadLargeStreamsInBoundedMemory(t *testing.T) {
	const size = 64 << 20
	p := newPrimary(t)
	sec := newDir(t)
	sum := p.addLarge(1, size)
	d := p.downloader(t, nil)
	// Warm up: pools, connection, buffers.
	p.add(2, randBytes(1<<20))
	if _, err := d.Download(t.Context(), testReplicable, 2, sec, "warm", ""); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	res, err := d.Download(t.Context(), testReplicable, 1, sec, "large", sum)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if res.Size != size || res.Checksum != sum {
		t.Fatalf("Result = %+v, want %d bytes %s", res, size, sum)
	}
	// Server and client together, in this process.
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
		t.Errorf("a %d MiB transfer allocated %d MiB: the blob is being held in memory", size>>20, grew>>20)
	}
	if _, n, err := blob.SHA256File(t.Context(), filepath.Join(rootOf(sec), "large")); err != nil || n != size {
		t.Errorf("SHA256File = %d, %v", n, err)
	}
}

func TestDownloadCorruptedBody(t *testing.T) {
	p := newPrimary(t)
	sec := newDir(t)
	p.add(1, randBytes(300_000))
	p.wrap = func(s transfer.Source) transfer.Source {
		s.Body = &flipReader{ReadSeekCloser: s.Body, at: 123_456}
		return s
	}
	_, err := p.downloader(t, nil).Fetch(t.Context(), testReplicable, 1, sec, "k", "")
	if !errors.Is(err, blob.ErrChecksumMismatch) {
		t.Fatalf("Fetch of a corrupted body = %v, want ErrChecksumMismatch", err)
	}
	wantNothingAt(t, sec, "k")
	if files := tempFiles(t, rootOf(sec)); len(files) > 0 {
		t.Errorf("temporary files left: %v", files)
	}
}

// flipReader flips the byte at offset at.
type flipReader struct {
	io.ReadSeekCloser
	off, at int64
}

func (f *flipReader) Read(p []byte) (int, error) {
	n, err := f.ReadSeekCloser.Read(p)
	if f.at >= f.off && f.at < f.off+int64(n) {
		p[f.at-f.off] ^= 0xff
	}
	f.off += int64(n)
	return n, err
}

func (f *flipReader) Seek(off int64, whence int) (int64, error) {
	n, err := f.ReadSeekCloser.Seek(off, whence)
	f.off = n
	return n, err
}

func TestDownloadWantChecksumMismatch(t *testing.T) {
	p := newPrimary(t)
	sec := newDir(t)
	data := randBytes(1000)
	p.addRecord(1, data, "") // primary does not know the checksum
	d := p.downloader(t, nil)
	wrong := sha([]byte("something else"))
	if _, err := d.Fetch(t.Context(), testReplicable, 1, sec, "k", wrong); !errors.Is(err, blob.ErrChecksumMismatch) {
		t.Fatalf("Fetch with a wrong wantChecksum = %v, want ErrChecksumMismatch", err)
	}
	wantNothingAt(t, sec, "k")
	// The primary announcing a checksum other than the expected one fails
	// before any byte is stored.
	p.addRecord(2, data, sha(data))
	if _, err := d.Fetch(t.Context(), testReplicable, 2, sec, "k", wrong); !errors.Is(err, blob.ErrChecksumMismatch) {
		t.Fatalf("Fetch with primary and expected checksums differing = %v, want ErrChecksumMismatch", err)
	}
	res, err := d.Fetch(t.Context(), testReplicable, 1, sec, "k", strings.ToUpper(sha(data)))
	if err != nil || res.PrimaryChecksum != "" {
		t.Fatalf("Fetch with the right (upper-case) checksum = %+v, %v", res, err)
	}
	res.Writer.Abort()
}

// rawPrimary serves h, for transfers that go wrong at the HTTP level,
// to a downloader whose stall timeout (5 s) a loaded machine does not
// reach by accident: a test of another failure gets that failure, not
// ErrTimeout (at 300 ms, a handler descheduled that long did).
func rawPrimary(t *testing.T, h http.HandlerFunc) (*transfer.Downloader, *blob.Bucket) {
	t.Helper()
	return rawPrimaryTimeout(t, 5*time.Second, h)
}

// rawPrimaryTimeout is rawPrimary with the downloader's stall timeout.
func rawPrimaryTimeout(t *testing.T, timeout time.Duration, h http.HandlerFunc) (*transfer.Downloader, *blob.Bucket) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	d, err := transfer.NewDownloader(transfer.DownloaderConfig{BaseURL: srv.URL, Credentials: newCreds("s", "k"), Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return d, newDir(t)
}

func TestDownloadTruncatedBody(t *testing.T) {
	d, sec := rawPrimary(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100000")
		w.Write(make([]byte, 50_000))
	})
	_, err := d.Fetch(t.Context(), testReplicable, 1, sec, "k", "")
	if !errors.Is(err, transfer.ErrSizeMismatch) {
		t.Fatalf("Fetch of a truncated body = %v, want ErrSizeMismatch", err)
	}
	wantNothingAt(t, sec, "k")
}

func TestDownloadSizeHeaderDisagrees(t *testing.T) {
	d, sec := rawPrimary(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(transfer.HeaderSize, "10")
		w.Write(make([]byte, 5)) // chunked: no Content-Length
		w.(http.Flusher).Flush()
	})
	if _, err := d.Fetch(t.Context(), testReplicable, 1, sec, "k", ""); !errors.Is(err, transfer.ErrSizeMismatch) {
		t.Fatalf("Fetch with %s above the body = %v, want ErrSizeMismatch", transfer.HeaderSize, err)
	}
	wantNothingAt(t, sec, "k")
}

func TestDownloadConnectionReset(t *testing.T) {
	d, sec := rawPrimary(t, func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", 1<<20)
		buf.Write(make([]byte, 100_000))
		buf.Flush()
		conn.(*net.TCPConn).SetLinger(0) // RST, not FIN
		conn.Close()
	})
	_, err := d.Fetch(t.Context(), testReplicable, 1, sec, "k", "")
	if err == nil {
		t.Fatal("Fetch over a reset connection succeeded")
	}
	wantNothingAt(t, sec, "k")
	if files := tempFiles(t, rootOf(sec)); len(files) > 0 {
		t.Errorf("temporary files left: %v", files)
	}
}

func TestDownloadSlowServerTimesOut(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header bool
	}{{"StallBeforeHeaders", false}, {"StallMidBody", true}} {
		t.Run(tc.name, func(t *testing.T) {
			d, sec := rawPrimaryTimeout(t, 300*time.Millisecond, func(w http.ResponseWriter, r *http.Request) {
				if tc.header {
					w.Header().Set("Content-Length", "1000000")
					w.Write(make([]byte, 1000))
					w.(http.Flusher).Flush()
				}
				select {
				case <-r.Context().Done():
				case <-time.After(10 * time.Second):
				}
			})
			start := time.Now()
			_, err := d.Fetch(t.Context(), testReplicable, 1, sec, "k", "")
			if !errors.Is(err, transfer.ErrTimeout) || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Fetch from a stalled server = %v, want ErrTimeout", err)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("timed out after %v, want about 300ms", took)
			}
			wantNothingAt(t, sec, "k")
		})
	}
}

func TestDownloadSlowButSteadyIsNotCutShort(t *testing.T) {
	// The timeout is idle time per read, not a total deadline. Each gap
	// is a twentieth of the timeout, so that a loaded machine's late
	// wake-ups do not make one a stall (at 60 ms of 300 they could).
	const timeout, gap, n = time.Second, 50 * time.Millisecond, 30
	d, sec := rawPrimaryTimeout(t, timeout, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(n))
		for range n {
			w.Write([]byte{'x'})
			w.(http.Flusher).Flush()
			time.Sleep(gap) // 1.5 s in total, more than the timeout
		}
	})
	res, err := d.Download(t.Context(), testReplicable, 1, sec, "k", "")
	if err != nil || res.Size != n {
		t.Fatalf("Download of a slow but steady body = %+v, %v", res, err)
	}
}

func TestDownloadCancelMidTransfer(t *testing.T) {
	started := make(chan struct{})
	d, sec := rawPrimary(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10000000")
		w.Write(make([]byte, 256<<10))
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done()
	})
	ctx, cancel := context.WithCancel(t.Context())
	go func() { <-started; time.Sleep(50 * time.Millisecond); cancel() }()
	_, err := d.Fetch(ctx, testReplicable, 1, sec, "k", "")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Fetch cancelled mid-transfer = %v, want context.Canceled", err)
	}
	wantNothingAt(t, sec, "k")
	if files := tempFiles(t, rootOf(sec)); len(files) > 0 {
		t.Errorf("temporary files left: %v", files)
	}
}

func TestDownloadNotFoundKinds(t *testing.T) {
	p := newPrimary(t)
	sec := newDir(t)
	p.addRecord(1, nil, "") // record without bytes
	d := p.downloader(t, nil)
	for _, tc := range []struct {
		name       string
		replicable string
		id         int64
		want       []error
		code       string
	}{
		{"MissingOnPrimary", testReplicable, 1, []error{transfer.ErrMissingOnPrimary, strategy.ErrBlobMissing}, transfer.CodeMissingOnPrimary},
		{"RecordNotFound", testReplicable, 2, []error{transfer.ErrRecordNotFound, strategy.ErrNotFound}, transfer.CodeRecordNotFound},
		{"UnknownReplicable", "no_such_type", 1, []error{strategy.ErrUnknownReplicable}, transfer.CodeUnknownReplicable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := d.Fetch(t.Context(), tc.replicable, tc.id, sec, "k", "")
			for _, want := range tc.want {
				if !errors.Is(err, want) {
					t.Errorf("Fetch = %v, want it to match %v", err, want)
				}
			}
			var se *transfer.StatusError
			if !errors.As(err, &se) || se.StatusCode != http.StatusNotFound || se.Code != tc.code {
				t.Errorf("Fetch = %#v, want a 404 StatusError with code %s", err, tc.code)
			}
			wantNothingAt(t, sec, "k")
		})
	}
	// Different kinds are told apart.
	if _, err := d.Fetch(t.Context(), testReplicable, 2, sec, "k", ""); errors.Is(err, transfer.ErrMissingOnPrimary) {
		t.Errorf("a missing record matches ErrMissingOnPrimary")
	}
}

func decodeError(t *testing.T, body []byte) transfer.ErrorBody {
	t.Helper()
	var e transfer.ErrorBody
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q is not JSON: %v", body, err)
	}
	return e
}

func TestHandlerBadID(t *testing.T) {
	p := newPrimary(t)
	for _, id := range []string{"abc", "-5", "+5", "1.5", "0x10", "99999999999999999999", "9223372036854775808", "%205", "1e3"} {
		resp, body := p.get(t, "GET", transfer.TransferPathPrefix+testReplicable+"/"+id, p.auth(t, testReplicable, 5))
		if e := decodeError(t, body); resp.StatusCode != http.StatusBadRequest || e.Code != transfer.CodeBadID {
			t.Errorf("GET id %q = %d %+v, want 400 %s", id, resp.StatusCode, e, transfer.CodeBadID)
		}
	}
	if p.served.Load() != 0 {
		t.Errorf("Resolve was called for a bad id")
	}
}

func TestHandlerMethods(t *testing.T) {
	p := newPrimary(t)
	data := randBytes(1000)
	sum := p.add(7, data)
	path := transfer.TransferPath(testReplicable, 7)
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH"} {
		resp, body := p.get(t, m, path, p.auth(t, testReplicable, 7))
		if e := decodeError(t, body); resp.StatusCode != http.StatusMethodNotAllowed || e.Code != transfer.CodeMethodNotAllowed {
			t.Errorf("%s = %d %+v, want 405", m, resp.StatusCode, e)
		}
	}

	resp, body := p.get(t, "HEAD", path, p.auth(t, testReplicable, 7))
	if resp.StatusCode != 200 || len(body) != 0 || resp.ContentLength != 1000 ||
		resp.Header.Get(transfer.HeaderChecksum) != sum || resp.Header.Get(transfer.HeaderSize) != "1000" {
		t.Errorf("HEAD = %d, %d body bytes, Content-Length %d, headers %v", resp.StatusCode, len(body), resp.ContentLength, resp.Header)
	}

	resp, body = p.get(t, "GET", path, p.auth(t, testReplicable, 7), "Range", "bytes=100-199")
	if resp.StatusCode != http.StatusPartialContent || string(body) != string(data[100:200]) ||
		resp.Header.Get(transfer.HeaderSize) != "1000" || resp.Header.Get("Content-Range") != "bytes 100-199/1000" {
		t.Errorf("ranged GET = %d, %d bytes, headers %v", resp.StatusCode, len(body), resp.Header)
	}

	resp, body = p.get(t, "GET", "/geo/v1/other", "")
	if e := decodeError(t, body); resp.StatusCode != 404 || e.Code != transfer.CodeNotFound {
		t.Errorf("GET elsewhere = %d %+v, want 404 not_found", resp.StatusCode, e)
	}
}

func TestHandlerConfigValidation(t *testing.T) {
	if _, err := transfer.NewHandler(transfer.HandlerConfig{Secrets: transfer.StaticSecrets{}}); err == nil || !strings.Contains(err.Error(), "Resolve") {
		t.Errorf("NewHandler without Resolve = %v, want an error naming Resolve", err)
	}
	if _, err := transfer.NewHandler(transfer.HandlerConfig{Resolve: func(context.Context, string, int64) (transfer.Source, error) { return transfer.Source{}, nil }}); err == nil || !strings.Contains(err.Error(), "Secrets") {
		t.Errorf("NewHandler without Secrets = %v, want an error naming Secrets", err)
	}
}

func TestDownloaderConfigValidation(t *testing.T) {
	good := newCreds("s", "k")
	for _, tc := range []struct {
		field string
		cfg   transfer.DownloaderConfig
	}{
		{"BaseURL", transfer.DownloaderConfig{BaseURL: "ftp://x", Credentials: good}},
		{"BaseURL", transfer.DownloaderConfig{BaseURL: "", Credentials: good}},
		{"Secret", transfer.DownloaderConfig{BaseURL: "http://x", Credentials: transfer.Credentials{Site: "s", AccessKey: "k", Secret: []byte("short-secret")}}},
		{"AccessKey", transfer.DownloaderConfig{BaseURL: "http://x", Credentials: transfer.Credentials{Site: "s", AccessKey: "a:b", Secret: good.Secret}}},
		{"Site", transfer.DownloaderConfig{BaseURL: "http://x", Credentials: transfer.Credentials{AccessKey: "k", Secret: good.Secret}}},
		{"Limiter", transfer.DownloaderConfig{BaseURL: "http://x", Credentials: good, Limiter: rate.NewLimiter(10, 0)}},
	} {
		_, err := transfer.NewDownloader(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("NewDownloader with a bad %s = %v, want an error naming it", tc.field, err)
			continue
		}
		assertNoLeak(t, "config error", err.Error(), tc.cfg.Credentials.Secret)
	}
}

func TestDownloadHostileKeys(t *testing.T) {
	p := newPrimary(t)
	p.add(1, []byte("x"))
	parent := t.TempDir()
	sec, err := dirblob.Open(filepath.Join(parent, "root"))
	if err != nil {
		t.Fatal(err)
	}
	defer sec.Close()
	d := p.downloader(t, nil)
	for _, key := range append(storagetest.HostileKeys(), "../outside") {
		if _, err := d.Download(t.Context(), testReplicable, 1, sec, key, ""); !errors.Is(err, strategy.ErrInvalidKey) {
			t.Errorf("Download to %q = %v, want ErrInvalidKey", key, err)
		}
	}
	if n := p.served.Load(); n != 0 {
		t.Errorf("%d requests reached the primary for hostile keys, want none", n)
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 1 {
		t.Errorf("parent of the root holds %v, want only the root", entries)
	}
}

func TestRedirectDropsAuthorization(t *testing.T) {
	data := randBytes(5000)
	var seen atomic.Value
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Get("Authorization") + "|")
		w.Write(data)
	}))
	defer other.Close()
	var firstAuth atomic.Value
	first := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		firstAuth.Store(r.Header.Get("Authorization"))
		http.Redirect(w, r, other.URL+"/objects/abc", http.StatusFound)
	}))
	defer first.Close()
	sec := newDir(t)
	for _, client := range []*http.Client{nil, {}} {
		d, err := transfer.NewDownloader(transfer.DownloaderConfig{BaseURL: first.URL, Credentials: newCreds("s", "k"), Client: client})
		if err != nil {
			t.Fatal(err)
		}
		res, err := d.Download(t.Context(), testReplicable, 1, sec, "k", sha(data))
		if err != nil {
			t.Fatalf("Download through a redirect: %v", err)
		}
		if !strings.HasPrefix(firstAuth.Load().(string), "Geo k:") {
			t.Errorf("the primary got Authorization %q, want a Geo token", firstAuth.Load())
		}
		if got := seen.Load(); got != "|" {
			t.Errorf("the redirect target got Authorization %q, want none", got)
		}
		res.Writer.Abort()
	}
}

func TestDownloadRateLimit(t *testing.T) {
	p := newPrimary(t)
	sec := newDir(t)
	p.add(1, randBytes(200_000))
	// 1 MB/s with a 50 kB burst: 200 kB takes about 150 ms at least.
	lim := rate.NewLimiter(1_000_000, 50_000)
	d := p.downloader(t, func(c *transfer.DownloaderConfig) { c.Limiter = lim })
	start := time.Now()
	if _, err := d.Download(t.Context(), testReplicable, 1, sec, "k", ""); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 120*time.Millisecond {
		t.Errorf("200 kB at 1 MB/s took %v, want at least ~150ms", took)
	}
}

func TestSHA256Helpers(t *testing.T) {
	data := randBytes(3<<20 + 17)
	path := filepath.Join(t.TempDir(), "f")
	os.WriteFile(path, data, 0o600)
	sum, n, err := blob.SHA256File(t.Context(), path)
	if err != nil || n != int64(len(data)) || sum != sha(data) {
		t.Errorf("SHA256File = %s, %d, %v, want %s, %d", sum, n, err, sha(data), len(data))
	}
	if _, _, err := blob.SHA256File(t.Context(), path+"-missing"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("SHA256File(missing) = %v, want ErrNotExist", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, _, err := blob.SHA256Reader(ctx, strings.NewReader("x")); !errors.Is(err, context.Canceled) {
		t.Errorf("SHA256Reader with a cancelled context = %v", err)
	}
	if sum, n, _ := blob.SHA256Reader(t.Context(), strings.NewReader("")); n != 0 || sum != sha(nil) {
		t.Errorf("SHA256Reader(empty) = %s, %d", sum, n)
	}
}

// TestHandlerChecksumSources: the checksum a transfer is checked against
// comes from the client when it sends one (nothing looked up or computed on
// the primary), else from HandlerConfig.Checksum, else from reading the
// bytes; a malformed one from the client is a 400 after authentication.
func TestHandlerChecksumSources(t *testing.T) {
	p := newPrimary(t)
	data := randBytes(5000)
	p.addRecord(1, data, "") // Resolve knows no checksum
	var lookups atomic.Int64
	var stored atomic.Value
	stored.Store("")
	h, err := transfer.NewHandler(transfer.HandlerConfig{
		Resolve: p.resolve,
		Secrets: transfer.NewStaticSecrets(p.creds),
		Checksum: func(ctx context.Context, replicable string, id int64) (string, error) {
			lookups.Add(1)
			if s := stored.Load().(string); s != "fail" {
				return s, nil
			}
			return "", errors.New("lookup failed")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	d, err := transfer.NewDownloader(transfer.DownloaderConfig{BaseURL: srv.URL, Credentials: p.creds})
	if err != nil {
		t.Fatal(err)
	}
	sec := newDir(t)
	fetch := func(want string) (transfer.Result, error) {
		t.Helper()
		res, err := d.Fetch(t.Context(), testReplicable, 1, sec, "k", want)
		if err == nil {
			res.Writer.Abort()
		}
		return res, err
	}

	// The client knows the checksum: no lookup, nothing announced, the
	// bytes still checked against it.
	if res, err := fetch(sha(data)); err != nil || res.PrimaryChecksum != "" || res.Checksum != sha(data) {
		t.Fatalf("Fetch with the checksum known = %+v, %v; want the bytes, nothing announced", res, err)
	}
	if _, err := fetch(sha([]byte("other"))); !errors.Is(err, blob.ErrChecksumMismatch) {
		t.Fatalf("Fetch expecting another checksum = %v, want ErrChecksumMismatch", err)
	}
	if n := lookups.Load(); n != 0 {
		t.Fatalf("Checksum called %d times for requests carrying the checksum, want 0", n)
	}

	// The client knows none: the stored one is announced (here a wrong
	// one, so the transfer fails), then, with none stored or the lookup
	// failing, one computed from the bytes.
	stored.Store(sha([]byte("stale")))
	if _, err := fetch(""); !errors.Is(err, blob.ErrChecksumMismatch) {
		t.Fatalf("Fetch with a stored checksum the bytes do not match = %v, want ErrChecksumMismatch", err)
	}
	for _, s := range []string{"", "fail"} {
		stored.Store(s)
		if res, err := fetch(""); err != nil || res.PrimaryChecksum != sha(data) {
			t.Fatalf("stored %q: Fetch = %+v, %v; want the checksum computed on the fly", s, res, err)
		}
	}
	if n := lookups.Load(); n != 3 {
		t.Fatalf("Checksum called %d times, want 3", n)
	}

	// A malformed checksum from the client: 400 once authenticated, 401
	// before.
	req := func(auth string) *http.Response {
		r, err := http.NewRequest(http.MethodGet, srv.URL+transfer.TransferPath(testReplicable, 1), nil)
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set(transfer.HeaderChecksum, "not-hex")
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		resp, err := srv.Client().Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := req(p.auth(t, testReplicable, 1)); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("malformed %s: status %d, want 400", transfer.HeaderChecksum, resp.StatusCode)
	}
	if resp := req(""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("malformed %s without credentials: status %d, want 401", transfer.HeaderChecksum, resp.StatusCode)
	}
}

// syncCounting wraps a storage backend; its writers count Sync calls and
// can fail them, to show when Fetch makes bytes durable.
type syncCounting struct {
	*dirblob.Dir
	syncs   atomic.Int32
	failErr error
}

type countingWriter struct {
	driver.Writer
	s *syncCounting
}

func (w countingWriter) Sync(ctx context.Context) error {
	w.s.syncs.Add(1)
	if w.s.failErr != nil {
		return w.s.failErr
	}
	return w.Writer.(driver.Syncer).Sync(ctx)
}

func (s *syncCounting) NewWriter(ctx context.Context, key string, opts *driver.WriterOptions) (driver.Writer, error) {
	w, err := s.Dir.NewWriter(ctx, key, opts)
	if err != nil {
		return nil, err
	}
	return countingWriter{w, s}, nil
}

func TestFetchSyncsCheckedBytes(t *testing.T) {
	p := newPrimary(t)
	dir := newDir(t)
	d := p.downloader(t, nil)
	data := randBytes(10_000)
	p.add(1, data)
	inner, err := dirblob.New(rootOf(dir))
	if err != nil {
		t.Fatal(err)
	}
	counting := &syncCounting{Dir: inner}
	sec := blob.NewBucket(counting)
	t.Cleanup(func() { sec.Close() })
	res, err := d.Fetch(t.Context(), testReplicable, 1, sec, "k", "")
	if err != nil {
		t.Fatal(err)
	}
	if n := counting.syncs.Load(); n != 1 {
		t.Errorf("Fetch called Sync %d times, want 1", n)
	}
	wantNothingAt(t, dir, "k")
	if err := res.Writer.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, dir, "k"); sha(got) != sha(data) {
		t.Errorf("committed bytes differ")
	}

	// Bytes that fail their check are never synced.
	counting.syncs.Store(0)
	if _, err := d.Fetch(t.Context(), testReplicable, 1, sec, "bad", sha([]byte("other"))); !errors.Is(err, blob.ErrChecksumMismatch) {
		t.Fatalf("Fetch with a wrong checksum = %v, want ErrChecksumMismatch", err)
	}
	if n := counting.syncs.Load(); n != 0 {
		t.Errorf("Sync called %d times for rejected bytes, want 0", n)
	}

	// A failed Sync fails the Fetch and leaves nothing behind.
	counting.failErr = errors.New("disk on fire")
	if _, err := d.Fetch(t.Context(), testReplicable, 1, sec, "failed", ""); !errors.Is(err, counting.failErr) {
		t.Fatalf("Fetch with a failing Sync = %v, want it to wrap the Sync error", err)
	}
	wantNothingAt(t, dir, "failed")
}
