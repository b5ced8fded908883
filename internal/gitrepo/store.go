package gitrepo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/geoframework/geo/blob/dirblob"
)

// tempDirName is the directory under a Store's root that holds its stages
// and trash: the directory backend's temporary directory
// (dirblob.ReservedPrefix), whose names it refuses as keys and the
// repository path rule (validRelPath) rejects, so no repository path can
// reach it.
const tempDirName = dirblob.ReservedPrefix

// lockFileName is the file in each owner's temporary subdirectory that the
// owner holds an exclusive flock on while it is open (dirblob's name and
// protocol, so a Store and a dirblob bucket may share a root).
const lockFileName = "lock"

// Store holds the repositories under one root, on a secondary: it fetches
// them into stages, commits stages, removes repositories and verifies them.
// It is safe for concurrent use; operations on different repositories run
// in parallel. The caller serializes the operations that change one
// repository (Stage.Commit, Remove): the engine does it with the record's
// row lock. Fetches may run at any time, even during a Commit or Remove of
// the same repository; they write only into their own stage.
//
// Stages and trash live in root/.geo-tmp/<owner>/, on the same filesystem
// as the repositories, so that moving a new repository into place and a
// removed one out of it are single renames. The owner directory is locked
// (flock) while the Store is open; OpenStore removes every other owner's
// directory whose lock it can take (its owner died), so no stage or trash
// survives a restart. The root must be one filesystem: no mount points
// below it.
type Store struct {
	git     *Git
	client  *http.Client
	root    string   // absolute, symbolic links resolved
	r       *os.Root // root
	tmpRel  string   // ".geo-tmp/<owner>", relative to root
	lock    *os.File // held while open
	seq     atomic.Uint64
	closeMu sync.Once
}

// StoreOptions configure OpenStore. The zero value (or nil) means every
// default.
type StoreOptions struct {
	// Client makes the one request of a sync that is not git's own: the
	// primary's HEAD (GET <URL>/HEAD, which Server.Serve answers without
	// running git), with the same Authorization. It must trust the
	// primary as git does (git's TLS settings go in Options.Config).
	// Redirects are never followed, whatever its CheckRedirect says. Nil
	// means a client over http.DefaultTransport.
	Client *http.Client
}

// OpenStore opens (creating it if needed) the repository root, takes its
// own temporary subdirectory, and removes the stages and trash of dead
// owners (see CleanTemp). Call Close when done.
func OpenStore(ctx context.Context, g *Git, root string, opts *StoreOptions) (*Store, error) {
	if g == nil {
		return nil, errors.New("gitrepo: OpenStore: nil Git")
	}
	client := &http.Client{}
	if opts != nil && opts.Client != nil {
		c := *opts.Client
		client = &c
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	abs, err := resolveRoot(root, true)
	if err != nil {
		return nil, fmt.Errorf("gitrepo: OpenStore: root: %w", err)
	}
	r, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("gitrepo: OpenStore: %w", err)
	}
	s := &Store{git: g, client: client, root: abs, r: r}
	if err := s.takeTemp(); err != nil {
		r.Close()
		return nil, fmt.Errorf("gitrepo: OpenStore: %w", err)
	}
	if _, err := s.CleanTemp(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("gitrepo: OpenStore: %w", err)
	}
	return s, nil
}

// Root returns the absolute path of the repository root.
func (s *Store) Root() string { return s.root }

// Path returns the absolute path of the repository at relPath, after
// checking relPath (the error wraps ErrInvalidPath). The repository need
// not exist.
func (s *Store) Path(relPath string) (string, error) { return within(s.root, relPath) }

// takeTemp creates this Store's temporary subdirectory and locks it. A
// concurrent CleanTemp may take and remove a directory between its
// creation and its locking; then the lock file held is no longer the one
// at the path, and another name is tried.
func (s *Store) takeTemp() error {
	if err := s.r.MkdirAll(tempDirName, 0o700); err != nil {
		return err
	}
	var lastErr error
	for range 8 {
		var b [8]byte
		rand.Read(b[:])
		name := tempDirName + "/" + hex.EncodeToString(b[:])
		if err := s.r.Mkdir(name, 0o700); err != nil {
			lastErr = err
			continue
		}
		lf, err := s.r.OpenFile(name+"/"+lockFileName, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			lastErr = err
			continue
		}
		ok, err := tryLock(lf)
		if err != nil || !ok {
			lf.Close()
			lastErr = fmt.Errorf("lock %s: taken (%v)", name, err)
			continue
		}
		held, err1 := lf.Stat()
		atPath, err2 := s.r.Stat(name + "/" + lockFileName)
		if err1 != nil || err2 != nil || !os.SameFile(held, atPath) {
			lf.Close()
			lastErr = fmt.Errorf("lock %s: removed while taking it", name)
			continue
		}
		s.tmpRel, s.lock = name, lf
		return nil
	}
	return fmt.Errorf("take temporary directory: %w", lastErr)
}

// CleanTemp removes the stages and trash left by dead owners: every entry
// of root/.geo-tmp/ other than this Store's own subdirectory, when it is a
// plain file or a subdirectory whose lock CleanTemp can take. It returns
// how many entries it removed. OpenStore runs it; call it again at will.
func (s *Store) CleanTemp(ctx context.Context) (removed int, err error) {
	f, err := s.r.Open(tempDirName)
	if err != nil {
		return 0, fmt.Errorf("gitrepo: clean temp: %w", err)
	}
	entries, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		return 0, fmt.Errorf("gitrepo: clean temp: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return removed, fmt.Errorf("gitrepo: clean temp: %w", err)
		}
		name := tempDirName + "/" + e.Name()
		if name == s.tmpRel {
			continue
		}
		if !e.IsDir() {
			if err := s.r.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
				continue
			}
			removed++
			continue
		}
		ok, err := s.removeIfDead(name)
		if err != nil {
			errs = append(errs, err)
		} else if ok {
			removed++
		}
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("gitrepo: clean temp: %w", err)
	}
	return removed, nil
}

// removeIfDead removes the temporary subdirectory name if nobody holds its
// lock. Creating the lock file when it is missing closes the race with an
// owner between Mkdir and locking (see takeTemp).
func (s *Store) removeIfDead(name string) (bool, error) {
	lf, err := s.r.OpenFile(name+"/"+lockFileName, os.O_RDWR|os.O_CREATE, 0o600)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil // removed by someone else meanwhile
	}
	if err != nil {
		return false, err
	}
	defer lf.Close()
	ok, err := tryLock(lf)
	if err != nil || !ok {
		return false, err
	}
	if err := s.r.RemoveAll(name); err != nil {
		return false, err
	}
	return true, nil
}

// Close releases this Store's lock and removes its temporary directory:
// stages not yet committed are lost, as after a crash. Fetches, commits
// and removals must have returned. Calling Close again does nothing.
func (s *Store) Close() error {
	var err error
	s.closeMu.Do(func() {
		err = s.r.RemoveAll(s.tmpRel)
		s.lock.Close()
		if cerr := s.r.Close(); err == nil {
			err = cerr
		}
	})
	if err != nil {
		return fmt.Errorf("gitrepo: close: %w", err)
	}
	return nil
}

// tempName returns a new name under this Store's temporary directory,
// absolute and relative to the root.
func (s *Store) tempName(kind string) (abs, rel string) {
	rel = s.tmpRel + "/" + kind + "-" + strconv.FormatUint(s.seq.Add(1), 10)
	return filepath.Join(s.root, rel), rel
}

// Checksum returns the refs checksum of the repository at relPath (see
// ChecksumRefs). The error wraps ErrInvalidPath or ErrNotRepository when
// there is no repository to checksum.
func (s *Store) Checksum(ctx context.Context, relPath string) (string, error) {
	dir, err := s.repository(relPath)
	if err != nil {
		return "", fmt.Errorf("gitrepo: checksum: %w", err)
	}
	return checksum(ctx, s.git, dir)
}

// Verify checks the repository at relPath against the primary's refs
// checksum want and, if they match, checks its objects with git fsck
// (mode). It returns nil only when both pass: that is the condition for
// skipping a download (VerifyConnectivity) and for a re-verification to
// succeed. The error wraps ErrNotRepository (no copy), ErrChecksumMismatch
// (refs differ: resync), ErrNotConnected (refs match but objects are
// missing or damaged: resync), or another error when the check itself
// could not run.
func (s *Store) Verify(ctx context.Context, relPath, want string, mode VerifyMode) error {
	dir, err := s.repository(relPath)
	if err != nil {
		return fmt.Errorf("gitrepo: verify: %w", err)
	}
	got, err := checksum(ctx, s.git, dir)
	if err != nil {
		return fmt.Errorf("gitrepo: verify: %w", err)
	}
	if got != want {
		return fmt.Errorf("gitrepo: verify: %w: copy %s, want %s", ErrChecksumMismatch, got, want)
	}
	if err := fsck(ctx, s.git, dir, mode); err != nil {
		return fmt.Errorf("gitrepo: verify: %w", err)
	}
	return nil
}

// repository returns the path of the bare repository at relPath, or an
// error wrapping ErrInvalidPath or ErrNotRepository.
func (s *Store) repository(relPath string) (string, error) {
	dir, err := within(s.root, relPath)
	if err != nil {
		return "", err
	}
	if err := bareRepository(dir); err != nil {
		return "", err
	}
	return dir, nil
}
