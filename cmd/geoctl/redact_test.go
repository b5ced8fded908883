package main

import (
	"bytes"
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/geoframework/geo/internal/regstore"
)

// pwForms are the ways a password can appear in a message: raw and
// percent-encoded as a URL's userinfo or query would carry it.
func pwForms(pw string) []string {
	return []string{pw, url.QueryEscape(pw), url.PathEscape(pw), url.UserPassword("u", pw).String()[2:]}
}

func requireNoPassword(t *testing.T, where, out string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		for _, f := range pwForms(s) {
			if f != "" && strings.Contains(out, f) {
				t.Errorf("%s shows the password %q:\n%s", where, s, out)
			}
		}
	}
}

// TestRedactText: every form of password in free text is hidden, and the
// rest of the text (user, host, other parameters) stays readable.
func TestRedactText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://u:pw@h/db", "postgres://u:xxxxx@h/db"},
		{"postgres://u@h/db?password=pw", "postgres://u@h/db?password=xxxxx"},
		{"postgres://u@h/db?sslmode=disable&password=pw&connect_timeout=2", "postgres://u@h/db?sslmode=disable&password=xxxxx&connect_timeout=2"},
		{"postgres://u@h/db?PassWord=pw&x=1", "postgres://u@h/db?PassWord=xxxxx&x=1"},
		{"postgresql://u@h/db?sslpassword=pw#frag", "postgresql://u@h/db?sslpassword=xxxxx#frag"},
		{"postgres://u:pw@h/db?password=pw2", "postgres://u:xxxxx@h/db?password=xxxxx"},
		{"postgres://:pw@h/db", "postgres://:xxxxx@h/db"},
		{"postgres://u:p%40ss%2Fw@h:5432/db", "postgres://u:xxxxx@h:5432/db"},
		// A raw '@' or '/' in the password (an invalid URL): hidden whole.
		{"postgres://u:p@ss/w@h/db", "postgres://u:xxxxx@h/db"},
		{`parse "postgres://u:pa/ss@h/db": invalid port ":pa" after host`, `parse "postgres://u:xxxxx@h/db": invalid port ":pa" after host`},
		{"mysql://root:pw@h/x", "mysql://root:xxxxx@h/x"},
		{"host=h password=pw user=u", "host=h password=xxxxx user=u"},
		{"host=h PASSWORD=pw", "host=h PASSWORD=xxxxx"},
		{"host=h password = pw user=u", "host=h password = xxxxx user=u"},
		{`host=h password='p w \' x' user=u`, `host=h password='xxxxx' user=u`},
		{`host=h password=p\ w user=u`, `host=h password=xxxxx user=u`},
		{"host=h sslpassword=pw", "host=h sslpassword=xxxxx"},
		{"PGPASSWORD=pw psql", "PGPASSWORD=xxxxx psql"},
		{`pq: missing "=" after "host=h password=pw" in connection info string`, `pq: missing "=" after "host=h password=xxxxx" in connection info string`},
		{`{"reason": "dial password=pw\" x", "count": 1}`, `{"reason": "dial password=xxxxx x", "count": 1}`},
		{"password=", "password=xxxxx"},
		{"pq: password authentication failed for user \"u\"", "pq: password authentication failed for user \"u\""},
		{"postgres://u@h:5432/db?sslmode=disable", "postgres://u@h:5432/db?sslmode=disable"},
	} {
		got := redactText(tc.in)
		if got != tc.want {
			t.Errorf("redactText(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
		if again := redactText(got); again != got {
			t.Errorf("redactText not idempotent on %q: %q", got, again)
		}
	}
}

// TestCheckConn: connection strings lib/pq would parse are shown with the
// password hidden; strings it would reject with a message quoting them
// are rejected here with a message quoting nothing.
func TestCheckConn(t *testing.T) {
	const pw = "S3cr/3t X@y'z"
	esc := url.QueryEscape(pw)
	for _, tc := range []struct {
		in, want string
		err      error
	}{
		{in: "postgres://u:" + url.PathEscape(pw) + "@h:5432/db?sslmode=disable", want: "postgres://u:xxxxx@h:5432/db?sslmode=disable"},
		{in: "postgres://u@h/db?sslmode=disable&password=" + esc + "&connect_timeout=2", want: "postgres://u@h/db?sslmode=disable&password=xxxxx&connect_timeout=2"},
		{in: "postgresql://u@h/db?PASSWORD=" + esc, want: "postgresql://u@h/db?PASSWORD=xxxxx"},
		{in: "postgres://u@h/db?sslpassword=" + esc, want: "postgres://u@h/db?sslpassword=xxxxx"},
		{in: "postgres://u@h/db?pass%77ord=" + esc, want: "postgres://u@h/db?password=xxxxx"},
		{in: "host=h user=u password='S3cr/3t X@y\\'z' dbname=d", want: "host=h user=u password='xxxxx' dbname=d"},
		{in: `host=h password=S3cr/3t\ X@y'z`, want: "host=h password='xxxxx'"},
		{in: "host=h password = 'a b'  sslpassword=c", want: "host=h password = 'xxxxx'  sslpassword='xxxxx'"},
		{in: "host=h password=", want: "host=h password='xxxxx'"},
		{in: "postgres://u:S3cr/3t@h/db", err: errConnURL},
		{in: "postgres://u:p%zzS3cr3t@h/db", err: errConnURL},
		{in: "mysql://u:S3cr3t@h/db", err: errConnScheme},
		{in: "POSTGRES://u:S3cr3t@h/db", err: errConnScheme},
		{in: "host=h password=S3cr3t X", err: errConnEquals},
		{in: "host=h password='S3cr3t", err: errConnQuote},
		{in: `host=h password=S3cr3t\`, err: errConnEscape},
	} {
		got, err := checkConn(tc.in)
		if tc.err != nil {
			if err != tc.err {
				t.Errorf("checkConn(%q) = %q, %v; want %v", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("checkConn(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
		requireNoPassword(t, "checkConn("+tc.in+")", got, pw, "a b")
	}
}

// TestRedactWriterSplitWrites: a password written in two pieces is still
// hidden, and a last line without a newline is written on Flush.
func TestRedactWriterSplitWrites(t *testing.T) {
	var b bytes.Buffer
	w := &redactWriter{w: &b}
	for _, p := range []string{"connect postgres://u:s3", "cr3t@h/db: refused\nhost=h pass", "word=s3cr3t"} {
		_, err := w.Write([]byte(p))
		require.NoError(t, err)
	}
	require.Equal(t, "connect postgres://u:xxxxx@h/db: refused\n", b.String(), "a complete line is written at once")
	require.NoError(t, w.Flush())
	require.Equal(t, "connect postgres://u:xxxxx@h/db: refused\nhost=h password=xxxxx", b.String())
}

// TestGeoctlNeverPrintsPasswords is issue 20 item 14: geoctl echoed
// postgres://u@h/db?password=X in full, and lib/pq's errors for a
// connection string it cannot parse quoted parts of it. Every form of
// connection string, valid and not, in --database-url, in the
// environment, in --primary-database-url, on the command line and in
// failure texts stored in the registry: no password appears in anything
// geoctl prints.
func TestGeoctlNeverPrintsPasswords(t *testing.T) {
	g := build(t)
	const pw = "Pw0rd-S3cr3t"
	unreachable := "127.0.0.1:1"
	for _, tc := range []struct {
		name    string
		url     string
		secrets []string // what must not appear (parts of an invalid string too)
	}{
		{"URL userinfo", "postgres://u:" + pw + "@" + unreachable + "/db?sslmode=disable&connect_timeout=2", nil},
		{"URL password parameter", "postgres://u@" + unreachable + "/db?password=" + pw + "&sslmode=disable&connect_timeout=2", nil},
		{"URL password parameter, upper case", "postgres://u@" + unreachable + "/db?sslmode=disable&PASSWORD=" + pw + "&connect_timeout=2", nil},
		{"URL sslpassword parameter", "postgresql://u@" + unreachable + "/db?sslmode=disable&sslpassword=" + pw + "&connect_timeout=2", nil},
		{"key=value", "host=127.0.0.1 port=1 user=u password=" + pw + " sslmode=disable connect_timeout=2", nil},
		{"key=value, quoted with an escape", `host=127.0.0.1 port=1 password='` + pw + ` x\'y' sslmode=disable connect_timeout=2`, []string{pw + " x"}},
		{"key=value, spaces around =", "host=127.0.0.1 port=1 password = " + pw + " sslmode=disable connect_timeout=2", nil},
		{"key=value, unquoted space (invalid)", "host=127.0.0.1 port=1 password=" + pw + " Tail7x sslmode=disable", []string{"Tail7x"}},
		{"key=value, unclosed quote (invalid)", "host=127.0.0.1 password='" + pw, nil},
		{"URL with a raw slash (invalid)", "postgres://u:Head7x/" + pw + "@" + unreachable + "/db", []string{"Head7x"}},
		{"URL with a bad escape (invalid)", "postgres://u:%zz" + pw + "@" + unreachable + "/db", nil},
		{"other scheme (lib/pq parses it as key=value)", "mysql://u:" + pw + "@" + unreachable + "/db", nil},
	} {
		secrets := append([]string{pw}, tc.secrets...)
		for _, how := range []string{"flag", "env"} {
			args := []string{"status"}
			g.env = nil
			if how == "flag" {
				args = []string{"--database-url", tc.url, "status"}
			} else {
				g.env = []string{envDatabaseURL + "=" + tc.url}
			}
			out, errOut, code := g.run(args...)
			require.NotEqual(t, 0, code, "%s (%s): geoctl status succeeded", tc.name, how)
			require.Contains(t, errOut, "database", "%s (%s): the message names the database", tc.name, how)
			requireNoPassword(t, tc.name+" ("+how+"): stdout", out, secrets...)
			requireNoPassword(t, tc.name+" ("+how+"): stderr", errOut, secrets...)
		}
	}
	g.env = nil

	// A connection string typed as a command is echoed by the usage error.
	_, errOut, code := g.run("postgres://u:" + pw + "@h/db")
	require.Equal(t, 2, code)
	requireNoPassword(t, "unknown command", errOut, pw)

	// The primary's URL of status, and failure texts that quote one.
	ctx := context.Background()
	trackingURL := pg.NewDatabaseURL(t)
	g.ok("--database-url", trackingURL, "migrate")
	db, err := sqlx.Open("postgres", trackingURL)
	require.NoError(t, err)
	defer db.Close()
	store, err := regstore.NewStore(db, regstore.Options{})
	require.NoError(t, err)
	_, err = store.InsertMissing(ctx, "item", []int64{1, 2})
	require.NoError(t, err)
	_, err = db.Exec(`UPDATE geo_registry SET state = 3, retry_count = 1, retry_at = now() + interval '1 hour',
  last_sync_failure = CASE model_id WHEN 1 THEN 'blob key: connect postgres://app:' || $1 || '@db/x?sslmode=disable: refused'
    ELSE 'blob key: pq: bad conninfo "host=db password=' || $1 || '"' END`, pw)
	require.NoError(t, err)
	for _, args := range [][]string{
		{"status"}, {"status", "-o", "json"}, {"failures"}, {"failures", "-o", "json"},
		{"status", "--primary-database-url", "postgres://u:" + pw + "@" + unreachable + "/x?sslmode=disable&connect_timeout=2"},
		{"status", "--primary-database-url", "host=127.0.0.1 port=1 password=" + pw + " Tail7x"},
	} {
		out, errOut, _ := g.run(append([]string{"--database-url", trackingURL}, args...)...)
		requireNoPassword(t, strings.Join(args, " ")+": stdout", out, pw, "Tail7x")
		requireNoPassword(t, strings.Join(args, " ")+": stderr", errOut, pw, "Tail7x")
	}
	require.Contains(t, g.ok("--database-url", trackingURL, "failures"), "postgres://app:xxxxx@db/x", "the failure text is shown, its password hidden")
}
