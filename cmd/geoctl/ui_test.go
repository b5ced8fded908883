package main

import (
	"bytes"
	"context"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator"
)

// lines is a writer that hands each line to a channel (the served URL)
// and keeps everything.
type lines struct {
	mu  sync.Mutex
	all bytes.Buffer
	ch  chan string
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all.Write(p)
	for _, s := range strings.SplitAfter(string(p), "\n") {
		if strings.HasSuffix(s, "\n") {
			select {
			case l.ch <- strings.TrimSpace(s):
			default:
			}
		}
	}
	return len(p), nil
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all.String()
}

var servingURL = regexp.MustCompile(`^geoctl ui: serving (http://\S+/) \((.*)\); Ctrl-C to stop$`)

// startUI runs `geoctl --database-url trackingURL ui` with flags in this
// process and returns the page's URL, the line's mode and a func that
// stops it and returns its exit code.
func startUI(t *testing.T, trackingURL string, flags ...string) (string, string, func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &lines{ch: make(chan string, 16)}
	errOut := &lines{ch: make(chan string, 16)}
	code := make(chan int, 1)
	args := append([]string{"--database-url", trackingURL, "ui", "--listen", "127.0.0.1:0"}, flags...)
	go func() { code <- run(ctx, args, out, errOut) }()
	var once sync.Once
	var exit int
	stop := func() int {
		once.Do(func() {
			cancel()
			exit = <-code
		})
		return exit
	}
	t.Cleanup(func() { stop() })
	select {
	case line := <-out.ch:
		m := servingURL.FindStringSubmatch(line)
		require.NotNil(t, m, "geoctl ui's first line: %q", line)
		return m[1], m[2], stop
	case c := <-code:
		t.Fatalf("geoctl ui exited %d: %s %s", c, out, errOut)
	case <-time.After(2 * time.Minute):
		t.Fatalf("geoctl ui printed no URL: %s %s", out, errOut)
	}
	return "", "", nil
}

func httpGet(t *testing.T, c *http.Client, u string, hdr ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	require.NoError(t, err)
	if len(hdr) == 2 {
		req.Host = hdr[1]
	}
	res, err := c.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(b)
}

// geoctl ui serves the status page against a tracking database alone:
// read-only by default (no action offered, a POST refused), with
// /status.json equal to geoctl status -o json, the health endpoints, and
// only loopback Host names on a loopback address; --allow-actions
// offers the actions behind the CSRF check; --primary-database-url adds
// the primary's checksums. An interrupt stops it with exit code 0.
func TestUI(t *testing.T) {
	ctx := context.Background()
	trackingURL := pg.NewDatabaseURL(t)
	primaryURL := pg.NewDatabaseURL(t)
	var stdout, stderr bytes.Buffer
	require.Equal(t, 0, run(ctx, []string{"--database-url", trackingURL, "migrate"}, &stdout, &stderr), stderr.String())
	require.Equal(t, 0, run(ctx, []string{"--database-url", primaryURL, "migrate", "--primary"}, &stdout, &stderr), stderr.String())
	tracking, err := sqlx.Open("postgres", trackingURL)
	require.NoError(t, err)
	defer tracking.Close()
	store, err := regstore.NewStore(tracking, regstore.Options{})
	require.NoError(t, err)
	ids := make([]int64, 200)
	for i := range ids {
		ids[i] = int64(i + 1)
	}
	_, err = store.InsertMissing(ctx, "item", ids)
	require.NoError(t, err)
	_, err = store.Heartbeat(ctx, registry.Process{Owner: "sec-a", Host: "host-a", PID: 42, StartedAt: time.Now(), Interval: time.Hour,
		Types: []string{"item"}, Roles: []string{replicator.RoleConsumer}, EventLag: &registry.ProcessEventLag{Seconds: 0.5, Events: 1}}, 0)
	require.NoError(t, err)

	base, mode, stop := startUI(t, trackingURL)
	require.Equal(t, "read-only; --allow-actions to act from it", mode)
	c := &http.Client{}
	code, page := httpGet(t, c, base)
	require.Equal(t, http.StatusOK, code, page)
	require.Contains(t, page, `id="t-item"`)
	require.Contains(t, page, `data-count="pending">200<`)
	require.Contains(t, page, "sec-a")
	require.NotContains(t, page, `<form method="post"`, "a read-only page offers no action")
	require.NotContains(t, page, "Primary checksums")
	res, err := c.PostForm(base, url.Values{"action": {"pause"}, "type": {"item"}})
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusForbidden, res.StatusCode)
	paused, err := store.Paused(ctx)
	require.NoError(t, err)
	require.Empty(t, paused)

	// /status.json is geoctl status -o json.
	code, js := httpGet(t, c, base+"status.json")
	require.Equal(t, http.StatusOK, code, js)
	stdout.Reset()
	require.Equal(t, 0, run(ctx, []string{"--database-url", trackingURL, "status", "-o", "json", "--top", "5"}, &stdout, &stderr), stderr.String())
	var fromPage, fromStatus replicator.Status
	require.NoError(t, json.Unmarshal([]byte(js), &fromPage))
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &fromStatus))
	for _, st := range []*replicator.Status{&fromPage, &fromStatus} {
		st.At = time.Time{}
		for i := range st.Types {
			st.Types[i].OldestPendingAgeSeconds = 0
		}
		for i := range st.Processes {
			st.Processes[i].HeartbeatAgeSeconds = 0
		}
	}
	require.Equal(t, fromStatus, fromPage)

	code, body := httpGet(t, c, base+"healthz")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok", body)
	code, body = httpGet(t, c, base+"readyz?verbose")
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "[+]tracking-database ok\n[+]consumer ok\n[+]event-lag ok\nreadyz check passed\n", body,
		"the live consumer's heartbeat says its lag")

	// DNS rebinding: another name for the loopback address is refused.
	code, body = httpGet(t, c, base, "Host", "evil.example:8080")
	require.Equal(t, http.StatusMisdirectedRequest, code, body)
	require.Contains(t, body, "loopback names only")
	u, err := url.Parse(base)
	require.NoError(t, err)
	code, _ = httpGet(t, c, base, "Host", "localhost:"+u.Port())
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, 0, stop(), "interrupted")

	// With --allow-actions and the primary's database.
	base, mode, stop = startUI(t, trackingURL, "--allow-actions", "--primary-database-url", primaryURL)
	require.Equal(t, "actions allowed to anyone who reaches it", mode)
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	bc := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	code, page = httpGet(t, bc, base)
	require.Equal(t, http.StatusOK, code, page)
	require.Contains(t, page, "Primary checksums")
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(page)
	require.NotNil(t, m, "the page offers actions")
	res, err = bc.PostForm(base, url.Values{"action": {"pause"}, "type": {"item"}})
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusForbidden, res.StatusCode, "no CSRF token")
	res, err = bc.PostForm(base, url.Values{"csrf": {html.UnescapeString(m[1])}, "action": {"pause"}, "type": {"item"}})
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusSeeOther, res.StatusCode)
	paused, err = store.Paused(ctx)
	require.NoError(t, err)
	require.Contains(t, paused, "item")
	require.Equal(t, 0, stop())
}
