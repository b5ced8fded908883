package gitrepo

import (
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestBaseEnv checks which of the caller's variables git inherits: no
// GIT_* but TLS and speed settings, no LC_ALL or askpass.
func TestBaseEnv(t *testing.T) {
	t.Parallel()
	got := baseEnv([]string{
		"PATH=/bin", "HOME=/root", "GIT_DIR=/x", "GIT_OBJECT_DIRECTORY=/x/objects",
		"GIT_ALTERNATE_OBJECT_DIRECTORIES=/y", "GIT_CONFIG_COUNT=1", "GIT_CONFIG_PARAMETERS='a.b'='c'",
		"GIT_TRACE=1", "GIT_CURL_VERBOSE=1", "GIT_SSL_CAINFO=/ca.pem", "GIT_HTTP_LOW_SPEED_LIMIT=1000",
		"LC_ALL=fr_FR.UTF-8", "SSH_ASKPASS=/usr/bin/ask", "https_proxy=http://proxy:3128",
	})
	want := []string{"PATH=/bin", "HOME=/root", "GIT_SSL_CAINFO=/ca.pem", "GIT_HTTP_LOW_SPEED_LIMIT=1000", "https_proxy=http://proxy:3128"}
	if !slices.Equal(got, want) {
		t.Fatalf("baseEnv = %q, want %q", got, want)
	}
}

// TestInheritedGitEnvironmentIgnored runs a sync with the process's
// environment pointing git elsewhere (as inside a git hook: GIT_DIR,
// GIT_OBJECT_DIRECTORY, extra configuration) and checks that the copy is
// right and the decoy repository untouched. Not parallel: it sets the
// process's environment.
func TestInheritedGitEnvironmentIgnored(t *testing.T) {
	decoy := t.TempDir()
	sh(t, "", "init", "--bare", "--quiet", decoy)
	before := snapshot(t, decoy)
	t.Setenv("GIT_DIR", decoy)
	t.Setenv("GIT_OBJECT_DIRECTORY", filepath.Join(decoy, "objects"))
	t.Setenv("GIT_CONFIG_PARAMETERS", "'fetch.prune'='false' 'core.bare'='false'")
	t.Setenv("GIT_CONFIG_COUNT", "1")
	t.Setenv("GIT_CONFIG_KEY_0", "remote.origin.mirror")
	t.Setenv("GIT_CONFIG_VALUE_0", "false")

	g := requireGit(t)
	ctx := testCtx(t)
	p := newPrimary(t, g)
	s := newStore(t, g)
	const rel = "env.git"
	w := p.create(rel)
	w.commit(2, 10)
	w.git("branch", "gone")
	w.git("push", "--quiet", "origin", "main", "gone")
	p.sync(ctx, s, rel)
	w.git("push", "--quiet", "origin", ":gone")
	w.commit(1, 10)
	w.git("push", "--quiet", "origin", "main")
	p.sync(ctx, s, rel)
	assertSame(t, ctx, p, s, rel)
	if after := snapshot(t, decoy); !maps.Equal(before, after) {
		t.Fatal("a git command wrote into the decoy repository named by GIT_DIR")
	}
}

// TestTailBuffer checks that the stderr buffer keeps the last bytes and
// says it cut.
func TestTailBuffer(t *testing.T) {
	t.Parallel()
	b := &tailBuffer{limit: 8}
	b.Write([]byte("abc"))
	if b.String() != "abc" {
		t.Fatalf("%q", b.String())
	}
	b.Write([]byte("defghij"))
	if got := b.String(); got != "[...]cdefghij" {
		t.Fatalf("got %q, want the last 8 bytes marked cut", got)
	}
	b.Write([]byte(strings.Repeat("z", 20)))
	if got := b.String(); got != "[...]zzzzzzzz" {
		t.Fatalf("got %q", got)
	}
}
