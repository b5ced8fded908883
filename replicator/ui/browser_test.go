package ui_test

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/geotest"
	"github.com/geoframework/geo/internal/testtype"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/replicator/ui"
	"github.com/geoframework/geo/strategy"
)

// Browser tests: headless Chromium driven by chromedp against a real
// primary/secondary pair. They never skip silently: without Chromium they
// fail saying how to install it, unless GEO_SKIP_BROWSER=1 asks to skip
// them. GEO_UI_SCREENSHOTS=1 writes the screenshots to docs/img (the
// ones docs/operations.md shows) instead of a temporary directory.
const (
	envSkipBrowser = "GEO_SKIP_BROWSER"
	envScreenshots = "GEO_UI_SCREENSHOTS"
)

// The waits are tied to progress (a count, a state) as geotest.WaitFor
// has them; hangGuard bounds one browser step that cannot show progress.
const (
	stall     = time.Minute
	hangGuard = 2 * time.Minute
)

// chromiumNames are the executables tried, in order.
var chromiumNames = []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"}

// browser starts a headless Chromium for the test and returns the context
// of its first tab.
func browser(t *testing.T) context.Context {
	t.Helper()
	if os.Getenv(envSkipBrowser) == "1" {
		t.Skip(envSkipBrowser + "=1: the browser tests are skipped as asked")
	}
	var path string
	for _, name := range chromiumNames {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		t.Fatalf("no Chromium found (tried %s on PATH): the browser tests need it; install it with "+
			"`apt-get install -y chromium` (Debian), or set %s=1 to skip them explicitly", strings.Join(chromiumNames, ", "), envSkipBrowser)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // root in a container has no user namespace sandbox
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 800),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil { // starts the browser: no timeout on this context
		t.Fatalf("start Chromium (%s): %v", path, err)
	}
	return ctx
}

// do runs browser steps, failing the test after hangGuard.
func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, hangGuard)
	defer cancel()
	if err := chromedp.Do(sctx, steps...); err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, hangGuard)
	defer cancel()
	v, err := chromedp.Run(sctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("browser: evaluate %s: %v", expr, err)
	}
	return v
}

// click clicks the first element matching a CSS selector, then runs the
// steps that wait for its effect. The page's live refresh may replace the
// element between the query and the click (the page's script holds off
// while a pointer is down, not before): a click that fails so is tried
// again, before anything was pressed.
func click(t *testing.T, ctx context.Context, what, css string, then ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	var err error
	for range 5 {
		sctx, cancel := context.WithTimeout(ctx, hangGuard)
		err = chromedp.Do(sctx, chromedp.Click(chromedp.CSS(css), chromedp.NodeVisible))
		cancel()
		if err == nil {
			do(t, ctx, what, then...)
			return
		}
		t.Logf("browser: %s: %v; again", what, err)
	}
	t.Fatalf("browser: %s: %v", what, err)
}

// text is the text of the first element matching a CSS selector, "" when
// there is none: it never waits for one.
func text(t *testing.T, ctx context.Context, css string) string {
	t.Helper()
	return eval[string](t, ctx, fmt.Sprintf(`(document.querySelector(%q)?.textContent ?? '').trim()`, css))
}

// The page in a real browser against a running primary/secondary pair:
// counts change live (the script, no reload) as the backfill and then
// events sync records; Pause and Resume change the registry; a failed
// record is resynced from its detail page, reached from its failure
// reason; screenshots at 1280×800 and 390×844 (no horizontal scrolling on
// the phone); HTML in a failure text stays text.
func TestBrowser(t *testing.T) {
	ctx := context.Background()
	bctx := browser(t)

	var items *testtype.Type
	// The primary's verification starts once the records exist, so its
	// first pass checksums them all (the next is 15 minutes away).
	w := geotest.NewWorld(t, geotest.WorldConfig{
		Server: pg, ManualPrimary: true,
		Setup: func(ctx context.Context, db *sqlx.DB) error {
			_, err := db.ExecContext(ctx, testtype.Schema("items"))
			return err
		},
		Strategies: func(db *sqlx.DB) []strategy.BlobStrategy {
			items = &testtype.Type{TypeName: "item", Table: "items", DB: db}
			return []strategy.BlobStrategy{items}
		},
	})
	app := &testtype.App{Type: items, Storage: w.PrimaryStorage, Publisher: w.Primary.Publisher()}
	payload := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 1000+37*i) }
	ids, err := app.BulkCreate(ctx, 40, 0, payload)
	require.NoError(t, err)
	// One record's file is gone on the primary: it fails, missing there.
	missing := ids[6]
	missingKey, err := items.BlobKey(ctx, missing)
	require.NoError(t, err)
	require.NoError(t, w.PrimaryStorage.Remove(ctx, missingKey))
	pctx, stopPrimary := context.WithCancel(context.Background())
	primaryDone := make(chan error, 1)
	go func() { primaryDone <- w.Primary.Run(pctx) }()
	t.Cleanup(func() {
		stopPrimary()
		if err := <-primaryDone; err != nil {
			t.Errorf("primary: %v", err)
		}
	})

	cfg := w.SecondaryConfig(&testtype.Type{TypeName: "item", Table: "items", DB: w.PrimaryDB})
	cfg.HeartbeatInterval = 500 * time.Millisecond
	sec, err := replicator.NewSecondary(cfg)
	require.NoError(t, err)
	h, err := ui.New(ui.Config{
		Tracking: w.TrackingDB, Primary: w.PrimaryDB, Authorize: allow, Waker: sec,
		RefreshInterval: 300 * time.Millisecond, Title: "geo · secondary-1",
	})
	require.NoError(t, err)
	base := serve(t, h)
	store, err := registry.NewStore(w.TrackingDB, registry.Options{})
	require.NoError(t, err)

	// Before the secondary runs: nothing tracked.
	do(t, bctx, "load the page", chromedp.Navigate(base), chromedp.WaitVisible(chromedp.CSS("#h-types")))
	require.Contains(t, text(t, bctx, "#h-types + p"), "No type is tracked yet")
	require.Equal(t, "unhealthy", text(t, bctx, ".verdict"))
	// A mark that a reload would wipe: the counts below change without one.
	do(t, bctx, "mark the page", chromedp.Evaluate[chromedp.Void](`window.geoMark = 'same page'`))

	rctx, stop := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- sec.Run(rctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-runDone; err != nil {
			t.Errorf("secondary: %v", err)
		}
	})

	seen := map[string]bool{}
	waitCounts := func(what, synced, failed string) {
		t.Helper()
		geotest.WaitFor(t, stall, what, func() (bool, string) {
			s, f := text(t, bctx, `#t-item [data-count="synced"]`), text(t, bctx, `#t-item [data-count="failed"]`)
			seen[s] = true
			c, err := store.Counts(ctx)
			require.NoError(t, err)
			return s == synced && f == failed, fmt.Sprintf("synced %q, failed %q on the page; the registry: %+v", s, f, c["item"].Counts)
		})
	}
	waitCounts("the backfill's counts on the page", "39", "1")
	require.Equal(t, "same page", eval[string](t, bctx, `window.geoMark ?? 'reloaded'`), "the counts came without a reload")
	for i := range 5 {
		_, err := app.Create(ctx, 0, payload(100+i))
		require.NoError(t, err)
	}
	waitCounts("the events' syncs on the page", "44", "1")
	require.Equal(t, "same page", eval[string](t, bctx, `window.geoMark ?? 'reloaded'`))
	t.Logf("synced counts seen on the page: %v", seen)
	geotest.WaitFor(t, stall, "the secondary process alive on the page, holding the consumer", func() (bool, string) {
		s := text(t, bctx, "table.processes tbody")
		return strings.Contains(s, "alive") && strings.Contains(s, "consumer"), s
	})

	// Pause, then resume.
	isPaused := func() bool {
		p, err := store.Paused(ctx)
		require.NoError(t, err)
		_, ok := p["item"]
		return ok
	}
	require.False(t, isPaused())
	click(t, bctx, "click Pause", `#t-item button[value="pause"]`, chromedp.WaitVisible(chromedp.CSS(`#t-item [data-state="paused"]`)))
	require.True(t, isPaused(), "the registry says item is paused")
	require.Contains(t, text(t, bctx, ".flash"), "item is paused")
	click(t, bctx, "click Resume", `#t-item button[value="resume"]`, chromedp.WaitVisible(chromedp.CSS(`#t-item [data-state="active"]`)))
	require.False(t, isPaused(), "the registry says item is resumed")

	// Screenshots, with a failure on show.
	geotest.WaitFor(t, stall, "the primary's checksums on the page", func() (bool, string) {
		s, f := text(t, bctx, `#c-item [data-count="succeeded"]`), text(t, bctx, `#c-item [data-count="failed"]`)
		return s == "44" && f == "1", fmt.Sprintf("checksummed %q, failed %q", s, f)
	})
	shots(t, bctx, base)

	// Resync the failed record from its page, reached from its reason,
	// once its file is back on the primary.
	back, err := w.PrimaryStorage.Create(ctx, missingKey, nil)
	require.NoError(t, err)
	_, err = back.Write(payload(6))
	require.NoError(t, err)
	require.NoError(t, back.Commit(ctx))
	do(t, bctx, "open the status", chromedp.Navigate(base), chromedp.WaitVisible(chromedp.CSS("#t-item ol.reasons-list a")))
	require.Contains(t, text(t, bctx, "#t-item ol.reasons-list"), "1 row")
	click(t, bctx, "click the failure reason", "#t-item ol.reasons-list a", chromedp.WaitVisible(chromedp.CSS("table.rows")))
	recordLink := fmt.Sprintf(`table.rows a[href$="records/item/%d"]`, missing)
	click(t, bctx, "click the record", recordLink, chromedp.WaitVisible(chromedp.CSS("#state")))
	require.Equal(t, "failed", text(t, bctx, "#state"))
	require.Contains(t, text(t, bctx, "#last-failure"), "missing")
	row, err := store.Get(ctx, "item", missing)
	require.NoError(t, err)
	require.Equal(t, registry.StateFailed, row.State)
	require.True(t, row.MissingOnPrimary)
	click(t, bctx, "click Resync", `button[value="resync"]`, chromedp.WaitVisible(chromedp.CSS(".flash")))
	require.Contains(t, text(t, bctx, ".flash"), fmt.Sprintf("item/%d is pending", missing))
	geotest.WaitFor(t, stall, "the resynced record synced, on its page", func() (bool, string) {
		s := text(t, bctx, "#state")
		return s == "synced", "state " + s
	})
	row, err = store.Get(ctx, "item", missing)
	require.NoError(t, err)
	require.Equal(t, registry.StateSynced, row.State)
	require.Zero(t, row.RetryCount)
	require.False(t, row.MissingOnPrimary)

	// A failure text with HTML in it is shown as text.
	_, err = w.TrackingDB.ExecContext(ctx, `INSERT INTO geo_registry (replicable, model_id, state, retry_at, last_sync_failure)
VALUES ('evil', 1, 3, now() + interval '1 hour', $1)`, `primary answered 500: <img src=x onerror="window.geoPwned=1"><b id=pwned>bold</b>`)
	require.NoError(t, err)
	do(t, bctx, "open the evil record", chromedp.Navigate(base+"records/evil/1"), chromedp.WaitVisible(chromedp.CSS("#last-failure")))
	require.Contains(t, text(t, bctx, "#last-failure"), `<img src=x onerror="window.geoPwned=1">`)
	require.Equal(t, 0, eval[int](t, bctx, `document.querySelectorAll('#pwned, img[src="x"]').length`))
	require.Equal(t, "no", eval[string](t, bctx, `window.geoPwned ? 'yes' : 'no'`))
}

// shots takes the overview's screenshots at 1280×800 and 390×844 and
// checks that the phone's page does not scroll sideways.
func shots(t *testing.T, ctx context.Context, base string) {
	t.Helper()
	dir := t.TempDir()
	if os.Getenv(envScreenshots) == "1" {
		dir = filepath.Join("..", "..", "docs", "img")
		require.NoError(t, os.MkdirAll(dir, 0o755))
	}
	for _, s := range []struct {
		name          string
		width, height int64
		opts          []chromedp.EmulateViewportOption
	}{
		{"ui-desktop.png", 1280, 800, nil},
		{"ui-mobile.png", 390, 844, []chromedp.EmulateViewportOption{chromedp.EmulateMobile, chromedp.EmulateTouch, chromedp.EmulatePortrait}},
	} {
		do(t, ctx, "viewport "+s.name, chromedp.EmulateViewport(s.width, s.height, s.opts...),
			chromedp.Navigate(base), chromedp.WaitVisible(chromedp.CSS("#t-item")))
		// The live refresh keeps running: wait for one after the load, so
		// the shot is a settled page.
		geotest.WaitFor(t, stall, "a live refresh before the screenshot", func() (bool, string) {
			return eval[bool](t, ctx, `!!document.getElementById('live').dataset.refreshed`), "not refreshed yet"
		})
		if s.width < 500 {
			sw := eval[int64](t, ctx, `document.documentElement.scrollWidth`)
			require.LessOrEqual(t, sw, s.width, "%s: the page scrolls sideways (%d px wide)", s.name, sw)
		}
		sctx, cancel := context.WithTimeout(ctx, hangGuard)
		img, err := chromedp.Run(sctx, chromedp.CaptureScreenshot())
		cancel()
		require.NoError(t, err)
		cfg, err := png.DecodeConfig(bytes.NewReader(img))
		require.NoError(t, err)
		require.Equal(t, [2]int{int(s.width), int(s.height)}, [2]int{cfg.Width, cfg.Height}, "%s size", s.name)
		require.NoError(t, os.WriteFile(filepath.Join(dir, s.name), img, 0o644))
		t.Logf("screenshot %s", filepath.Join(dir, s.name))
	}
	do(t, ctx, "reset the viewport", chromedp.EmulateReset())
}
