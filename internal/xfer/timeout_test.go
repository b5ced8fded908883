package xfer_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/geoframework/geo/blob/dirblob"
	"github.com/geoframework/geo/internal/xfer"
	"github.com/geoframework/geo/replicator/transfer"
)

// TestHeaderTimeoutOfTheClientIsErrTimeout is the regression test for a
// primary that sends no response headers being reported two ways: as
// ErrTimeout when the downloader's own stall timer fired first, and as
// the transport's bare "net/http: timeout awaiting response headers" when
// the client's ResponseHeaderTimeout did (the default client sets it to
// the same Timeout, so which one won was a race: TestDownloadSlowServerTimesOut
// failed now and then, and geochaos flaky-primary recorded both reasons).
// Here the client's header timeout is the shorter one.
func TestHeaderTimeoutOfTheClientIsErrTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}))
	defer srv.Close()
	d, err := xfer.NewDownloader(xfer.DownloaderConfig{
		BaseURL: srv.URL, Timeout: 5 * time.Second,
		Client:      &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: 200 * time.Millisecond}},
		Credentials: transfer.Credentials{Site: "s1", AccessKey: "k1", Secret: make([]byte, 32)},
	})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := dirblob.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	_, err = d.Fetch(t.Context(), "item", 1, dir, "k", "")
	if !errors.Is(err, transfer.ErrTimeout) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Fetch from a server sending no headers = %v, want ErrTimeout", err)
	}
}
