package gitrepo

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// wrapperGit writes a git wrapper that records each invocation's argv and
// environment (NUL-separated) in logDir, then runs the real git.
func wrapperGit(t *testing.T, real string) (path, logDir string) {
	t.Helper()
	dir := t.TempDir()
	logDir = filepath.Join(dir, "log")
	if err := os.Mkdir(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, "git")
	script := "#!/bin/sh\n" +
		"printf '%s\\0' \"$@\" > " + logDir + "/$$.argv\n" +
		"cat /proc/$$/environ > " + logDir + "/$$.env\n" +
		"exec " + real + " \"$@\"\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, logDir
}

// invocations returns the recorded argv and environment of every call.
func invocations(t *testing.T, logDir string) (argvs, envs [][]string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(logDir, "*.argv"))
	for _, f := range files {
		a, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		e, err := os.ReadFile(strings.TrimSuffix(f, ".argv") + ".env")
		if err != nil {
			t.Fatal(err)
		}
		argvs = append(argvs, strings.Split(string(a), "\x00"))
		envs = append(envs, strings.Split(string(e), "\x00"))
	}
	return argvs, envs
}

// TestAuthorizationInEnvironmentNotArgv checks where the Authorization
// value goes: in every git command's argv it is absent, in the fetching
// commands' environment it is present as GIT_CONFIG_VALUE_n; it never
// reaches git http-backend on the primary; and while a fetch is held mid-
// transfer no process on the machine shows it in /proc/<pid>/cmdline,
// while git-remote-http (git's child) has it in its environment.
func TestAuthorizationInEnvironmentNotArgv(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	real := requireGit(t)
	clientPath, clientLog := wrapperGit(t, real.Path())
	serverPath, serverLog := wrapperGit(t, real.Path())
	sg, err := New(ctx, &Options{Path: serverPath})
	if err != nil {
		t.Fatal(err)
	}
	cg, err := New(ctx, &Options{Path: clientPath})
	if err != nil {
		t.Fatal(err)
	}
	p := newPrimary(t, sg)
	token := strings.TrimPrefix(p.token, "Bearer ")
	const rel = "auth.git"
	w := p.create(rel)
	w.commit(3, 100)
	w.git("push", "--quiet", "origin", "main")
	s := newStore(t, cg)

	// A new copy (clone), then an incremental fetch (fetch, ls-remote),
	// the second one held mid-transfer to look at the live processes.
	p.sync(ctx, s, rel)
	w.commit(1, 100)
	w.git("push", "--quiet", "origin", "main")
	reached, release := p.holdFetches()
	type result struct {
		st  *Stage
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := s.Fetch(ctx, FetchParams{RelPath: rel, URL: p.url(rel), Authorization: p.token})
		done <- result{st, err}
	}()
	<-reached
	if pids := processesWith(token); len(pids) > 0 {
		t.Errorf("the token is on the command line of processes %v", pids)
	}
	helpers := processesWith("remote-http")
	found := false
	for _, pid := range helpers {
		if env, err := os.ReadFile("/proc/" + pid + "/environ"); err == nil && bytes.Contains(env, []byte(token)) {
			found = true
		}
	}
	if !found {
		t.Errorf("no git-remote-http process (of %v) has the token in its environment", helpers)
	}
	release()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if err := r.st.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	assertSame(t, ctx, p, s, rel)

	argvs, envs := invocations(t, clientLog)
	inEnv := 0
	for i, argv := range argvs {
		if strings.Contains(strings.Join(argv, " "), token) {
			t.Errorf("the token is in git's argv: %q", argv)
		}
		for _, kv := range envs[i] {
			if strings.HasPrefix(kv, "GIT_CONFIG_VALUE_") && strings.HasSuffix(kv, "=Authorization: "+p.token) {
				inEnv++
			}
		}
	}
	if inEnv < 2 { // clone, fetch
		t.Errorf("the token is in the environment of %d git commands, want the clone's and the fetch's (%d calls)", inEnv, len(argvs))
	}
	argvs, envs = invocations(t, serverLog)
	if len(argvs) == 0 {
		t.Fatal("the server's git wrapper saw no call")
	}
	for i := range argvs {
		if strings.Contains(strings.Join(envs[i], "\n"), token) || strings.Contains(strings.Join(argvs[i], " "), token) {
			t.Errorf("git http-backend got the token: argv %q", argvs[i])
		}
	}
}

// TestFetchErrorsKeepTheSecret checks the sentinels of a refused or
// missing repository, and that no error quotes the Authorization value,
// a URL's credentials, or a hostile value.
func TestFetchErrorsKeepTheSecret(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	g := requireGit(t)
	p := newPrimary(t, g)
	w := p.create("there.git")
	w.commit(1, 10)
	w.git("push", "--quiet", "origin", "main")
	s := newStore(t, g)

	const wrong = "Bearer wrong-s3cret-token"
	_, err := s.Fetch(ctx, FetchParams{RelPath: "there.git", URL: p.url("there.git"), Authorization: wrong})
	if !errors.Is(err, ErrRemoteDenied) || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("wrong token: %v, want ErrRemoteDenied without the token", err)
	}
	_, err = s.Fetch(ctx, FetchParams{RelPath: "missing.git", URL: p.url("missing.git"), Authorization: p.token})
	if !errors.Is(err, ErrRemoteNotFound) || strings.Contains(err.Error(), p.token) {
		t.Fatalf("missing repository: %v, want ErrRemoteNotFound without the token", err)
	}
	for _, u := range []string{
		"http://user:s3cret@127.0.0.1/x", "file:///etc/s3cret", "ext::sh -c s3cret", "ftp://h/s3cret",
		"http:///s3cret", "http://h/s3cret x", "http://h/s3cret#frag", "/local/s3cret",
	} {
		_, err := s.Fetch(ctx, FetchParams{RelPath: "x.git", URL: u, Authorization: p.token})
		if !errors.Is(err, ErrInvalidURL) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("URL %q: %v, want ErrInvalidURL that does not quote it", u, err)
		}
	}
	for _, a := range []string{"Bearer s3cret\r\nX-Evil: 1", "Bearer s3cret\n", "s3cret\x00"} {
		_, err := s.Fetch(ctx, FetchParams{RelPath: "x.git", URL: p.url("x.git"), Authorization: a})
		if !errors.Is(err, ErrInvalidAuthorization) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Authorization %q: %v, want ErrInvalidAuthorization that does not quote it", a, err)
		}
	}
	if es := tempEntries(t, s); len(es) != 0 {
		t.Fatalf("failed fetches left %v in the temporary directory", es)
	}
}

// TestRunRedactsTheSecret runs a git command that echoes its argument
// in an error and checks that the secret is redacted from the error.
func TestRunRedactsTheSecret(t *testing.T) {
	t.Parallel()
	g := requireGit(t)
	dir := t.TempDir()
	sh(t, "", "init", "--bare", "--quiet", dir)
	const secret = "s3cret-value"
	err := g.run(context.Background(), cmd{dir: dir, args: []string{"rev-parse", secret}, secret: secret})
	if err == nil || strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "[REDACTED]") {
		t.Fatalf("error %v: want the secret redacted", err)
	}
}

// TestNewWithoutGit checks the sentinels and the install hint when the
// binary is missing or too old.
func TestNewWithoutGit(t *testing.T) {
	t.Parallel()
	_, err := New(context.Background(), &Options{Path: "/nonexistent/git"})
	if !errors.Is(err, ErrGitMissing) || !strings.Contains(err.Error(), "apt-get install git") {
		t.Fatalf("missing git: %v, want ErrGitMissing naming apt-get install git", err)
	}
	old := filepath.Join(t.TempDir(), "git")
	if err := os.WriteFile(old, []byte("#!/bin/sh\necho 'git version 2.20.1'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	_, err = New(context.Background(), &Options{Path: old})
	if !errors.Is(err, ErrGitTooOld) {
		t.Fatalf("git 2.20.1: %v, want ErrGitTooOld", err)
	}
}

// TestRedirectsAreNotFollowed points a fetch at an endpoint that
// redirects every request elsewhere: the fetch fails, and the other
// server never sees the Authorization value (git's requests and the HEAD
// request alike).
func TestRedirectsAreNotFollowed(t *testing.T) {
	t.Parallel()
	g := requireGit(t)
	ctx := testCtx(t)
	var leaked atomic.Int64
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			leaked.Add(1)
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(elsewhere.Close)
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+r.URL.RequestURI(), http.StatusFound)
	}))
	t.Cleanup(redirector.Close)
	s := newStore(t, g)
	for _, rel := range []string{"new.git", "existing.git"} {
		if rel == "existing.git" {
			sh(t, "", "init", "--bare", "--quiet", filepath.Join(s.root, rel))
		}
		_, err := s.Fetch(ctx, FetchParams{RelPath: rel, URL: redirector.URL + "/r/" + rel, Authorization: "Bearer s3cret"})
		if err == nil {
			t.Fatalf("%s: a fetch through a redirect succeeded", rel)
		}
	}
	if n := leaked.Load(); n > 0 {
		t.Fatalf("%d requests carried the Authorization value to the redirect's target", n)
	}
}
