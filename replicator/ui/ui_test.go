package ui_test

import (
	"context"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/geotest/pgtest"
	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/replicator/ui"
)

var pg = pgtest.New(pgtest.Options{})

func TestMain(m *testing.M) { os.Exit(pg.Run(m)) }

// allow is an Authorize hook that lets everyone act.
func allow(*http.Request) bool { return true }

// trackingDB returns a fresh migrated tracking database.
func trackingDB(t testing.TB) *sqlx.DB {
	t.Helper()
	db := pg.NewDatabase(t)
	require.NoError(t, registry.MigrateTracking(context.Background(), db))
	return db
}

// fill inserts item rows 1..n: every tenth failed (odd tens answered 503,
// even ones a reset connection), id 5 missing on the primary, the rest
// synced and verified.
func fill(t testing.TB, db *sqlx.DB, n int) {
	t.Helper()
	_, err := db.Exec(`
INSERT INTO geo_registry (replicable, model_id, state, retry_count, retry_at, last_sync_failure, missing_on_primary,
  blob_key, blob_size, last_synced_at, verification_state, verification_checksum, verified_at)
SELECT 'item', g,
  CASE WHEN g % 10 = 5 THEN 3 ELSE 2 END,
  CASE WHEN g % 10 = 5 THEN 2 ELSE 0 END,
  CASE WHEN g % 10 = 5 THEN now() + interval '1 hour' END,
  CASE WHEN g % 20 = 5 THEN 'primary answered 503 for item/' || g
       WHEN g % 10 = 5 THEN 'read tcp 127.0.0.1:' || (40000 + g) || '->127.0.0.1:8080: connection reset by peer' END,
  g = 5,
  'items/' || g, 1000 + g,
  CASE WHEN g % 10 <> 5 THEN now() END,
  CASE WHEN g % 10 <> 5 THEN 2 ELSE 0 END,
  CASE WHEN g % 10 <> 5 THEN md5(g::text) || md5(g::text) END,
  CASE WHEN g % 10 <> 5 THEN now() END
FROM generate_series(1, $1::bigint) g`, n)
	require.NoError(t, err)
}

// serve mounts h under /geo/ as a host would, on a loopback server.
func serve(t testing.TB, h http.Handler) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/geo/", http.StripPrefix("/geo", h))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL + "/geo/"
}

// client is a browser stand-in: it keeps cookies and follows no redirect.
type client struct {
	t *testing.T
	c *http.Client
}

func newClient(t *testing.T) *client {
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	return &client{t: t, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

func (c *client) get(u string) (int, string) {
	c.t.Helper()
	res, err := c.c.Get(u)
	require.NoError(c.t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(c.t, err)
	return res.StatusCode, string(b)
}

func (c *client) post(u string, form url.Values, hdr ...string) (int, string, string) {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	require.NoError(c.t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := c.c.Do(req)
	require.NoError(c.t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(c.t, err)
	return res.StatusCode, string(b), res.Header.Get("Location")
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// token loads page u and returns the CSRF token of its forms.
func (c *client) token(u string) string {
	c.t.Helper()
	code, body := c.get(u)
	require.Equal(c.t, http.StatusOK, code, body)
	m := csrfField.FindStringSubmatch(body)
	require.NotNil(c.t, m, "a form with a CSRF token in %s", u)
	return html.UnescapeString(m[1])
}

// snapshot is every registry row and pause, to see that nothing changed.
func snapshot(t *testing.T, db *sqlx.DB) string {
	t.Helper()
	var rows []string
	require.NoError(t, db.Select(&rows, `SELECT replicable || '/' || model_id || ':' || state || ',' || seq || ',' ||
  verification_state || ',' || updated_at FROM geo_registry ORDER BY 1`))
	var paused []string
	require.NoError(t, db.Select(&paused, `SELECT replicable FROM geo_paused ORDER BY 1`))
	return strings.Join(rows, "\n") + "\npaused: " + strings.Join(paused, ",")
}

// New refuses a handler that could act without an Authorize hook, and
// bad fields, naming them.
func TestNewValidates(t *testing.T) {
	db := trackingDB(t)
	for _, tc := range []struct {
		cfg  ui.Config
		want string
		is   error
	}{
		{ui.Config{}, "no database", ui.ErrNoDatabase},
		{ui.Config{Tracking: db}, "Config.Authorize", ui.ErrNoAuthorize},
		{ui.Config{Tracking: db, Primary: db}, "Config.Authorize", ui.ErrNoAuthorize},
		{ui.Config{Tracking: db, ReadOnly: true, RefreshInterval: time.Millisecond}, "Config.RefreshInterval", nil},
		{ui.Config{Tracking: db, ReadOnly: true, PageSize: ui.PageSizeMax + 1}, "Config.PageSize", nil},
		{ui.Config{Tracking: db, ReadOnly: true, QueryTimeout: -time.Second}, "Config.QueryTimeout", nil},
		{ui.Config{Tracking: db, Authorize: allow, CSRFKey: []byte("short")}, "Config.CSRFKey", nil},
	} {
		_, err := ui.New(tc.cfg)
		require.ErrorContains(t, err, tc.want)
		if tc.is != nil {
			require.ErrorIs(t, err, tc.is)
		}
	}
	for _, cfg := range []ui.Config{
		{Tracking: db, ReadOnly: true},
		{Tracking: db, Authorize: allow},
		{Primary: db}, // the primary's page has no action
	} {
		_, err := ui.New(cfg)
		require.NoError(t, err)
	}
}

// A POST without the CSRF token of its cookie, with a forged or foreign
// token, from another origin, refused by the Authorize hook, or to a
// read-only page gets 403 Forbidden and changes nothing; the page shows
// no action to whom the hook refuses. With all of that right, the action
// runs and redirects back.
func TestActionsNeedCSRFTokenAndAuthorization(t *testing.T) {
	db := trackingDB(t)
	fill(t, db, 100)
	var refuse bool
	h, err := ui.New(ui.Config{Tracking: db, Authorize: func(r *http.Request) bool { return !refuse }})
	require.NoError(t, err)
	base := serve(t, h)
	other, err := ui.New(ui.Config{Tracking: db, Authorize: allow})
	require.NoError(t, err)
	otherBase := serve(t, other)
	ro, err := ui.New(ui.Config{Tracking: db, ReadOnly: true})
	require.NoError(t, err)
	roBase := serve(t, ro)

	c := newClient(t)
	tok := c.token(base)
	record := base + "records/item/5"
	before := snapshot(t, db)
	forbidden := func(what, u string, form url.Values, hdr ...string) {
		t.Helper()
		code, body, _ := c.post(u, form, hdr...)
		require.Equal(t, http.StatusForbidden, code, "%s: %s", what, body)
		require.Equal(t, before, snapshot(t, db), "%s changed the registry", what)
	}
	pause := url.Values{"action": {"pause"}, "type": {"item"}}
	withTok := func(v url.Values, tok string) url.Values {
		out := url.Values{"csrf": {tok}}
		for k, vs := range v {
			out[k] = vs
		}
		return out
	}
	forbidden("pause without a token", base, pause)
	forbidden("resync without a token", record, url.Values{"action": {"resync"}})
	forbidden("pause with a forged token", base, withTok(pause, "AAAA"+tok[4:]))
	forbidden("resync-all with an empty token", base, withTok(url.Values{"action": {"resync-all"}, "type": {"item"}}, ""))
	// A token of another handler (another key) for the same cookie.
	c2 := newClient(t)
	otherTok := c2.token(otherBase)
	forbidden("pause with another handler's token", base, withTok(pause, otherTok))
	// The right token without its cookie.
	fresh := newClient(t)
	code, body, _ := fresh.post(base, withTok(pause, tok))
	require.Equal(t, http.StatusForbidden, code, "a token without its cookie: %s", body)
	require.Equal(t, before, snapshot(t, db))
	// A cross-site form (the browser says so) with a valid token.
	forbidden("a cross-site POST", base, withTok(pause, tok), "Sec-Fetch-Site", "cross-site")
	forbidden("a POST from another origin", base, withTok(pause, tok), "Origin", "https://evil.example")
	// Refused by the hook, with everything else right; and the page
	// shows no action then.
	refuse = true
	forbidden("pause refused by Authorize", base, withTok(pause, tok))
	forbidden("resync refused by Authorize", record, withTok(url.Values{"action": {"resync"}}, tok))
	code, page := c.get(base)
	require.Equal(t, http.StatusOK, code)
	require.NotContains(t, page, `value="pause"`, "actions shown to a request Authorize refuses")
	require.NotContains(t, page, `name="csrf"`)
	refuse = false
	// Read-only: no action shown, every POST refused.
	c3 := newClient(t)
	code, page = c3.get(roBase)
	require.Equal(t, http.StatusOK, code)
	require.NotContains(t, page, `<form method="post"`)
	code, _, _ = c3.post(roBase, pause)
	require.Equal(t, http.StatusForbidden, code)
	require.Equal(t, before, snapshot(t, db))

	// All right: the action runs and redirects back to the page, which
	// says what it did.
	code, body, loc := c.post(base, withTok(pause, tok))
	require.Equal(t, http.StatusSeeOther, code, body)
	require.Equal(t, "?done=pause&n=0&type=item", loc)
	paused, err := registry.NewStore(db, registry.Options{})
	require.NoError(t, err)
	p, err := paused.Paused(context.Background())
	require.NoError(t, err)
	require.Contains(t, p, "item")
	_, page = c.get(base + loc)
	require.Contains(t, page, "item is paused")
	code, body, loc = c.post(record, withTok(url.Values{"action": {"resync"}}, tok))
	require.Equal(t, http.StatusSeeOther, code, body)
	require.Equal(t, "?done=resync&id=5&n=1&type=item", loc)
	row, err := paused.Get(context.Background(), "item", 5)
	require.NoError(t, err)
	require.Equal(t, registry.StatePending, row.State)
	// An unknown type or action is refused, a bad record is not found.
	code, _, _ = c.post(base, withTok(url.Values{"action": {"pause"}, "type": {"nosuch"}}, tok))
	require.Equal(t, http.StatusNotFound, code)
	code, _, _ = c.post(base, withTok(url.Values{"action": {"explode"}, "type": {"item"}}, tok))
	require.Equal(t, http.StatusBadRequest, code)
	code, _, _ = c.post(base+"records/item/x", withTok(url.Values{"action": {"resync"}}, tok))
	require.Equal(t, http.StatusNotFound, code)
}

// Failure texts and storage keys come from outside (a primary's error
// answer, an adopter's key layout): every page escapes them, in text and
// in attributes, and the reason's link carries it encoded.
func TestHTMLInjectionIsEscaped(t *testing.T) {
	db := trackingDB(t)
	const evil = `<script>alert("x")</script><img src=x onerror=alert(1)>"'&`
	_, err := db.Exec(`
INSERT INTO geo_registry (replicable, model_id, state, retry_at, last_sync_failure, blob_key)
VALUES ('item', 7, 3, now(), $1, $2), ('item', 8, 2, NULL, NULL, $2)`, "primary answered 500: "+evil, `items/"><svg onload=alert(2)>/7`)
	require.NoError(t, err)
	_, err = db.Exec(`UPDATE geo_registry SET verification_state = 3, verification_failure = $1 WHERE model_id = 8`, "checksum: "+evil)
	require.NoError(t, err)
	h, err := ui.New(ui.Config{Tracking: db, Authorize: allow})
	require.NoError(t, err)
	base := serve(t, h)
	c := newClient(t)
	_, overview := c.get(base)
	require.Contains(t, overview, "Top failure reasons")
	m := regexp.MustCompile(`href="\./(failures\?[^"]*kind=sync[^"]*)"`).FindStringSubmatch(overview)
	require.NotNil(t, m, "a link to the reason's records")
	pages := map[string]string{"overview": overview}
	for name, u := range map[string]string{
		"reason":       base + html.UnescapeString(m[1]),
		"failures":     base + "failures?type=item",
		"verification": base + "failures?type=item&kind=verification",
		"record 7":     base + "records/item/7",
		"record 8":     base + "records/item/8",
	} {
		code, body := c.get(u)
		require.Equal(t, http.StatusOK, code, "%s: %s", name, body)
		pages[name] = body
	}
	require.Contains(t, pages["reason"], "item/7", "the reason's page lists the record")
	for name, body := range pages {
		for _, raw := range []string{"<script>alert", "<img src=x", "<svg onload", `"><svg`} {
			require.NotContains(t, body, raw, "%s: unescaped", name)
		}
	}
	require.Contains(t, pages["record 7"], "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;&#34;&#39;&amp;")
	require.Contains(t, pages["record 8"], "items/&#34;&gt;&lt;svg onload=alert(2)&gt;/7")
	require.Contains(t, pages["verification"], "checksum: &lt;script&gt;")
}

// The pages render, under a prefix, from a tracking database alone:
// counts, failure reasons linked to their records, the paused state, a
// process's heartbeat with its backfill and lag; failed rows are paged.
func TestPages(t *testing.T) {
	ctx := context.Background()
	db := trackingDB(t)
	fill(t, db, 1000)
	rs, err := regstore.NewStore(db, regstore.Options{})
	require.NoError(t, err)
	_, err = rs.Heartbeat(ctx, registry.Process{Owner: "sec-a", Host: "host-a", PID: 42, Version: "geo test",
		StartedAt: time.Now().Add(-time.Hour), Interval: time.Hour,
		Types: []string{"item"}, Roles: []string{replicator.RoleConsumer, replicator.RoleConsistency},
		InFlight: map[string]int{"item": 3},
		Backfill: map[string]registry.ProcessBackfill{"item": {Running: true, PassStarted: time.Now(), Done: 400, Total: 1000, Rate: 100, ETASeconds: 190}},
		EventLag: &registry.ProcessEventLag{Seconds: 1.5, Events: 12},
	}, 0)
	require.NoError(t, err)
	require.NoError(t, rs.Pause(ctx, "item"))
	h, err := ui.New(ui.Config{Tracking: db, ReadOnly: true, PageSize: 30, Title: "geo eu-west"})
	require.NoError(t, err)
	base := serve(t, h)
	c := newClient(t)
	code, page := c.get(base)
	require.Equal(t, http.StatusOK, code, page)
	for _, want := range []string{
		"<title>Replication status · geo eu-west</title>",
		`href="./static/style.css"`,
		`data-count="synced">900<`, `data-count="failed">100<`, `data-count="missing">1<`, `data-count="verified">900<`,
		`data-state="paused"`, "Paused since",
		"400 of 1,000 (40.0%)", "ETA 3m10s",
		"1.5s, 12 events", "by the consumer (its last heartbeat)",
		"sec-a", "host-a", "consumer, consistency",
		"primary answered 503 for item/N", "50 rows", "Counted over every failed row.",
	} {
		require.Contains(t, page, want)
	}
	require.Equal(t, "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
		mustHead(t, base).Get("Content-Security-Policy"))

	// The reason's link lists exactly its 50 records, in two pages.
	m := regexp.MustCompile(`href="\./(failures\?kind=sync&amp;reason=primary[^"]*)"`).FindStringSubmatch(page)
	require.NotNil(t, m)
	u := base + html.UnescapeString(m[1])
	var seen []string
	for range 3 {
		code, list := c.get(u)
		require.Equal(t, http.StatusOK, code, list)
		for _, r := range regexp.MustCompile(`href="\./records/item/(\d+)"`).FindAllStringSubmatch(list, -1) {
			seen = append(seen, r[1])
		}
		next := regexp.MustCompile(`href="\./(failures\?[^"]*)" rel="next"`).FindStringSubmatch(list)
		if next == nil {
			break
		}
		u = base + html.UnescapeString(next[1])
	}
	require.Len(t, seen, 50)
	require.Equal(t, "5", seen[0])
	require.Equal(t, "985", seen[49])

	// The record's detail, from the failures list's link.
	code, rec := c.get(base + "records/item/5")
	require.Equal(t, http.StatusOK, code, rec)
	for _, want := range []string{`data-state="failed"`, "(missing on primary)", `id="retries">2<`, "items/5", "primary answered 503 for item/5", "type paused", `href="../../"`} {
		require.Contains(t, rec, want)
	}
	code, rec = c.get(base + "records/item/1")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, rec, "c4ca4238a0b923820dcc509a6f75849bc4ca4238a0b923820dcc509a6f75849b", "the local checksum")
	code, _ = c.get(base + "records/item/100000")
	require.Equal(t, http.StatusNotFound, code)
	code, _ = c.get(base + "records/Bad-Type/1")
	require.Equal(t, http.StatusNotFound, code)
	res, err := c.c.Get(base + "record?type=item&id=+42")
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusSeeOther, res.StatusCode)
	require.Equal(t, "records/item/42", res.Header.Get("Location"))

	// Every failed row, paged by TYPE:ID.
	code, all := c.get(base + "failures?type=item")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, all, `href="./failures?after=item%3A295&amp;type=item" rel="next"`)

	// Assets are embedded.
	code, css := c.get(base + "static/style.css")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, css, "--verified")
	code, js := c.get(base + "static/live.js")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, js, "replaceChildren")
}

func mustHead(t *testing.T, u string) http.Header {
	t.Helper()
	res, err := http.Head(u)
	require.NoError(t, err)
	res.Body.Close()
	return res.Header
}

// /status.json is geoctl status -o json's report (replicator.Status),
// snake_case throughout.
// A type with more failed rows than the failure sample says its reasons
// were counted over a sample, and of how many: the page said "Counted over
// the most recently failed rows" whatever the numbers, so a sample's
// counts read as totals.
func TestFailureReasonsSayWhenSampled(t *testing.T) {
	t.Parallel()
	db := trackingDB(t)
	fill(t, db, 100) // 10 failed: 5 of each reason
	h, err := ui.New(ui.Config{Tracking: db, ReadOnly: true, Status: replicator.StatusOptions{FailureSample: 4}})
	require.NoError(t, err)
	code, page := newClient(t).get(serve(t, h))
	require.Equal(t, http.StatusOK, code, page)
	require.Contains(t, page, "Counted over a sample: the 4 most recently failed rows of each kind, of 10 failed; "+
		"the counts are the sample's, not totals.")
	require.NotContains(t, page, "Counted over every failed row.")
	var sum int
	for _, m := range regexp.MustCompile(`<span class="count">(\d+) rows?</span>`).FindAllStringSubmatch(page, -1) {
		n, err := strconv.Atoi(m[1])
		require.NoError(t, err)
		sum += n
	}
	require.Equal(t, 4, sum, "the reasons count the sample's rows")
}

func TestStatusJSON(t *testing.T) {
	ctx := context.Background()
	db := trackingDB(t)
	fill(t, db, 100)
	h, err := ui.New(ui.Config{Tracking: db, ReadOnly: true})
	require.NoError(t, err)
	base := serve(t, h)
	res, err := http.Get(base + "status.json")
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Equal(t, "application/json", res.Header.Get("Content-Type"))
	raw, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	var got replicator.Status
	require.NoError(t, json.Unmarshal(raw, &got))
	want, err := replicator.ReadStatus(ctx, db, nil, replicator.StatusOptions{})
	require.NoError(t, err)
	got.At, want.At = time.Time{}, time.Time{}
	for i := range want.Types {
		got.Types[i].OldestPendingAgeSeconds, want.Types[i].OldestPendingAgeSeconds = 0, 0
	}
	require.Equal(t, want, got)
	var m any
	require.NoError(t, json.Unmarshal(raw, &m))
	snake := regexp.MustCompile(`^[a-z]+(_[a-z0-9]+)*$`)
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				require.Regexp(t, snake, k, "JSON name at %s", path)
				walk(path+"."+k, e)
			}
		case []any:
			for _, e := range v {
				walk(path+"[]", e)
			}
		}
	}
	walk("", m)
	require.Contains(t, string(raw), `"missing_on_primary": 1`)

	// The primary's page has no status report.
	prim, err := ui.New(ui.Config{Primary: db})
	require.NoError(t, err)
	res, err = http.Get(serve(t, prim) + "status.json")
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusNotFound, res.StatusCode)
}

// /healthz is alive whatever the databases say; /readyz fails, listing
// its checks, until a live process holds the event consumer with a lag
// under ReadyMaxEventLag, and when a database is unreachable; single
// checks and exclusions work as controller-runtime's do.
func TestHealthEndpoints(t *testing.T) {
	ctx := context.Background()
	db := trackingDB(t)
	get := func(u string) (int, string) {
		t.Helper()
		res, err := http.Get(u)
		require.NoError(t, err)
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		return res.StatusCode, string(b)
	}
	// One database as both sides: the primary's outbox beside the
	// tracking tables.
	require.NoError(t, registry.MigratePrimary(ctx, db))
	h, err := ui.New(ui.Config{Tracking: db, Primary: db, ReadOnly: true, ReadyMaxEventLag: 10 * time.Second})
	require.NoError(t, err)
	base := serve(t, h)
	code, body := get(base + "healthz")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok", body)
	code, body = get(base + "healthz?verbose")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "[+]ping ok\nhealthz check passed\n", body)

	code, body = get(base + "readyz")
	require.Equal(t, http.StatusServiceUnavailable, code, body)
	require.Contains(t, body, "[+]tracking-database ok\n[+]primary-database ok\n[-]consumer failed: no live secondary process holds the event consumer (0 processes alive)\n[-]event-lag failed:")
	require.True(t, strings.HasSuffix(body, "readyz check failed\n"), body)

	rs, err := regstore.NewStore(db, regstore.Options{})
	require.NoError(t, err)
	beat := func(lag float64) {
		t.Helper()
		_, err := rs.Heartbeat(ctx, registry.Process{Owner: "sec", Host: "h", PID: 1, StartedAt: time.Now(), Interval: time.Hour,
			Roles: []string{replicator.RoleConsumer}, EventLag: &registry.ProcessEventLag{Seconds: lag, Events: 3}}, 0)
		require.NoError(t, err)
	}
	// With the primary, the lag is measured there from the saved cursor:
	// a cursor at the outbox's end is no lag.
	_, err = db.Exec(`INSERT INTO geo_event_cursor (consumer, xid, id, updated_at) VALUES ('default', '0', 0, now())`)
	require.NoError(t, err)
	beat(0.5)
	code, body = get(base + "readyz")
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "ok", body)
	code, body = get(base + "readyz?verbose")
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "[+]tracking-database ok\n[+]primary-database ok\n[+]consumer ok\n[+]event-lag ok\nreadyz check passed\n", body)

	// Without the primary, the lag is the consumer's heartbeat's.
	hb, err := ui.New(ui.Config{Tracking: db, ReadOnly: true, ReadyMaxEventLag: 10 * time.Second})
	require.NoError(t, err)
	hbBase := serve(t, hb)
	code, body = get(hbBase + "readyz")
	require.Equal(t, http.StatusOK, code, body)
	beat(60)
	code, body = get(hbBase + "readyz")
	require.Equal(t, http.StatusServiceUnavailable, code, body)
	require.Contains(t, body, "[-]event-lag failed: event lag 1m0s (3 events) exceeds 10s")
	code, body = get(hbBase + "readyz?exclude=event-lag")
	require.Equal(t, http.StatusOK, code, body)
	code, body = get(hbBase + "readyz/consumer")
	require.Equal(t, http.StatusOK, code, body)
	code, _ = get(hbBase + "readyz/event-lag")
	require.Equal(t, http.StatusServiceUnavailable, code)
	code, _ = get(hbBase + "readyz/nosuch")
	require.Equal(t, http.StatusNotFound, code)

	// An unreachable tracking database: not ready, still alive, and the
	// page says why.
	bad, err := sqlx.Open("postgres", "postgres://nobody@127.0.0.1:1/x?sslmode=disable&connect_timeout=2")
	require.NoError(t, err)
	defer bad.Close()
	down, err := ui.New(ui.Config{Tracking: bad, ReadOnly: true, QueryTimeout: 5 * time.Second})
	require.NoError(t, err)
	downBase := serve(t, down)
	code, body = get(downBase + "readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "[-]tracking-database failed:")
	code, _ = get(downBase + "healthz")
	require.Equal(t, http.StatusOK, code)
	code, body = get(downBase)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "The tracking database could not be read")
	code, _ = get(downBase + "status.json")
	require.Equal(t, http.StatusServiceUnavailable, code)
}
