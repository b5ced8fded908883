package xfer_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/blob/dirblob"
	"github.com/geoframework/geo/internal/xfer"
	"github.com/geoframework/geo/replicator/transfer"
	"github.com/geoframework/geo/strategy"
)

const testReplicable = "package_file"

// record is one primary record in a testPrimary.
type record struct {
	key      string
	checksum string // what the primary announces; "" for unknown
}

// testPrimary is a primary site on loopback: a Dir with the blobs, a set
// of records, and the transfer handler in an httptest.Server.
type testPrimary struct {
	t       testing.TB
	store   *blob.Bucket
	creds   transfer.Credentials // the secondary's, known to the primary
	logs    *observer.ObservedLogs
	srv     *httptest.Server
	served  atomic.Int64 // requests that reached Resolve
	mu      sync.Mutex
	records map[int64]record
	// wrap, when set, changes the Source served (to corrupt it, say).
	wrap func(xfer.Source) xfer.Source
	// observed collects Observe calls.
	observed []int64
}

func newCreds(site, key string) transfer.Credentials {
	secret := make([]byte, 32)
	rand.Read(secret)
	return transfer.Credentials{Site: site, AccessKey: key, Secret: secret}
}

func newPrimary(t testing.TB) *testPrimary {
	t.Helper()
	p := &testPrimary{t: t, store: newDir(t), creds: newCreds("secondary-1", "AK1"), records: map[int64]record{}}
	core, logs := observer.New(zap.DebugLevel)
	p.logs = logs
	h, err := xfer.NewHandler(xfer.HandlerConfig{
		Resolve: p.resolve,
		Secrets: transfer.NewStaticSecrets(p.creds),
		Logger:  zap.New(core),
		Observe: func(_ string, _ int64, start, end time.Time, n int64) {
			if end.Before(start) {
				t.Errorf("Observe: end %v before start %v", end, start)
			}
			p.mu.Lock()
			p.observed = append(p.observed, n)
			p.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	p.srv = httptest.NewServer(h)
	t.Cleanup(p.srv.Close)
	return p
}

func (p *testPrimary) resolve(ctx context.Context, replicable string, id int64) (xfer.Source, error) {
	p.served.Add(1)
	if replicable != testReplicable {
		return xfer.Source{}, strategy.ErrUnknownReplicable
	}
	p.mu.Lock()
	rec, ok := p.records[id]
	wrap := p.wrap
	p.mu.Unlock()
	if !ok {
		return xfer.Source{}, fmt.Errorf("record %d: %w", id, strategy.ErrNotFound)
	}
	r, err := p.store.Open(ctx, rec.key)
	if errors.Is(err, blob.ErrNotExist) {
		return xfer.Source{}, fmt.Errorf("record %d: %w", id, strategy.ErrBlobMissing)
	}
	if err != nil {
		return xfer.Source{}, err
	}
	src := xfer.Source{Body: r, Size: r.Size(), ModTime: r.ModTime(), Checksum: rec.checksum}
	if wrap != nil {
		src = wrap(src)
	}
	return src, nil
}

// add stores data as record id (announcing its checksum) and returns the
// checksum.
func (p *testPrimary) add(id int64, data []byte) string {
	p.t.Helper()
	sum := sha(data)
	p.addRecord(id, data, sum)
	return sum
}

func (p *testPrimary) addRecord(id int64, data []byte, announce string) {
	p.t.Helper()
	key := fmt.Sprintf("records/%d", id)
	if data != nil {
		w, err := p.store.Create(context.Background(), key, nil)
		if err != nil {
			p.t.Fatal(err)
		}
		w.Write(data)
		if err := w.Commit(context.Background()); err != nil {
			p.t.Fatal(err)
		}
	}
	p.mu.Lock()
	p.records[id] = record{key: key, checksum: announce}
	p.mu.Unlock()
}

// addLarge stores size bytes of pseudo-random data as record id without
// holding them in memory, and returns their checksum.
func (p *testPrimary) addLarge(id int64, size int64) string {
	p.t.Helper()
	key := fmt.Sprintf("records/%d", id)
	w, err := p.store.Create(context.Background(), key, nil)
	if err != nil {
		p.t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	rand.Read(chunk)
	for left := size; left > 0; left -= int64(len(chunk)) {
		chunk[0]++
		w.Write(chunk[:min(int64(len(chunk)), left)])
	}
	_, sum := w.Written()
	if err := w.Commit(context.Background()); err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.records[id] = record{key: key, checksum: sum}
	p.mu.Unlock()
	return sum
}

func (p *testPrimary) downloader(t testing.TB, mod func(*xfer.DownloaderConfig)) *xfer.Downloader {
	t.Helper()
	cfg := xfer.DownloaderConfig{BaseURL: p.srv.URL, Credentials: p.creds, Concurrency: 8, Timeout: 5 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	d, err := xfer.NewDownloader(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// get sends a raw request to the primary with the given Authorization
// header (none when "").
func (p *testPrimary) get(t *testing.T, method, path, auth string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, p.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := p.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func (p *testPrimary) auth(t *testing.T, replicable string, id int64) string {
	t.Helper()
	a, err := xfer.Authorization(p.creds, replicable, id, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// wantNothingAt checks that key holds no blob in d.
func wantNothingAt(t *testing.T, d *blob.Bucket, key string) {
	t.Helper()
	if _, err := d.Stat(context.Background(), key); !errors.Is(err, blob.ErrNotExist) {
		t.Errorf("Stat(%q) = %v, want ErrNotExist: nothing may be left at the key", key, err)
	}
}

func readAll(t *testing.T, d *blob.Bucket, key string) []byte {
	t.Helper()
	r, err := d.Open(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// secretForms are the ways a secret could leak into a message.
func secretForms(secret []byte) []string {
	return []string{string(secret), hex.EncodeToString(secret), strings.ToUpper(hex.EncodeToString(secret)),
		base64.StdEncoding.EncodeToString(secret), base64.RawStdEncoding.EncodeToString(secret),
		base64.URLEncoding.EncodeToString(secret), base64.RawURLEncoding.EncodeToString(secret),
		fmt.Sprintf("%v", secret), fmt.Sprintf("%x", secret)}
}

func assertNoLeak(t *testing.T, where, s string, secret []byte, tokens ...string) {
	t.Helper()
	for _, f := range secretForms(secret) {
		if bytes.Contains([]byte(s), []byte(f)) {
			t.Errorf("%s contains the secret: %q", where, s)
		}
	}
	for _, tok := range tokens {
		if tok != "" && bytes.Contains([]byte(s), []byte(tok)) {
			t.Errorf("%s contains the token: %q", where, s)
		}
	}
}

// newDir returns a directory Bucket in a fresh directory, closed when the
// test ends.
func newDir(t testing.TB) *blob.Bucket {
	t.Helper()
	b, err := dirblob.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// rootOf is the directory of a Bucket opened by newDir or dirblob.Open.
func rootOf(b *blob.Bucket) string { return b.Driver().(*dirblob.Dir).Root() }

// tempFiles lists the files under root/.geo-tmp other than lock files.
func tempFiles(t testing.TB, root string) []string {
	t.Helper()
	var files []string
	filepath.WalkDir(filepath.Join(root, dirblob.ReservedPrefix), func(p string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() && e.Name() != "lock" {
			files = append(files, p)
		}
		return nil
	})
	return files
}
