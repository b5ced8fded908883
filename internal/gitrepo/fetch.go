package gitrepo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sync/errgroup"
)

// ErrInvalidURL is returned (wrapped) by Fetch for an endpoint that is not
// an absolute http or https URL, or that carries user information
// (credentials belong in FetchParams.Authorization, which never reaches a
// command line). The error never quotes the URL.
var ErrInvalidURL = errors.New("gitrepo: invalid repository URL")

// ErrInvalidAuthorization is returned (wrapped) by Fetch for an
// Authorization value with a CR, LF or NUL byte. The error never quotes
// the value.
var ErrInvalidAuthorization = errors.New("gitrepo: invalid Authorization value")

// FetchParams say what Fetch fetches and how.
type FetchParams struct {
	// RelPath is the repository's path under the Store's root: the
	// record's path, checked like a storage key (strategy.ValidateKey).
	RelPath string
	// URL is the repository's endpoint on the primary (a Server's
	// handler): git appends /info/refs?service=git-upload-pack and
	// /git-upload-pack, and Fetch asks for /HEAD. http or https, with no
	// user information. It appears in git's error messages, so it must
	// hold no secret.
	URL string
	// Authorization, when not empty, is sent as the Authorization header
	// of every request ("Bearer <token>"). It reaches git only through
	// its environment (GIT_CONFIG_COUNT, http.extraHeader), never a
	// command line that other users may read in /proc (the HEAD request
	// is made in-process), and never appears in an error.
	Authorization string
	// Replace fetches the whole repository afresh (a mirror clone, not a
	// fetch borrowing the live copy's objects), and Commit then puts it in
	// place of the live copy. It is for a copy whose objects are damaged
	// or missing: a fetch borrowing them would trust them (git offers the
	// copy's refs as haves and the primary sends nothing it reaches).
	// Without a live copy it changes nothing.
	Replace bool
}

// fetchConfig is the configuration of every command that talks to the
// primary: http(s) only, no redirects (the Authorization header must not
// follow one), no credential helper, packs kept as received (so a commit
// moves a few pack files, not many loose objects), no housekeeping in the
// stage.
var fetchConfig = []ConfigEntry{
	{"protocol.allow", "never"},
	{"protocol.http.allow", "always"},
	{"protocol.https.allow", "always"},
	{"http.followRedirects", "false"},
	{"credential.helper", ""},
	{"fetch.unpackLimit", "1"},
	{"transfer.unpackLimit", "1"},
	{"fetch.writeCommitGraph", "false"},
	{"gc.auto", "0"},
	{"maintenance.auto", "false"},
}

// mirrorRefspec fetches every ref under refs/ to the same name, forcing
// non-fast-forward updates (history rewritten on the primary).
const mirrorRefspec = "+refs/*:refs/*"

// Stage is a fetched repository not yet visible at its path. Exactly one
// of Commit or Abort makes it go away; a Stage is not safe for concurrent
// use.
type Stage struct {
	s       *Store
	relPath string
	live    string // absolute path of the live copy
	dir     string // absolute path of the staging repository
	isNew   bool   // no live copy when the fetch started
	liveID  os.FileInfo
	oldRefs []Ref  // the live copy's refs when the fetch started
	newRefs []Ref  // the stage's refs: the primary's
	oldHead string // the live copy's HEAD target ("" when not symbolic)
	head    string // the primary's HEAD target ("" when unknown)
	replace bool   // a whole clone that replaces the live copy at Commit
	done    bool
}

// Fetch fetches the repository p.RelPath from p.URL into a new stage and
// returns it; nothing is written at p.RelPath. Every ref under refs/ is
// fetched to the same name, refs the primary no longer has are left out
// (prune), and the primary's HEAD is recorded.
//
// When a live copy exists, the stage is a new bare repository that
// borrows the copy's objects (objects/info/alternates) and starts with the
// copy's refs (one packed-refs file): git negotiates with them, so only
// objects the copy lacks travel, they land in the stage only, and only
// the refs that changed are written. The copy's refs are recorded as the
// values a commit will expect. The primary's HEAD is asked for beside the
// fetch (GET <URL>/HEAD, with StoreOptions.Client). Without a live copy
// the stage is a mirror clone in the Store's temporary directory (HEAD
// comes with it).
//
// When ctx ends, git's whole process group is killed, the stage is
// removed, and the error wraps ctx.Err(). Other errors wrap ErrInvalidPath,
// ErrNotRepository (something other than a bare repository is at the
// path), ErrInvalidURL, ErrInvalidAuthorization, ErrRemoteNotFound (404),
// ErrRemoteDenied (401, 403) or git's own failure, with the tail of its
// standard error; none quotes the Authorization value.
func (s *Store) Fetch(ctx context.Context, p FetchParams) (*Stage, error) {
	live, err := within(s.root, p.RelPath)
	if err != nil {
		return nil, fmt.Errorf("gitrepo: fetch: %w", err)
	}
	if err := validURL(p.URL); err != nil {
		return nil, fmt.Errorf("gitrepo: fetch: %w", err)
	}
	if strings.ContainsAny(p.Authorization, "\r\n\x00") {
		return nil, fmt.Errorf("gitrepo: fetch: %w", ErrInvalidAuthorization)
	}
	config := append([]ConfigEntry(nil), fetchConfig...)
	if p.Authorization != "" {
		config = append(config, ConfigEntry{"http.extraHeader", "Authorization: " + p.Authorization})
	}
	st := &Stage{s: s, relPath: p.RelPath, live: live}
	st.dir, _ = s.tempName("stage")
	if _, err := os.Lstat(live); errors.Is(err, fs.ErrNotExist) {
		st.isNew = true
	} else if err := bareRepository(live); err != nil && !p.Replace {
		// Not geo's doing (its renames leave a whole repository or
		// nothing): an operator must look.
		return nil, fmt.Errorf("gitrepo: fetch: the path holds no bare repository: %w", err)
	} else if p.Replace {
		st.replace = true
		if st.liveID, err = os.Lstat(live); err != nil {
			return nil, fmt.Errorf("gitrepo: fetch: live copy: %w", err)
		}
	}
	if st.isNew || st.replace {
		err = st.clone(ctx, p, config)
	} else {
		err = st.fetch(ctx, p, config)
	}
	if err == nil {
		st.newRefs, err = listRefs(ctx, s.git, st.dir)
	}
	if err != nil {
		os.RemoveAll(st.dir)
		return nil, fmt.Errorf("gitrepo: fetch: %w", err)
	}
	return st, nil
}

// clone makes a mirror clone of the primary in st.dir, then drops the
// remote's configuration (it would name the primary's endpoint forever).
func (st *Stage) clone(ctx context.Context, p FetchParams, config []ConfigEntry) error {
	g := st.s.git
	err := g.run(ctx, cmd{
		args:   []string{"clone", "--mirror", "--quiet", "--template=", "--", p.URL, st.dir},
		config: config, secret: p.Authorization,
	})
	if err != nil {
		return err
	}
	if err := g.run(ctx, cmd{dir: st.dir, args: []string{"config", "--remove-section", "remote.origin"}}); err != nil {
		return err
	}
	st.head, err = readHead(st.dir)
	return err
}

// fetch fills an empty stage borrowing the live copy's objects.
func (st *Stage) fetch(ctx context.Context, p FetchParams, config []ConfigEntry) error {
	g := st.s.git
	var err error
	if st.liveID, err = os.Lstat(st.live); err != nil {
		return fmt.Errorf("live copy: %w", err)
	}
	if st.oldHead, err = readHead(st.live); err != nil {
		return fmt.Errorf("live copy: %w", err)
	}
	if st.oldRefs, err = listRefs(ctx, g, st.live); err != nil {
		return fmt.Errorf("live copy: %w", err)
	}
	format, err := objectFormat(ctx, g, st.live, st.oldRefs)
	if err != nil {
		return fmt.Errorf("live copy: %w", err)
	}
	if err := g.run(ctx, cmd{args: []string{"init", "--bare", "--quiet", "--template=",
		"--object-format=" + format, st.dir}}); err != nil {
		return err
	}
	info := filepath.Join(st.dir, "objects", "info")
	if err := os.MkdirAll(info, 0o755); err != nil {
		return err
	}
	alt := filepath.Join(st.live, "objects") + "\n"
	if err := os.WriteFile(filepath.Join(info, "alternates"), []byte(alt), 0o644); err != nil {
		return err
	}
	// The copy's refs, so that the fetch writes only the refs that
	// changed (and prunes the gone ones) instead of every ref as a new
	// loose file.
	if err := writePackedRefs(filepath.Join(st.dir, "packed-refs"), st.oldRefs); err != nil {
		return err
	}
	// The primary's HEAD is asked for beside the fetch.
	eg, ectx := errgroup.WithContext(ctx)
	eg.Go(func() error {
		return g.run(ectx, cmd{dir: st.dir, args: []string{"fetch", "--prune", "--quiet", "--no-write-fetch-head",
			"--no-auto-maintenance", "--no-recurse-submodules", "--", p.URL, mirrorRefspec},
			config: config, secret: p.Authorization})
	})
	eg.Go(func() error {
		var err error
		st.head, err = st.remoteHead(ectx, p)
		return err
	})
	return eg.Wait()
}

// objectFormat returns the object format of the repository at dir: told
// by the length of its object ids when it has refs (saving a git process
// per sync), else by git rev-parse.
func objectFormat(ctx context.Context, g *Git, dir string, refs []Ref) (string, error) {
	if len(refs) > 0 {
		switch len(refs[0].OID) {
		case 40:
			return "sha1", nil
		case 64:
			return "sha256", nil
		}
	}
	out, err := g.output(ctx, cmd{dir: dir, args: []string{"rev-parse", "--show-object-format"}})
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// writePackedRefs writes refs (sorted by name in byte order) as a
// packed-refs file, the files ref backend's format for many refs: a
// "sorted" header line, then "object-id refname" lines; no peeled lines,
// so git peels tags itself when it needs to. (A git whose new repositories
// use another ref backend ignores the file: the fetch then writes every
// ref, slower but the same result.)
func writePackedRefs(path string, refs []Ref) error {
	var b strings.Builder
	b.WriteString("# pack-refs with: sorted \n")
	for _, r := range refs {
		b.WriteString(r.OID)
		b.WriteByte(' ')
		b.WriteString(r.Name)
		b.WriteByte('\n')
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// maxHeadSize bounds a HEAD file (or response) read: "ref: " and a ref
// name (git allows long names, not this long).
const maxHeadSize = 4 << 10

// remoteHead asks the primary which branch its HEAD names ("" when HEAD
// is detached): GET <URL>/HEAD, answered by Server.Serve from the HEAD
// file. One request in-process instead of git ls-remote --symref's two,
// each of which runs git twice on the primary: with it, an incremental
// sync of a small repository cost twice a raw git fetch.
func (st *Stage) remoteHead(ctx context.Context, p FetchParams) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(p.URL, "/")+"/HEAD", nil)
	if err != nil {
		return "", fmt.Errorf("HEAD: %w", ErrInvalidURL)
	}
	if p.Authorization != "" {
		req.Header.Set("Authorization", p.Authorization)
	}
	resp, err := st.s.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("HEAD: %w", err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return "", fmt.Errorf("HEAD: %w", ErrRemoteNotFound)
	case http.StatusUnauthorized, http.StatusForbidden:
		return "", fmt.Errorf("HEAD: %w", ErrRemoteDenied)
	default:
		return "", fmt.Errorf("HEAD: status %s", resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxHeadSize+1))
	if err != nil {
		return "", fmt.Errorf("HEAD: %w", err)
	}
	target, ok := parseHead(b)
	if !ok {
		return "", errors.New("HEAD: the primary answered something that is not a HEAD")
	}
	return target, nil
}

// parseHead parses the content of a HEAD file: the ref it names, or ""
// for a detached HEAD (an object id); ok is false for anything else.
func parseHead(b []byte) (target string, ok bool) {
	if len(b) > maxHeadSize {
		return "", false
	}
	s := strings.TrimSuffix(string(b), "\n")
	if t, found := strings.CutPrefix(s, "ref: "); found {
		if !strings.HasPrefix(t, "refs/") || strings.ContainsFunc(t, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return "", false
		}
		return t, true
	}
	if (len(s) == 40 || len(s) == 64) && isHex(s) {
		return "", true
	}
	return "", false
}

// readHead returns the branch the HEAD file of the repository at dir
// names, or "" when HEAD is detached (the files ref backend's format,
// gitrepository-layout(5)).
func readHead(dir string) (string, error) {
	b, err := readHeadFile(dir)
	if err != nil {
		return "", err
	}
	target, ok := parseHead(b)
	if !ok {
		return "", errors.New("HEAD file holds neither a ref nor an object id")
	}
	return target, nil
}

// readHeadFile returns the content of the repository's HEAD file, which
// must be a regular file of at most maxHeadSize bytes.
func readHeadFile(dir string) ([]byte, error) {
	f, err := os.Open(filepath.Join(dir, "HEAD"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxHeadSize {
		return nil, errors.New("HEAD is not a small regular file")
	}
	return io.ReadAll(io.LimitReader(f, maxHeadSize+1))
}

func validURL(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return fmt.Errorf("%w: does not parse", ErrInvalidURL)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%w: scheme must be http or https", ErrInvalidURL)
	case u.Host == "" || u.Opaque != "":
		return fmt.Errorf("%w: no host", ErrInvalidURL)
	case u.User != nil:
		return fmt.Errorf("%w: user information in the URL (use Authorization)", ErrInvalidURL)
	case u.Fragment != "" || strings.ContainsAny(raw, "\r\n\x00 "):
		return fmt.Errorf("%w: fragment, space or control character", ErrInvalidURL)
	}
	return nil
}

// RelPath returns the repository path the stage is for.
func (st *Stage) RelPath() string { return st.relPath }

// IsNew reports whether the stage is a new repository (there was no live
// copy when the fetch started): Commit renames it into place.
func (st *Stage) IsNew() bool { return st.isNew }

// Refs returns the staged refs (the primary's at fetch time), sorted by
// name.
func (st *Stage) Refs() []Ref { return append([]Ref(nil), st.newRefs...) }

// Checksum returns the refs checksum of the staged refs. The engine
// compares it with the primary's stored checksum before committing: a
// mismatch is a failure (the primary moved on, or the transfer lied),
// never a success.
func (st *Stage) Checksum() string { return ChecksumRefs(st.newRefs) }

// Changed reports whether committing the stage would change the live
// copy: a new repository, a ref to create, move or delete, or a new HEAD.
func (st *Stage) Changed() bool {
	if st.isNew || st.replace {
		return true
	}
	return len(diffRefs(st.oldRefs, st.newRefs)) > 0 || (st.head != "" && st.head != st.oldHead)
}
