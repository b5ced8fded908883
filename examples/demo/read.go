package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/examples/packagefile"
	"github.com/geoframework/geo/replicator"
)

// readThroughWait bounds the demo's wait for the new file's sync.
const readThroughWait = 30 * time.Second

// readThrough shows reads on the secondary ("Reading on a secondary" in
// [Operating geo]): a file created on the primary is read from the
// secondary's read handler at once, before it synced (the handler reads
// it through from the primary: never a 404), then again with the write's
// Position, which the handler waits for and then serves from the local
// copy.
//
// [Operating geo]: https://github.com/geoframework/geo/blob/main/docs/operations.md
func readThrough(ctx context.Context, app *packagefile.App, sec *replicator.Secondary, primaryDB *sqlx.DB) error {
	h, err := replicator.NewReadHandler(sec, replicator.ReadHandlerConfig{
		Authorize:   func(*http.Request, string, int64) error { return nil }, // the demo serves everyone on loopback
		Wait:        true,
		WaitTimeout: readThroughWait,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.StripPrefix("/blobs", h), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()

	data := payload(1_000_003)
	id, err := app.AddFile(ctx, 1, "read-through", "1.0.0", "read-through.tgz", data)
	if err != nil {
		return err
	}
	url := fmt.Sprintf("http://%s/blobs/package_file/%d", ln.Addr(), id)
	get := func(position string) (string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return "", err
		}
		if position != "" {
			req.Header.Set(events.PositionHeader, position)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		switch {
		case err != nil:
			return "", err
		case resp.StatusCode != http.StatusOK:
			return "", fmt.Errorf("GET %s: %s", url, resp.Status)
		case !bytes.Equal(body, data):
			return "", errors.New("the secondary served other bytes than the primary's")
		}
		return resp.Header.Get(replicator.ReadSourceHeader), nil
	}
	start := time.Now()
	src, err := get("")
	if err != nil {
		return err
	}
	fmt.Printf("read on the secondary: file %d (%d bytes) created on the primary, read %.1f ms later: served from %s\n",
		id, len(data), float64(time.Since(start).Microseconds())/1000, src)
	pos, err := lastEvent(ctx, primaryDB, id)
	if err != nil {
		return err
	}
	start = time.Now()
	if src, err = get(pos); err != nil {
		return err
	}
	fmt.Printf("read on the secondary: the same file with %s: %s, after %.1f ms (waited for the write's sync)\n",
		events.PositionHeader+": "+pos, src, float64(time.Since(start).Microseconds())/1000)
	return nil
}

// lastEvent is the Position (text form) of file id's latest event: what
// Publish returned to the application inside its transaction.
func lastEvent(ctx context.Context, db *sqlx.DB, id int64) (string, error) {
	var xid string
	var eid int64
	err := db.QueryRowContext(ctx, `SELECT xid::text, id FROM geo_events WHERE replicable = 'package_file' AND model_id = $1 ORDER BY xid DESC, id DESC LIMIT 1`, id).Scan(&xid, &eid)
	if err != nil {
		return "", err
	}
	return xid + ":" + strconv.FormatInt(eid, 10), nil
}
