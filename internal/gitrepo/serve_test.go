package gitrepo

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeRefusesPush checks that nothing naming receive-pack is served,
// whatever the method, casing or encoding, and that a real git push
// through the endpoint fails and changes nothing.
func TestServeRefusesPush(t *testing.T) {
	t.Parallel()
	g := requireGit(t)
	p := newPrimary(t, g)
	const rel = "push.git"
	w := p.create(rel)
	w.commit(2, 100)
	w.git("push", "--quiet", "origin", "main")
	before := sh(t, w.bare, "rev-parse", "main")

	w.commit(1, 100)
	out, err := shErr(w.dir, nil, "-c", "http.extraHeader=Authorization: "+p.token, "push", p.url(rel), "main")
	if err == nil {
		t.Fatalf("git push through the endpoint succeeded: %s", out)
	}
	if got := sh(t, w.bare, "rev-parse", "main"); got != before {
		t.Fatalf("push moved main to %s", got)
	}

	for _, c := range []struct{ method, path string }{
		{"GET", "/x/info/refs?service=git-receive-pack"},
		{"POST", "/x/git-receive-pack"},
		{"GET", "/x/git-receive-pack"},
		{"PUT", "/x/git-receive-pack"},
		{"POST", "/x/info/refs?service=git-receive-pack"},
		{"GET", "/x/info/refs?service=git-upload-pack&service=git-receive-pack"},
		{"GET", "/x/info/refs?service=GIT-RECEIVE-PACK"},
		{"GET", "/x/info/refs?service=git-%72eceive-pack"},
		{"POST", "/x/git-receive-pack/../git-upload-pack"},
	} {
		u, err := url.Parse("http://example.com" + c.path)
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest(c.method, "http://example.com/", strings.NewReader("0000"))
		r.URL = u
		rec := httptest.NewRecorder()
		p.server.Serve(rec, r, rel)
		if rec.Code != http.StatusForbidden {
			t.Errorf("%s %s: status %d, want 403", c.method, c.path, rec.Code)
		}
	}
}

// TestServeHostilePaths checks that neither a hostile repository path
// (the caller's) nor a hostile URL (the client's) ever serves another
// repository than the one given.
func TestServeHostilePaths(t *testing.T) {
	t.Parallel()
	g := requireGit(t)
	p := newPrimary(t, g)
	mine := p.create("a/mine.git")
	mine.commit(1, 10)
	mine.git("push", "--quiet", "origin", "main")
	other := p.create("a/other.git")
	other.commit(1, 10)
	other.git("branch", "secret-branch")
	other.git("push", "--quiet", "origin", "main", "secret-branch")
	// A sibling whose name is another's plus ".git", as git's lookup tries.
	sib := p.create("a/sib.git")
	sib.commit(1, 10)
	sib.git("branch", "secret-branch")
	sib.git("push", "--quiet", "origin", "main", "secret-branch")
	outside := t.TempDir()
	sh(t, "", "clone", "--quiet", "--bare", other.bare, filepath.Join(outside, "out.git"))
	if err := os.Symlink(filepath.Join(outside, "out.git"), filepath.Join(p.root, "a", "link.git")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(p.root, "escape")); err != nil {
		t.Fatal(err)
	}
	secret := sh(t, other.bare, "rev-parse", "secret-branch")

	get := func(rel, rawPath string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "http://example.com/", nil)
		r.URL = &url.URL{Path: rawPath, RawQuery: "service=git-upload-pack"}
		rec := httptest.NewRecorder()
		p.server.Serve(rec, r, rel)
		return rec
	}
	leak := func(body string) bool {
		return strings.Contains(body, "secret-branch") || strings.Contains(body, secret)
	}

	// Hostile repository paths: refused before git runs.
	for _, rel := range []string{
		"../a/other.git", "a/../a/other.git", "/abs/a/other.git", "a//other.git", "a/./other.git",
		"a/other.git/", "a\\other.git", "a/other.git\x00", ".geo-tmp/x", "",
		"a/link.git", "escape/out.git", // symbolic links out of the root
		"a/sib", // missing; git's lookup would try a/sib.git
		"a",     // a directory, not a repository
	} {
		rec := get(rel, "/info/refs")
		if rec.Code == http.StatusOK || leak(rec.Body.String()) {
			t.Errorf("repository path %q: status %d, body leaks another repository: %v", rel, rec.Code, leak(rec.Body.String()))
		}
	}

	// Hostile URLs for a valid path: only the step is taken from the URL.
	for _, raw := range []string{
		"/../other.git/info/refs", "/a/other.git/info/refs", "/x/../../a/other.git/info/refs",
		"/x/info/refs/../../other.git/info/refs", "info/refs", "/x/%2e%2e/other.git/info/refs",
		"/x/HEAD", "/x/config", "/x/objects/info/packs", "/x/info/refs/", "/x/info/refs%00",
		"/x/objects/info/alternates", "/x/../../a/other.git/HEAD",
	} {
		rec := get("a/mine.git", raw)
		body := rec.Body.String()
		if leak(body) {
			t.Errorf("URL %q for a/mine.git: body leaks another repository", raw)
		}
		if rec.Code == http.StatusOK && !strings.Contains(body, "refs/heads/main") {
			t.Errorf("URL %q for a/mine.git: 200 but not mine's advertisement", raw)
		}
	}
	if rec := get("a/mine.git", "/anything/info/refs"); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "refs/heads/main") {
		t.Fatalf("a valid request: status %d, body %q", rec.Code, rec.Body.String())
	}
}

// TestServeNeverFallsBackToASibling runs git http-backend (past Serve's
// checks, as if the repository vanished between the check and the run)
// for a missing repository next to one whose name is it plus ".git":
// git's repository lookup appends ".git", and without the "/." Serve
// appends to GIT_PROJECT_ROOT it serves the sibling.
func TestServeNeverFallsBackToASibling(t *testing.T) {
	t.Parallel()
	g := requireGit(t)
	p := newPrimary(t, g)
	sib := p.create("sib.git")
	sib.commit(1, 10)
	sib.git("branch", "secret-branch")
	sib.git("push", "--quiet", "origin", "main", "secret-branch")

	r := httptest.NewRequest("GET", "http://example.com/sib/info/refs?service=git-upload-pack", nil)
	rec := httptest.NewRecorder()
	p.server.serveCGI(rec, r, filepath.Join(p.server.root, "sib"), infoRefsSuffix, "service="+uploadPack)
	if rec.Code == http.StatusOK || strings.Contains(rec.Body.String(), "secret-branch") {
		t.Fatalf("missing repository sib: status %d, served its sibling sib.git: %q", rec.Code, rec.Body.String())
	}
}

// TestServeProtocolVersions fetches with protocol v2, v1 and v0 and checks
// what the server saw: v2's Git-Protocol header reached git (its
// advertisement says "version 2"), and an unsafe header value is dropped.
func TestServeProtocolVersions(t *testing.T) {
	t.Parallel()
	requireGit(t)
	ctx := testCtx(t)
	base := requireGit(t)
	p := newPrimary(t, base)
	const rel = "proto.git"
	w := p.create(rel)
	w.commit(3, 100)
	w.git("push", "--quiet", "origin", "main")
	for _, v := range []string{"2", "1", "0"} {
		g, err := New(ctx, &Options{Config: []ConfigEntry{{"protocol.version", v}}})
		if err != nil {
			t.Fatal(err)
		}
		s := newStore(t, g)
		p.sync(ctx, s, rel)
		assertSame(t, ctx, p, s, rel)
	}
	if _, ok := p.headers.Load("version=2"); !ok {
		t.Fatalf("no request carried Git-Protocol: version=2")
	}

	adv := func(header string) string {
		r := httptest.NewRequest("GET", "http://example.com/x/info/refs?service=git-upload-pack", nil)
		if header != "" {
			r.Header.Set("Git-Protocol", header)
		}
		rec := httptest.NewRecorder()
		p.server.Serve(rec, r, rel)
		b, _ := io.ReadAll(rec.Body)
		return string(b)
	}
	if b := adv("version=2"); !strings.Contains(b, "version 2") {
		t.Fatalf("v2 advertisement lacks version 2: %q", b)
	}
	if b := adv("version=2 ; X=`id`"); strings.Contains(b, "version 2") || !strings.Contains(b, "# service=git-upload-pack") {
		t.Fatalf("an unsafe Git-Protocol value reached git: %q", b)
	}
}

// TestServeChunkedRequest fetches a repository with many branches with a
// small http.postBuffer, so git sends its wants chunked (no length),
// which CGI cannot pass on: Serve spools them.
func TestServeChunkedRequest(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	base := requireGit(t)
	p := newPrimary(t, base)
	const rel = "many.git"
	if err := MakeRepo(ctx, base, filepath.Join(p.root, rel), RepoShape{Commits: 2, FileSize: 10, Branches: 3000}); err != nil {
		t.Fatal(err)
	}
	g, err := New(ctx, &Options{Config: []ConfigEntry{{"http.postBuffer", "70000"}}})
	if err != nil {
		t.Fatal(err)
	}
	s := newStore(t, g)
	p.sync(ctx, s, rel)
	assertSame(t, ctx, p, s, rel)
	if p.chunked.Load() == 0 {
		t.Fatalf("no request arrived chunked: the test does not test spooling")
	}
}

// TestServeRequestLimit checks that a body over MaxRequestBody is refused
// with 413 when its length says so, and cut at the limit when it comes
// chunked.
func TestServeRequestLimit(t *testing.T) {
	t.Parallel()
	g := requireGit(t)
	root := t.TempDir()
	sh(t, "", "init", "--bare", "--quiet", filepath.Join(root, "r.git"))
	const limit = 100
	srv, err := NewServer(g, root, &ServerOptions{MaxRequestBody: limit})
	if err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("0032want "+strings.Repeat("a", 40)+"\n", 10) + "00000009done\n"
	for _, length := range []int64{int64(len(body)), -1} {
		cr := &countingReader{r: strings.NewReader(body)}
		r := httptest.NewRequest("POST", "http://example.com/x/git-upload-pack", cr)
		r.Header.Set("Content-Type", "application/x-git-upload-pack-request")
		r.ContentLength = length
		rec := httptest.NewRecorder()
		srv.Serve(rec, r, "r.git")
		if length > 0 && rec.Code != http.StatusRequestEntityTooLarge {
			t.Errorf("length %d: status %d, want 413", length, rec.Code)
		}
		if cr.n > limit {
			t.Errorf("length %d: %d bytes of the body read, limit %d", length, cr.n, limit)
		}
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestParseHead checks what a HEAD (file or response) may hold.
func TestParseHead(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in     string
		target string
		ok     bool
	}{
		{"ref: refs/heads/main\n", "refs/heads/main", true},
		{"ref: refs/heads/main", "refs/heads/main", true},
		{strings.Repeat("a", 40) + "\n", "", true},
		{strings.Repeat("b", 64), "", true},
		{"ref: HEAD\n", "", false},
		{"ref: refs/heads/a b\n", "", false},
		{"ref: refs/heads/x\nmore\n", "", false},
		{"<html>", "", false},
		{"", "", false},
		{"ref: refs/" + strings.Repeat("x", maxHeadSize), "", false},
	} {
		target, ok := parseHead([]byte(c.in))
		if target != c.target || ok != c.ok {
			t.Errorf("parseHead(%q) = %q, %v; want %q, %v", c.in, target, ok, c.target, c.ok)
		}
	}
}
