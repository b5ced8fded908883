package replicator_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
)

// readServer serves sec's blobs on loopback behind a token the test's
// Authorize checks.
func readServer(t *testing.T, sec *replicator.Secondary, cfg replicator.ReadHandlerConfig) *httptest.Server {
	t.Helper()
	cfg.Authorize = func(r *http.Request, replicable string, id int64) error {
		if r.Header.Get("Authorization") != "Bearer reader" {
			return errors.New("no reader token")
		}
		return nil
	}
	h, err := replicator.NewReadHandler(sec, cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(http.StripPrefix("/blobs", h))
	t.Cleanup(srv.Close)
	return srv
}

// get requests path on srv with the reader's token and extra headers
// (name, value pairs); it returns the response with its body read.
func get(t *testing.T, srv *httptest.Server, path string, hdr ...string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer reader")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// The read handler serves a record before it synced (from the primary,
// whole or a Range) and after (locally), with the ETag, conditional
// requests, the source and freshness headers, and its refusals.
func TestReadHandlerServesBeforeAndAfterSync(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	want := payload(7, 100_000)
	id, err := f.app.Create(ctx, 0, want)
	require.NoError(t, err)
	sec, err := replicator.NewSecondary(f.SecondaryConfig(f.secondaryItems()))
	require.NoError(t, err)
	spool := t.TempDir()
	srv := readServer(t, sec, replicator.ReadHandlerConfig{SpoolDir: spool})
	path := fmt.Sprintf("/blobs/item/%d", id)
	etag := `"` + sum(want) + `"`

	// Refusals.
	req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	require.NoError(t, err)
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "no token")
	for p, code := range map[string]int{
		fmt.Sprintf("/blobs/item/%d", id+1000): http.StatusNotFound,
		"/blobs/nope/1":                        http.StatusNotFound,
		"/blobs/item/x":                        http.StatusBadRequest,
	} {
		resp, _, err := get(t, srv, p)
		require.NoError(t, err)
		require.Equal(t, code, resp.StatusCode, p)
	}
	resp, _, err = get(t, srv, path, events.PositionHeader, "not-a-position")
	require.NoError(t, err)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, "malformed position")

	// Before the sync: read through, whole and a Range.
	resp, body, err := get(t, srv, path)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "primary", resp.Header.Get(replicator.ReadSourceHeader))
	require.Equal(t, etag, resp.Header.Get("ETag"))
	require.Equal(t, want, body)
	resp, body, err = get(t, srv, path, "Range", "bytes=1000-1999")
	require.NoError(t, err)
	require.Equal(t, http.StatusPartialContent, resp.StatusCode)
	require.Equal(t, "primary", resp.Header.Get(replicator.ReadSourceHeader))
	require.Equal(t, want[1000:2000], body, "range read through the primary")
	// The handler removes its spool file once the response is sent, which
	// may be just after the client has read it.
	geotest.WaitFor(t, stall, "spool file removed", func() (bool, string) {
		spooled, err := os.ReadDir(spool)
		if err != nil {
			return false, err.Error()
		}
		return len(spooled) == 0, fmt.Sprintf("%d spool files", len(spooled))
	})

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sec.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	waitState(t, sec.Store(), id, registry.StateSynced)
	// The row can sync by the pass at start before the consumer has
	// handled an event; the freshness header names the consumer's
	// position, so wait for one.
	geotest.WaitFor(t, stall, "event consumer has a position", func() (bool, string) {
		st := sec.EventStats()
		return st.Active && !st.Cursor.IsZero(), fmt.Sprintf("%+v", st)
	})
	transfers := f.Transfers.Count("item", id)

	// After it: local, with ranges and conditional requests.
	resp, body, err = get(t, srv, path)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "local", resp.Header.Get(replicator.ReadSourceHeader))
	require.Equal(t, etag, resp.Header.Get("ETag"))
	fresh, err := events.ParsePosition(resp.Header.Get(events.PositionHeader))
	require.NoError(t, err, "the freshness header")
	require.False(t, fresh.IsZero())
	require.Equal(t, want, body)
	resp, body, err = get(t, srv, path, "Range", "bytes=-10")
	require.NoError(t, err)
	require.Equal(t, http.StatusPartialContent, resp.StatusCode)
	require.Equal(t, want[len(want)-10:], body)
	resp, _, err = get(t, srv, path, "If-None-Match", etag)
	require.NoError(t, err)
	require.Equal(t, http.StatusNotModified, resp.StatusCode)
	resp, body, err = get(t, srv, path, "If-Range", `"other"`, "Range", "bytes=0-9")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "If-Range with another ETag: the whole blob")
	require.Equal(t, want, body)
	require.Equal(t, transfers, f.Transfers.Count("item", id), "local reads transfer nothing")

	// A change the secondary cannot sync yet (its type paused): a request
	// with the change's Position gets the new bytes from the primary, at
	// once, or, from a handler that waits, once its wait times out.
	require.NoError(t, sec.Pause(ctx, "item"))
	v2 := payload(17, 90_000)
	require.NoError(t, f.app.UpdateInPlace(ctx, id, v2))
	p2 := lastPosition(t, f.PrimaryDB, id)
	waiting := readServer(t, sec, replicator.ReadHandlerConfig{Wait: true, WaitTimeout: 200 * time.Millisecond})
	for name, s := range map[string]*httptest.Server{"no wait": srv, "wait times out": waiting} {
		resp, body, err = get(t, s, path, events.PositionHeader, p2.String())
		require.NoError(t, err, name)
		require.Equal(t, http.StatusOK, resp.StatusCode, name)
		require.Equal(t, "primary", resp.Header.Get(replicator.ReadSourceHeader), name)
		require.Equal(t, v2, body, "%s: bytes at the change's position", name)
		got, err := events.ParsePosition(resp.Header.Get(events.PositionHeader))
		require.NoError(t, err)
		require.False(t, got.Less(p2), "%s: freshness %v before the asked %v", name, got, p2)
	}
}

// A read-through of bytes that do not match the primary's checksum is
// never handed out as complete: Open's reader ends with
// blob.ErrChecksumMismatch instead of io.EOF, the handler breaks the
// response, and a Range request gets an error with no bytes.
func TestReadThroughChecksumMismatchAborts(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	good := payload(8, 50_000)
	id, err := f.app.Create(ctx, 0, good)
	require.NoError(t, err)
	geotest.WaitFor(t, stall, "the primary checksums the record", func() (bool, string) {
		var n int
		if err := f.PrimaryDB.GetContext(ctx, &n, `SELECT count(*) FROM geo_checksums WHERE replicable = 'item' AND model_id = $1 AND checksum IS NOT NULL`, id); err != nil {
			return false, err.Error()
		}
		return n == 1, fmt.Sprintf("%d checksum rows", n)
	})
	// The primary's file rots after its checksum was taken: same size,
	// other bytes.
	key, err := f.items.BlobKey(ctx, id)
	require.NoError(t, err)
	bad := payload(9, len(good))
	require.NoError(t, os.WriteFile(filepath.Join(f.PrimaryRoot, filepath.FromSlash(key)), bad, 0o644))

	sec, err := replicator.NewSecondary(f.SecondaryConfig(f.secondaryItems()))
	require.NoError(t, err)
	rd, err := sec.Open(ctx, "item", id, nil)
	require.NoError(t, err)
	require.Equal(t, replicator.ReadPrimary, rd.Source)
	require.Equal(t, sum(good), rd.Checksum, "checked against the primary's checksum")
	got, err := io.ReadAll(rd)
	require.ErrorIs(t, err, blob.ErrChecksumMismatch, "reading a bad read-through")
	require.Less(t, len(got), len(bad), "a bad read-through looks complete")
	require.NoError(t, rd.Close())

	srv := readServer(t, sec, replicator.ReadHandlerConfig{SpoolDir: t.TempDir()})
	path := fmt.Sprintf("/blobs/item/%d", id)
	resp, body, err := get(t, srv, path)
	require.Error(t, err, "the handler must break a bad read-through (status %d, %d bytes)", resp.StatusCode, len(body))
	require.Less(t, len(body), len(bad))
	resp, body, err = get(t, srv, path, "Range", "bytes=0-99")
	require.NoError(t, err)
	require.Equal(t, http.StatusBadGateway, resp.StatusCode, "a Range read through bad bytes")
	require.NotEqual(t, bad[:100], body)
}
