package gitrepo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testTimeout bounds each test's git work: generous, for a loaded 2-core
// machine.
const testTimeout = 2 * time.Minute

// requireGit returns a Git for the test, or fails it saying how to install
// git, under CI and elsewhere alike.
func requireGit(t testing.TB) *Git {
	t.Helper()
	g, err := New(context.Background(), nil)
	if err != nil {
		msg := fmt.Sprintf("gitrepo tests need the git binary (>= %s): %v\nfix: apt-get install git", MinGitVersion, err)
		t.Fatal(msg)
	}
	return g
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// gitEnv is the environment of the tests' own git commands (building and
// changing the primary's repositories): no user configuration, a fixed
// identity and clock, main as the first branch.
func testGitEnv() []string {
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") {
			env = append(env, kv)
		}
	}
	return append(env,
		"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=geo", "GIT_AUTHOR_EMAIL=geo@example.com",
		"GIT_COMMITTER_NAME=geo", "GIT_COMMITTER_EMAIL=geo@example.com",
		"GIT_CONFIG_COUNT=2",
		"GIT_CONFIG_KEY_0=init.defaultBranch", "GIT_CONFIG_VALUE_0=main",
		"GIT_CONFIG_KEY_1=advice.detachedHead", "GIT_CONFIG_VALUE_1=false",
	)
}

// sh runs the system git in dir and returns its trimmed standard output.
func sh(t testing.TB, dir string, args ...string) string {
	t.Helper()
	out, err := shErr(dir, nil, args...)
	if err != nil {
		t.Fatalf("git %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func shErr(dir string, stdin io.Reader, args ...string) (string, error) {
	c := exec.Command("git", args...)
	c.Dir = dir
	c.Env = testGitEnv()
	c.Stdin = stdin
	var stderr strings.Builder
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return "", fmt.Errorf("%w: %s", err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// primary is the primary site of a test: a repository root served over
// loopback HTTP, with a working clone to push from.
type primary struct {
	t       testing.TB
	root    string
	server  *Server
	http    *httptest.Server
	token   string       // the one Authorization value the endpoint accepts
	served  atomic.Int64 // response bytes of upload-pack POSTs (the packs)
	headers sync.Map     // request header "Git-Protocol" values seen -> true
	chunked atomic.Int64 // requests that arrived without a length
	// hold, when set, is called before a git-upload-pack POST is served.
	hold atomic.Pointer[func(*http.Request)]
}

func newPrimary(t testing.TB, g *Git) *primary {
	t.Helper()
	p := &primary{t: t, root: t.TempDir(), token: "Bearer tok-" + randHex(16)}
	var err error
	p.server, err = NewServer(g, p.root, nil)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	// /repo/{path...}/git/...: the engine's shape: check the token, then
	// resolve the record to its path and serve.
	mux.HandleFunc("/repo/{rest...}", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != p.token {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		rel, _, ok := strings.Cut(r.PathValue("rest"), "/git/")
		if !ok {
			http.NotFound(w, r)
			return
		}
		if v := r.Header.Get("Git-Protocol"); v != "" {
			p.headers.Store(v, true)
		}
		if r.ContentLength < 0 {
			p.chunked.Add(1)
		}
		if strings.HasSuffix(r.URL.Path, "/git-upload-pack") {
			if h := p.hold.Load(); h != nil {
				(*h)(r)
			}
			cw := &countingWriter{ResponseWriter: w}
			p.server.Serve(cw, r, rel)
			p.served.Add(cw.n)
			return
		}
		p.server.Serve(w, r, rel)
	})
	p.http = httptest.NewServer(mux)
	t.Cleanup(p.http.Close)
	return p
}

// url returns the endpoint of the repository at rel.
func (p *primary) url(rel string) string { return p.http.URL + "/repo/" + rel + "/git" }

// create makes a bare repository at rel with a working clone, and returns
// the clone's directory.
func (p *primary) create(rel string) *work {
	p.t.Helper()
	bare := filepath.Join(p.root, rel)
	if err := os.MkdirAll(filepath.Dir(bare), 0o755); err != nil {
		p.t.Fatal(err)
	}
	sh(p.t, "", "init", "--bare", "--quiet", bare)
	dir := p.t.TempDir()
	sh(p.t, dir, "init", "--quiet", ".")
	sh(p.t, dir, "remote", "add", "origin", bare)
	return &work{t: p.t, dir: dir, bare: bare}
}

// work is a working clone of a primary repository.
type work struct {
	t         testing.TB
	dir, bare string
	n         int
}

// commit adds n commits on the current branch, each adding a file of size
// random bytes.
func (w *work) commit(n, size int) {
	w.t.Helper()
	for range n {
		w.n++
		b := make([]byte, size)
		rand.Read(b)
		name := filepath.Join(w.dir, fmt.Sprintf("f%04d", w.n))
		if err := os.WriteFile(name, []byte(hex.EncodeToString(b)[:size]), 0o644); err != nil {
			w.t.Fatal(err)
		}
		sh(w.t, w.dir, "add", ".")
		sh(w.t, w.dir, "commit", "--quiet", "-m", fmt.Sprintf("commit %d", w.n))
	}
}

func (w *work) git(args ...string) string { w.t.Helper(); return sh(w.t, w.dir, args...) }

// refs returns the refs of the repository at dir as the checksum sees them.
func refsOf(t testing.TB, dir string) []Ref {
	t.Helper()
	out := sh(t, dir, "for-each-ref", "--format=%(refname) %(objectname)", "refs/")
	var refs []Ref
	for line := range strings.SplitSeq(out, "\n") {
		if name, oid, ok := strings.Cut(line, " "); ok {
			refs = append(refs, Ref{name, oid})
		}
	}
	slices.SortFunc(refs, func(a, b Ref) int { return strings.Compare(a.Name, b.Name) })
	return refs
}

type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func newStore(t testing.TB, g *Git) *Store {
	t.Helper()
	s, err := OpenStore(context.Background(), g, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// sync fetches rel from the primary into the store and commits it.
func (p *primary) sync(ctx context.Context, s *Store, rel string) *Stage {
	p.t.Helper()
	st, err := s.Fetch(ctx, FetchParams{RelPath: rel, URL: p.url(rel), Authorization: p.token})
	if err != nil {
		p.t.Fatalf("fetch %s: %v", rel, err)
	}
	if err := st.Commit(ctx); err != nil {
		p.t.Fatalf("commit %s: %v", rel, err)
	}
	return st
}

// tempEntries lists the store's temporary directory, minus its lock.
func tempEntries(t testing.TB, s *Store) []string {
	t.Helper()
	es, err := os.ReadDir(filepath.Join(s.root, s.tmpRel))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		if e.Name() != lockFileName {
			names = append(names, e.Name())
		}
	}
	return names
}

// assertSame checks that the copy at rel in s is the primary's: same
// refs, same checksum on both sides, same HEAD, and fsck passes.
func assertSame(t testing.TB, ctx context.Context, p *primary, s *Store, rel string) {
	t.Helper()
	want, err := p.server.Checksum(ctx, rel)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Checksum(ctx, rel)
	if err != nil {
		t.Fatal(err)
	}
	copyDir := filepath.Join(s.root, rel)
	if pr, cr := refsOf(t, filepath.Join(p.root, rel)), refsOf(t, copyDir); !slices.Equal(pr, cr) {
		t.Fatalf("refs: copy %v, primary %v", cr, pr)
	}
	if got != want {
		t.Fatalf("checksum: copy %s, primary %s", got, want)
	}
	if err := s.Verify(ctx, rel, want, VerifyFull); err != nil {
		t.Fatalf("verify: %v", err)
	}
	ph, _ := readHead(filepath.Join(p.root, rel))
	ch, _ := readHead(copyDir)
	if ph != ch {
		t.Fatalf("HEAD: copy %q, primary %q", ch, ph)
	}
}

// holdFetches makes every git-upload-pack POST wait until release is
// called (or its client goes away), and returns a channel that receives
// once per request reaching the hold.
func (p *primary) holdFetches() (reached <-chan struct{}, release func()) {
	ch := make(chan struct{}, 16)
	done := make(chan struct{})
	f := func(r *http.Request) {
		ch <- struct{}{}
		select {
		case <-done:
		case <-r.Context().Done():
		}
	}
	p.hold.Store(&f)
	var once sync.Once
	release = func() {
		once.Do(func() {
			p.hold.Store(nil)
			close(done)
		})
	}
	p.t.Cleanup(release)
	return ch, release
}

// waitFor polls cond until it holds or testTimeout (a hang guard: a
// loaded machine may take a good while to reap git's processes) passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// processesWith returns the pids of live processes whose command line
// contains s.
func processesWith(s string) []string {
	var pids []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(string(b), s) {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

// snapshot lists every file under dir with its size and modification
// time, to show a directory was not written.
func snapshot(t testing.TB, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		m[p] = fmt.Sprintf("%v %d %d", fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}
