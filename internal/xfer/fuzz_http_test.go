package xfer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/geoframework/geo/blob/dirblob"
	"github.com/geoframework/geo/replicator/transfer"
	"github.com/geoframework/geo/strategy"
)

// FuzzTransferPath sends arbitrary methods and paths to the transfer
// endpoint, with a valid token for record 7 of "item". The router, the id
// parser and the name check are the parsers of the request line. It checks
// that nothing panics, that only GET/HEAD of exactly /geo/v1/blobs/item/7
// (or a zero-padded 7) is served, and that every other answer is a JSON
// error with one of the documented codes.
func FuzzTransferPath(f *testing.F) {
	for _, s := range []struct{ method, path string }{
		{"GET", "/geo/v1/blobs/item/7"}, {"HEAD", "/geo/v1/blobs/item/7"}, {"GET", "/geo/v1/blobs/item/007"},
		{"POST", "/geo/v1/blobs/item/7"}, {"GET", "/geo/v1/blobs/item/-7"}, {"GET", "/geo/v1/blobs/item/7/"},
		{"GET", "/geo/v1/blobs/item/7/x"}, {"GET", "/geo/v1/blobs//7"}, {"GET", "/geo/v1/blobs/../item/7"},
		{"GET", "/geo/v1/blobs/item/%37"}, {"GET", "/geo/v1/blobs/other/7"}, {"GET", "/geo/v1/blobs/item/99999999999999999999"},
		{"GET", "/"}, {"GET", "/geo/v1/blobs/item%2F7/7"},
	} {
		f.Add(s.method, s.path)
	}
	creds := transfer.Credentials{Site: "s1", AccessKey: "k1", Secret: bytes.Repeat([]byte{7}, 32)}
	now := time.Unix(1_700_000_000, 0)
	auth, err := Authorization(creds, "item", 7, now)
	if err != nil {
		f.Fatal(err)
	}
	body := []byte("the bytes of item 7")
	h, err := NewHandler(HandlerConfig{
		Secrets: transfer.NewStaticSecrets(creds),
		Now:     func() time.Time { return now },
		Resolve: func(ctx context.Context, replicable string, id int64) (Source, error) {
			if replicable != "item" {
				return Source{}, strategy.ErrUnknownReplicable
			}
			return Source{Body: nopSeekCloser{bytes.NewReader(body)}, Size: int64(len(body))}, nil
		},
	})
	if err != nil {
		f.Fatal(err)
	}
	codes := map[string]bool{CodeUnknownReplicable: true, CodeRecordNotFound: true, CodeMissingOnPrimary: true,
		CodeUnauthorized: true, CodeBadID: true, CodeMethodNotAllowed: true, CodeNotFound: true, CodeBadKey: true, CodeInternal: true}
	f.Fuzz(func(t *testing.T, method, path string) {
		req, err := http.NewRequest(method, "http://primary.test/", nil)
		if err != nil {
			return // not a request a client could send
		}
		req.URL.Path = path
		req.URL.RawPath = ""
		req.RequestURI = ""
		req.Header.Set("Authorization", auth)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		served := rec.Code == http.StatusOK
		id := strings.TrimPrefix(path, transfer.TransferPathPrefix+"item/")
		n, perr := strconv.ParseInt(id, 10, 64)
		m := method
		if m == "" {
			m = http.MethodGet // net/http sends an empty method as GET
		}
		wantServed := (m == "GET" || m == "HEAD") && strings.HasPrefix(path, transfer.TransferPathPrefix+"item/") &&
			perr == nil && n == 7 && !strings.ContainsAny(id, "+-")
		if served != wantServed {
			t.Fatalf("%s %q: status %d, served %v, want served %v", method, path, rec.Code, served, wantServed)
		}
		if served {
			if m == "GET" && !bytes.Equal(rec.Body.Bytes(), body) {
				t.Fatalf("%s %q: body %q", method, path, rec.Body.Bytes())
			}
			return
		}
		if rec.Code == http.StatusMovedPermanently || rec.Code == http.StatusTemporaryRedirect || rec.Code == http.StatusPermanentRedirect {
			return // the mux cleaning a path (".." or "//"): no data either way
		}
		var eb ErrorBody
		if err := jsonDecode(rec.Body.Bytes(), &eb); err != nil || !codes[eb.Code] {
			t.Fatalf("%s %q: status %d with body %q, want a JSON error with a documented code", method, path, rec.Code, rec.Body.Bytes())
		}
	})
}

type nopSeekCloser struct{ *bytes.Reader }

func (nopSeekCloser) Close() error { return nil }

// FuzzFetchResponse feeds the downloader arbitrary answers from a
// "primary": status, Content-Length, the size and checksum headers, and
// the body (with a flag to cut the connection short). The response
// parsing and the checks on it are what stands between a sick primary (or
// network) and a corrupted copy (R6): Fetch may succeed only with exactly
// the body whose SHA-256 the primary announced, and must leave nothing
// behind when it fails.
func FuzzFetchResponse(f *testing.F) {
	good := []byte("hello, secondary")
	sum := sha256.Sum256(good)
	goodSum := hex.EncodeToString(sum[:])
	f.Add(200, int64(len(good)), strconv.Itoa(len(good)), goodSum, good, false)
	f.Add(200, int64(len(good)), strconv.Itoa(len(good)), goodSum, good[:5], false)
	f.Add(200, int64(len(good)), "", goodSum, append([]byte{'H'}, good[1:]...), false)
	f.Add(200, int64(-1), "", goodSum, good, true)
	f.Add(200, int64(3), strconv.Itoa(len(good)), goodSum, good, false)
	f.Add(200, int64(len(good)), "-1", goodSum, good, false)
	f.Add(200, int64(len(good)), strconv.Itoa(len(good)), strings.ToUpper(goodSum), good, false)
	f.Add(200, int64(len(good)), strconv.Itoa(len(good)), "", good, false)
	f.Add(404, int64(-1), "", "", []byte(`{"code":"missing_on_primary","message":"x"}`), false)
	f.Add(500, int64(-1), "", "", []byte("oops"), false)
	dir, err := dirblob.Open(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { dir.Close() })
	f.Fuzz(func(t *testing.T, status int, contentLength int64, sizeHeader, checksum string, body []byte, cut bool) {
		if status < 100 || status > 999 {
			return
		}
		rt := roundTripFunc(func(req *http.Request) (*http.Response, error) {
			h := http.Header{}
			if sizeHeader != "" {
				h.Set(HeaderSize, sizeHeader)
			}
			if checksum != "" {
				h.Set(HeaderChecksum, checksum)
			}
			var r io.Reader = bytes.NewReader(body)
			if cut {
				r = io.MultiReader(r, errReader{io.ErrUnexpectedEOF})
			}
			return &http.Response{StatusCode: status, Header: h, ContentLength: contentLength, Body: io.NopCloser(r), Request: req}, nil
		})
		d, err := NewDownloader(DownloaderConfig{
			BaseURL: "http://primary.test", Client: &http.Client{Transport: rt}, Timeout: 5 * time.Second,
			Credentials: transfer.Credentials{Site: "s1", AccessKey: "k1", Secret: bytes.Repeat([]byte{1}, 32)},
		})
		if err != nil {
			t.Fatal(err)
		}
		const key = "fuzz/blob"
		res, err := d.Fetch(context.Background(), "item", 1, dir, key, "")
		if err != nil {
			if res.Writer != nil {
				t.Fatalf("failed Fetch returned a writer: %v", err)
			}
			return
		}
		defer res.Writer.Abort()
		got := sha256.Sum256(body)
		gotSum := hex.EncodeToString(got[:])
		switch {
		case status != http.StatusOK:
			t.Fatalf("status %d accepted", status)
		case cut:
			t.Fatalf("a cut body was accepted")
		case checksum == "":
			// No checksum announced: only the size can be checked.
		case !strings.EqualFold(checksum, gotSum) || res.Checksum != gotSum:
			t.Fatalf("body with SHA-256 %s accepted under announced %q (result %s)", gotSum, checksum, res.Checksum)
		}
		if res.Size != int64(len(body)) {
			t.Fatalf("result size %d, body %d bytes", res.Size, len(body))
		}
		if contentLength >= 0 && contentLength != int64(len(body)) {
			t.Fatalf("Content-Length %d accepted for a body of %d bytes", contentLength, len(body))
		}
		if sizeHeader != "" {
			if n, err := strconv.ParseInt(sizeHeader, 10, 64); err != nil || n != int64(len(body)) {
				t.Fatalf("%s %q accepted for a body of %d bytes", HeaderSize, sizeHeader, len(body))
			}
		}
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func jsonDecode(b []byte, v any) error { return json.Unmarshal(b, v) }
