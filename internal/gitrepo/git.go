package gitrepo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// DefaultGitBinary is the git binary used when Options.Path is empty: the
// first "git" on PATH.
const DefaultGitBinary = "git"

// DefaultStderrLimit is how many bytes of a git command's standard error
// are kept for its error message when Options.StderrLimit is 0: the last
// ones, where git says what went wrong.
const DefaultStderrLimit = 4 << 10

// DefaultWaitDelay is how long a git command whose context ended may take
// to exit and close its pipes after its process group was killed, before
// its I/O is abandoned (exec.Cmd.WaitDelay).
const DefaultWaitDelay = 5 * time.Second

// MinGitVersion is the oldest git that New accepts: 2.32 is the first to
// read GIT_CONFIG_GLOBAL, which isolates geo's commands from the user's
// ~/.gitconfig (GIT_CONFIG_COUNT, which carries the Authorization header,
// arrived in 2.31).
const MinGitVersion = "2.32.0"

// minGitVersion is MinGitVersion as numbers.
var minGitVersion = [3]int{2, 32, 0}

// ErrGitMissing is returned (wrapped) by New when the git binary cannot be
// found or run. Debian: apt-get install git.
var ErrGitMissing = errors.New("gitrepo: git binary not found (Debian: apt-get install git)")

// ErrGitTooOld is returned (wrapped) by New when the git binary is older
// than MinGitVersion.
var ErrGitTooOld = errors.New("gitrepo: git binary too old")

// ErrRemoteNotFound is returned (wrapped) by a fetch when the endpoint
// answers 404: the primary has no such repository (or no such record).
var ErrRemoteNotFound = errors.New("gitrepo: repository not found on the remote")

// ErrRemoteDenied is returned (wrapped) by a fetch when the endpoint
// answers 401 or 403: the Authorization value was refused.
var ErrRemoteDenied = errors.New("gitrepo: remote refused the credentials")

// ConfigEntry is one git configuration variable, given to a git command
// through GIT_CONFIG_COUNT / GIT_CONFIG_KEY_n / GIT_CONFIG_VALUE_n.
type ConfigEntry struct {
	Key, Value string
}

// Options configure New. The zero value (or nil) means every default.
type Options struct {
	// Path is the git binary: a file name looked up on PATH, or a path.
	// Empty means DefaultGitBinary.
	Path string
	// StderrLimit bounds the bytes of a command's standard error kept for
	// its error message (the last ones). 0 means DefaultStderrLimit.
	StderrLimit int
	// Config is extra configuration given to every git command this Git
	// runs, after geo's own (so it may override them): for example
	// http.sslCAInfo or http.proxy. System and global configuration files
	// are never read.
	Config []ConfigEntry
}

// Git runs the git binary for the rest of the package. It holds no
// mutable state and is safe for concurrent use.
//
// Every command runs with a controlled environment: the caller's
// environment minus every GIT_* variable (they could point git at another
// repository, object directory or configuration) except GIT_SSL_* and
// GIT_HTTP_LOW_SPEED_*; LC_ALL=C (messages are classified by their text);
// no system or global configuration (GIT_CONFIG_NOSYSTEM,
// GIT_CONFIG_GLOBAL=/dev/null); no terminal prompt; and geo's settings and
// secrets in GIT_CONFIG_COUNT / GIT_CONFIG_KEY_n / GIT_CONFIG_VALUE_n,
// never on the command line. Each command is the leader of its own process
// group, and the whole group (git fetch's git-remote-http, fetch-pack and
// index-pack children too) is killed when the command's context ends.
type Git struct {
	path        string
	version     [3]int
	stderrLimit int
	config      []ConfigEntry
	baseEnv     []string
}

// New finds the git binary, checks that it runs and is at least
// MinGitVersion, and returns a Git. The error wraps ErrGitMissing or
// ErrGitTooOld.
func New(ctx context.Context, opts *Options) (*Git, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Path == "" {
		o.Path = DefaultGitBinary
	}
	if o.StderrLimit == 0 {
		o.StderrLimit = DefaultStderrLimit
	}
	if o.StderrLimit < 0 {
		return nil, fmt.Errorf("gitrepo: Options.StderrLimit %d is negative", o.StderrLimit)
	}
	for i, c := range o.Config {
		if err := validConfig(c); err != nil {
			return nil, fmt.Errorf("gitrepo: Options.Config[%d]: %w", i, err)
		}
	}
	path, err := exec.LookPath(o.Path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrGitMissing, err)
	}
	g := &Git{path: path, stderrLimit: o.StderrLimit, config: o.Config, baseEnv: baseEnv(os.Environ())}
	out, err := g.output(ctx, cmd{args: []string{"version"}})
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrGitMissing, path, err)
	}
	v, err := parseVersion(string(out))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrGitMissing, path, err)
	}
	if less(v, minGitVersion) {
		return nil, fmt.Errorf("%w: %s is %d.%d.%d, need %s or later", ErrGitTooOld, path,
			v[0], v[1], v[2], MinGitVersion)
	}
	g.version = v
	return g, nil
}

// Path returns the absolute path of the git binary.
func (g *Git) Path() string { return g.path }

// Version returns git's version as major, minor, patch.
func (g *Git) Version() [3]int { return g.version }

var versionRE = regexp.MustCompile(`^git version (\d+)\.(\d+)(?:\.(\d+))?`)

func parseVersion(s string) ([3]int, error) {
	m := versionRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return [3]int{}, fmt.Errorf("unrecognised version %q", firstLine(s))
	}
	var v [3]int
	for i := range 3 {
		if m[i+1] != "" {
			v[i], _ = strconv.Atoi(m[i+1])
		}
	}
	return v, nil
}

func less(a, b [3]int) bool {
	for i := range 3 {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}

func validConfig(c ConfigEntry) error {
	if c.Key == "" || strings.ContainsAny(c.Key, "=\n\x00") {
		return errors.New("invalid key")
	}
	if strings.ContainsAny(c.Value, "\n\x00") {
		return errors.New("value contains a newline or NUL")
	}
	return nil
}

// keptGitVars are the GIT_* variables of the caller's environment that git
// commands inherit: TLS and transfer-speed settings an operator may rely
// on. Every other GIT_* variable is dropped.
var keptGitVars = []string{"GIT_SSL_", "GIT_HTTP_LOW_SPEED_"}

func baseEnv(environ []string) []string {
	var env []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "GIT_") && !hasAnyPrefix(k, keptGitVars) {
			continue
		}
		if k == "LC_ALL" || k == "SSH_ASKPASS" { // set to C below; an askpass program could prompt
			continue
		}
		env = append(env, kv)
	}
	return env
}

// fixedEnv is set for every git command: C messages, no system or global
// configuration, no prompt.
var fixedEnv = []string{
	"LC_ALL=C",
	"GIT_CONFIG_NOSYSTEM=1",
	"GIT_CONFIG_GLOBAL=/dev/null",
	"GIT_TERMINAL_PROMPT=0",
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// cmd is one git command.
type cmd struct {
	dir    string        // working directory ("" = the process's)
	args   []string      // after "git"
	config []ConfigEntry // before Git's own Options.Config
	env    []string      // extra variables (never secrets: use config)
	stdin  io.Reader
	stdout io.Writer // nil: discarded (output() captures instead)
	// secret is redacted from the error message if git ever prints it.
	secret string
}

// env returns the environment of c: the caller's (filtered) and gitEnv.
func (g *Git) env(c cmd) []string {
	return append(append([]string(nil), g.baseEnv...), g.gitEnv(c)...)
}

// gitEnv returns the variables geo sets for c: fixedEnv, c's variables,
// and the configuration (c's, then Options.Config) as GIT_CONFIG_COUNT
// entries.
func (g *Git) gitEnv(c cmd) []string {
	env := make([]string, 0, len(fixedEnv)+len(c.env)+1+2*(len(c.config)+len(g.config)))
	env = append(env, fixedEnv...)
	env = append(env, c.env...)
	n := 0
	for _, list := range [][]ConfigEntry{c.config, g.config} {
		for _, e := range list {
			env = append(env,
				"GIT_CONFIG_KEY_"+strconv.Itoa(n)+"="+e.Key,
				"GIT_CONFIG_VALUE_"+strconv.Itoa(n)+"="+e.Value)
			n++
		}
	}
	return append(env, "GIT_CONFIG_COUNT="+strconv.Itoa(n))
}

// run runs c and returns an error that names the subcommand, its exit
// status and the tail of its standard error (with c.secret redacted). When
// ctx ends, c's process group is killed and the error wraps ctx.Err().
func (g *Git) run(ctx context.Context, c cmd) error {
	x := exec.CommandContext(ctx, g.path, c.args...)
	x.Dir = c.dir
	x.Env = g.env(c)
	x.Stdin = c.stdin
	x.Stdout = c.stdout
	tail := &tailBuffer{limit: g.stderrLimit}
	x.Stderr = tail
	x.WaitDelay = DefaultWaitDelay
	setProcessGroup(x)
	err := x.Run()
	if err == nil {
		return nil
	}
	name := "git"
	if len(c.args) > 0 {
		name = "git " + c.args[0]
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%s: %w", name, ctxErr)
	}
	msg := redact(strings.TrimSpace(tail.String()), c.secret)
	if kind := classify(msg); kind != nil {
		return fmt.Errorf("%s: %w: %w: %s", name, kind, err, msg)
	}
	if msg == "" {
		return fmt.Errorf("%s: %w", name, err)
	}
	return fmt.Errorf("%s: %w: %s", name, err, msg)
}

// output runs c and returns its standard output.
func (g *Git) output(ctx context.Context, c cmd) ([]byte, error) {
	var out bytes.Buffer
	c.stdout = &out
	err := g.run(ctx, c)
	return out.Bytes(), err
}

var httpStatusRE = regexp.MustCompile(`returned error: (\d{3})`)

// classify maps git's messages about the remote's HTTP status to a
// sentinel, or nil.
func classify(msg string) error {
	if m := httpStatusRE.FindStringSubmatch(msg); m != nil {
		switch m[1] {
		case "404":
			return ErrRemoteNotFound
		case "401", "403":
			return ErrRemoteDenied
		}
	}
	switch {
	case strings.Contains(msg, "fatal: repository '") && strings.Contains(msg, "' not found"):
		return ErrRemoteNotFound
	case strings.Contains(msg, "Authentication failed"),
		strings.Contains(msg, "could not read Username"):
		return ErrRemoteDenied
	}
	return nil
}

// redact replaces every occurrence of secret in s.
func redact(s, secret string) string {
	if secret == "" {
		return s
	}
	return strings.ReplaceAll(s, secret, "[REDACTED]")
}

// tailBuffer keeps the last limit bytes written to it.
type tailBuffer struct {
	limit int
	buf   []byte
	cut   bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= t.limit {
		t.cut = t.cut || len(t.buf) > 0 || len(p) > t.limit
		t.buf = append(t.buf[:0], p[len(p)-t.limit:]...)
		return n, nil
	}
	if over := len(t.buf) + len(p) - t.limit; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.cut = true
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

func (t *tailBuffer) String() string {
	if t.cut {
		return "[...]" + string(t.buf)
	}
	return string(t.buf)
}
