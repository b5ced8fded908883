package xfer_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/geoframework/geo/internal/xfer"
	"github.com/geoframework/geo/replicator/transfer"
	"github.com/geoframework/geo/strategy"
)

// TestDownloadPrimaryAdapterBadKey: when the primary's adapter gives a
// record a hostile storage key, the endpoint answers 500 adapter_bad_key,
// not 500 internal, without echoing the key; the downloader's error
// matches ErrPrimaryAdapter (not ErrInvalidKey: the secondary's own key is
// fine) and its text, which becomes the registry row's failure reason,
// says the primary's adapter returned an invalid key for the record. Any
// other failure of the primary stays 500 internal and matches nothing of
// the kind.
func TestDownloadPrimaryAdapterBadKey(t *testing.T) {
	p := newPrimary(t)
	sec := newDir(t)
	hostile := map[int64]string{1: "../../etc/passwd", 2: "/etc/passwd", 3: "a//b", 4: ".geo-tmp/owner/x"}
	p.mu.Lock()
	for id, key := range hostile {
		p.records[id] = record{key: key}
	}
	p.mu.Unlock()
	d := p.downloader(t, nil)
	for id, key := range hostile {
		_, err := d.Fetch(t.Context(), testReplicable, id, sec, "records/1", "")
		if !errors.Is(err, transfer.ErrPrimaryAdapter) {
			t.Errorf("Fetch of a record with key %q on the primary = %v, want ErrPrimaryAdapter", key, err)
		}
		if errors.Is(err, strategy.ErrInvalidKey) {
			t.Errorf("Fetch = %v matches ErrInvalidKey: the secondary's key is valid", err)
		}
		var se *xfer.StatusError
		if !errors.As(err, &se) || se.StatusCode != http.StatusInternalServerError || se.Code != xfer.CodeBadKey {
			t.Errorf("Fetch = %#v, want a 500 StatusError with code %s", err, xfer.CodeBadKey)
		}
		if err != nil && !strings.Contains(err.Error(), "the primary's adapter returned an invalid storage key for the record") {
			t.Errorf("Fetch error %q does not say the primary's adapter returned an invalid key", err)
		}
		if err != nil && strings.Contains(err.Error(), key) {
			t.Errorf("Fetch error %q quotes the hostile key", err)
		}
		wantNothingAt(t, sec, "records/1")

		resp, body := p.get(t, http.MethodGet, xfer.TransferPath(testReplicable, id), p.auth(t, testReplicable, id))
		if resp.StatusCode != http.StatusInternalServerError || decodeError(t, body).Code != xfer.CodeBadKey {
			t.Errorf("GET record with key %q = %d %s, want 500 %s", key, resp.StatusCode, body, xfer.CodeBadKey)
		}
		if strings.Contains(string(body), key) {
			t.Errorf("answer %s quotes the hostile key", body)
		}
	}
	if n := p.logs.FilterMessageSnippet("invalid storage key").Len(); n == 0 {
		t.Error("the primary logged nothing about the adapter's invalid key")
	}

	// Another failure is still internal, and not an adapter error.
	h, err := xfer.NewHandler(xfer.HandlerConfig{
		Resolve: func(context.Context, string, int64) (xfer.Source, error) {
			return xfer.Source{}, errors.New("replica unreachable")
		},
		Secrets: transfer.NewStaticSecrets(p.creds),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	d2, err := xfer.NewDownloader(xfer.DownloaderConfig{BaseURL: srv.URL, Credentials: p.creds, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_, err = d2.Fetch(t.Context(), testReplicable, 1, sec, "records/1", "")
	var se *xfer.StatusError
	if !errors.As(err, &se) || se.StatusCode != http.StatusInternalServerError || se.Code != xfer.CodeInternal {
		t.Errorf("Fetch from a failing primary = %#v, want a 500 StatusError with code %s", err, xfer.CodeInternal)
	}
	if errors.Is(err, transfer.ErrPrimaryAdapter) || strings.Contains(err.Error(), "adapter") {
		t.Errorf("Fetch from a failing primary = %v, want no adapter error", err)
	}
	// A bad key wrapped as the replicator's Primary wraps it is an adapter
	// error too.
	h, err = xfer.NewHandler(xfer.HandlerConfig{
		Resolve: func(context.Context, string, int64) (xfer.Source, error) {
			return xfer.Source{}, fmt.Errorf("strategy %s: %w", testReplicable, strategy.ValidateKey("a/../../b"))
		},
		Secrets: transfer.NewStaticSecrets(p.creds),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv3 := httptest.NewServer(h)
	t.Cleanup(srv3.Close)
	d3, err := xfer.NewDownloader(xfer.DownloaderConfig{BaseURL: srv3.URL, Credentials: p.creds, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d3.Fetch(t.Context(), testReplicable, 1, sec, "records/1", ""); !errors.Is(err, transfer.ErrPrimaryAdapter) {
		t.Errorf("Fetch of a key strategy.ValidateKey refused on the primary = %v, want ErrPrimaryAdapter", err)
	}
}
