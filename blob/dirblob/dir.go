// Package dirblob is the directory backend of [blob.Bucket]: the blob at
// key is the file root/key. [Open] returns the portable blob.Bucket over
// it; [New] returns the driver itself ([Dir]), for wrappers (fault
// injection in tests).
//
// It implements [driver.Bucket] and its optional [driver.Syncer] (on its
// Writers) and [driver.BatchDeleter]. Keys starting with [ReservedPrefix]
// (".geo-tmp") are its own (its temporary files) and are refused with
// [driver.InvalidKey].
package dirblob

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/blob/driver"
)

// ReservedPrefix starts the names this backend keeps for itself under
// root (its temporary files): keys starting with it are refused.
const ReservedPrefix = ".geo-tmp"

// errReserved is the error for a key under ReservedPrefix.
var errReserved = errors.New("dirblob: keys starting with " + ReservedPrefix + " are reserved for temporary files")

// reserved reports whether key starts with ReservedPrefix.
func reserved(key string) bool { return strings.HasPrefix(key, ReservedPrefix) }

// lockFileName is the file in each Dir's temporary subdirectory that its
// owner holds an exclusive flock on for as long as the Dir is open.
const lockFileName = "lock"

// Dir is the directory backend (a driver.Bucket): the blob at key lives in
// the file root/key. It is safe for concurrent use, and several Dirs (in one
// or several processes) may share a root.
//
// Writes are durable and atomic. Create writes into a temporary file; Commit
// fsyncs it, renames it to its key (creating and fsyncing any missing parent
// directories) and fsyncs the key's directory, so a reader sees the old
// bytes or the new ones, never a prefix, and a crash after Commit returns
// loses nothing.
//
// Temporary files live in a dedicated directory, root/.geo-tmp/, on the same
// filesystem as the blobs (so the rename is atomic), and never next to their
// key: cleaning up after a crash then costs O(temporary files) and never
// walks the whole tree, which may hold millions of blobs. Keys starting with
// ".geo-tmp" are reserved (refused with driver.InvalidKey). Each Dir owns a
// subdirectory root/.geo-tmp/<random>/ and holds an exclusive flock on a lock
// file inside it while open; CleanTemp (run by New) removes every other
// subdirectory whose lock it can take, that is, whose owner has died. So no
// temporary file survives a restart, even with several processes sharing
// root.
//
// All file access goes through an os.Root, or on Linux through openat2
// with RESOLVE_BENEATH (the same rule, resolved by the kernel in one call)
// and system calls relative to directories opened that way, so even a
// symbolic link planted under root cannot make Dir touch a file outside
// it. Keys reach it validated by the portable blob.Bucket.
type Dir struct {
	root    *os.Root
	path    string   // absolute path of root
	tmpName string   // ".geo-tmp/<random>", relative to root
	tmpDir  *os.File // tmpName, open
	rootDir *os.File // root, open (openRead's openat2)
	lock    *os.File
	// noOpenat2 is set once openat2 turned out to be unavailable.
	noOpenat2 atomic.Bool
	seq       atomic.Uint64 // temporary file names
	closed    sync.Once
}

// Open opens (creating it if needed) the storage directory root as a
// portable blob.Bucket (see New). Close the Bucket when done.
func Open(root string) (*blob.Bucket, error) {
	d, err := New(root)
	if err != nil {
		return nil, err
	}
	return blob.NewBucket(d), nil
}

// New opens (creating it if needed) the storage directory root, takes its
// own temporary subdirectory, and removes the temporary files of dead
// owners (see CleanTemp). Call Close when done (or Close the blob.Bucket
// over it).
func New(root string) (*Dir, error) {
	if root == "" {
		return nil, errors.New("dirblob: New: root is empty")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("dirblob: New: %w", err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("dirblob: New: %w", err)
	}
	r, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("dirblob: New: %w", err)
	}
	d := &Dir{root: r, path: abs}
	if d.rootDir, err = r.Open("."); err != nil {
		r.Close()
		return nil, fmt.Errorf("dirblob: New: %w", err)
	}
	if err := d.takeTemp(); err != nil {
		d.rootDir.Close()
		r.Close()
		return nil, fmt.Errorf("dirblob: New: %w", err)
	}
	if _, err := d.CleanTemp(context.Background()); err != nil {
		d.Close()
		return nil, fmt.Errorf("dirblob: New: %w", err)
	}
	return d, nil
}

// takeTemp creates this Dir's temporary subdirectory and locks it. A
// concurrent CleanTemp may take and remove a directory between its creation
// and its locking; then the lock file we hold is no longer the one at the
// path, and we try again with a new name.
func (d *Dir) takeTemp() error {
	if err := d.root.MkdirAll(ReservedPrefix, 0o700); err != nil {
		return err
	}
	var lastErr error
	for range 8 {
		var b [8]byte
		rand.Read(b[:])
		name := ReservedPrefix + "/" + hex.EncodeToString(b[:])
		if err := d.root.Mkdir(name, 0o700); err != nil {
			lastErr = err
			continue
		}
		lf, err := d.root.OpenFile(name+"/"+lockFileName, os.O_RDWR|os.O_CREATE, 0o600)
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
		atPath, err2 := d.root.Stat(name + "/" + lockFileName)
		if err1 != nil || err2 != nil || !os.SameFile(held, atPath) {
			lf.Close()
			lastErr = fmt.Errorf("lock %s: removed while taking it", name)
			continue
		}
		dir, err := d.root.Open(name)
		if err != nil {
			lf.Close()
			lastErr = err
			continue
		}
		d.tmpName, d.tmpDir, d.lock = name, dir, lf
		return nil
	}
	return fmt.Errorf("take temporary directory: %w", lastErr)
}

// Root returns the absolute path of the storage directory.
func (d *Dir) Root() string { return d.path }

// CleanTemp removes the temporary files left by dead owners: every entry
// of root/.geo-tmp/ other than this Dir's own subdirectory, when it is a
// plain file or a subdirectory whose lock CleanTemp can take. Subdirectories
// of live Dirs (in this or another process) are left alone. It returns how
// many entries it removed. New runs it; call it again at will.
func (d *Dir) CleanTemp(ctx context.Context) (removed int, err error) {
	f, err := d.root.Open(ReservedPrefix)
	if err != nil {
		return 0, fmt.Errorf("dirblob: clean temp: %w", err)
	}
	entries, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		return 0, fmt.Errorf("dirblob: clean temp: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return removed, fmt.Errorf("dirblob: clean temp: %w", err)
		}
		name := ReservedPrefix + "/" + e.Name()
		if name == d.tmpName {
			continue
		}
		if !e.IsDir() {
			if err := d.root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
				continue
			}
			removed++
			continue
		}
		ok, err := d.removeIfDead(name)
		if err != nil {
			errs = append(errs, err)
		} else if ok {
			removed++
		}
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("dirblob: clean temp: %w", err)
	}
	return removed, nil
}

// removeIfDead removes the temporary subdirectory name if nobody holds its
// lock. Creating the lock file when it is missing closes the race with an
// owner between Mkdir and locking (see takeTemp).
func (d *Dir) removeIfDead(name string) (bool, error) {
	lf, err := d.root.OpenFile(name+"/"+lockFileName, os.O_RDWR|os.O_CREATE, 0o600)
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
	if err := d.root.RemoveAll(name); err != nil {
		return false, err
	}
	return true, nil
}

// Close releases this Dir's lock and removes its temporary files (any
// uncommitted writes are lost). The Dir must not be used afterwards.
// Calling Close again does nothing.
func (d *Dir) Close() error {
	var err error
	d.closed.Do(func() {
		err = d.root.RemoveAll(d.tmpName)
		d.tmpDir.Close()
		d.rootDir.Close()
		d.lock.Close()
		if cerr := d.root.Close(); err == nil {
			err = cerr
		}
	})
	if err != nil {
		return fmt.Errorf("dirblob: close: %w", err)
	}
	return nil
}

// ErrorCode implements driver.Bucket.
func (d *Dir) ErrorCode(err error) driver.Code {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR), errors.Is(err, errNotRegular):
		return driver.NotFound
	case errors.Is(err, errReserved):
		return driver.InvalidKey
	}
	return driver.Unknown
}

// errNotRegular is the error for a key that names something other than a
// regular file (a directory): not a blob.
var errNotRegular = errors.New("not a regular file")

// NewRangeReader implements driver.Bucket. The Reader reads a stable
// snapshot: a later Commit to the same key does not change what it reads.
func (d *Dir) NewRangeReader(ctx context.Context, key string, offset, length int64) (driver.Reader, error) {
	if reserved(key) {
		return nil, errReserved
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := d.openRead(key)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, errNotRegular
	}
	r := &fileReader{f: f, attrs: driver.Attributes{Size: fi.Size(), ModTime: fi.ModTime()}, r: f}
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			f.Close()
			return nil, err
		}
	}
	if length >= 0 {
		r.r = io.LimitReader(f, length)
	}
	return r, nil
}

// Attributes implements driver.Bucket.
func (d *Dir) Attributes(ctx context.Context, key string) (driver.Attributes, error) {
	if reserved(key) {
		return driver.Attributes{}, errReserved
	}
	if err := ctx.Err(); err != nil {
		return driver.Attributes{}, err
	}
	fi, err := d.root.Stat(key)
	if err != nil {
		return driver.Attributes{}, err
	}
	if !fi.Mode().IsRegular() {
		return driver.Attributes{}, errNotRegular
	}
	return driver.Attributes{Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Delete implements driver.Bucket. It fsyncs the key's directory, so a
// removed blob does not come back after a crash. A directory at key is not
// a blob: Delete leaves it alone and returns nil. Emptied parent
// directories are kept (removing them would race with a concurrent
// NewWriter below them).
func (d *Dir) Delete(ctx context.Context, key string) error {
	if reserved(key) {
		return errReserved
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	fi, err := d.root.Lstat(key)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil
		}
		return err
	}
	if fi.IsDir() {
		return nil
	}
	if err := d.root.Remove(key); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return d.syncDir(path.Dir(key))
}

// NewWriter implements driver.Bucket. The temporary file is removed by
// Abort, by a failed Commit, when ctx is done before Commit, and by Close.
func (d *Dir) NewWriter(ctx context.Context, key string, _ *driver.WriterOptions) (driver.Writer, error) {
	if reserved(key) {
		return nil, errReserved
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	tmpBase := "w-" + strconv.FormatUint(d.seq.Add(1), 10)
	tmp := d.tmpName + "/" + tmpBase
	f, err := d.createTemp(tmpBase, tmp)
	if err != nil {
		return nil, err
	}
	w := &dirWriter{d: d, ctx: ctx, key: key, tmp: tmp, tmpBase: tmpBase, f: f}
	w.stop = context.AfterFunc(ctx, func() { w.discard(context.Cause(ctx)) })
	return w, nil
}

// syncDir fsyncs the directory rel (relative to root; "." is root).
func (d *Dir) syncDir(rel string) error {
	f, err := d.openRead(rel)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ensureDir creates the directory rel and any missing parents, fsyncing the
// parent of each one it creates (or finds created concurrently), so the new
// directory entries are durable before a blob is renamed into them.
func (d *Dir) ensureDir(rel string) error {
	if rel == "." {
		return nil
	}
	fi, err := d.root.Stat(rel)
	if err == nil {
		if fi.IsDir() {
			return nil
		}
		return fmt.Errorf("%s: %w", rel, syscall.ENOTDIR)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	parent := path.Dir(rel)
	if err := d.ensureDir(parent); err != nil {
		return err
	}
	if err := d.root.Mkdir(rel, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return d.syncDir(parent)
}

// fileReader is Dir's driver.Reader.
type fileReader struct {
	f     *os.File
	r     io.Reader // f, or f limited to a range
	attrs driver.Attributes
}

func (r *fileReader) Read(p []byte) (int, error)    { return r.r.Read(p) }
func (r *fileReader) Close() error                  { return r.f.Close() }
func (r *fileReader) Attributes() driver.Attributes { return r.attrs }

// WriteTo copies the file with the kernel's help when it reads to the
// end: to a writer that reads from files itself (an HTTP response: with
// sendfile), or through the file's own WriteTo (splice).
func (r *fileReader) WriteTo(w io.Writer) (int64, error) {
	if r.r != io.Reader(r.f) {
		return io.Copy(w, r.r)
	}
	if rf, ok := w.(io.ReaderFrom); ok {
		return rf.ReadFrom(r.f)
	}
	return r.f.WriteTo(w)
}

// errWriterDone is returned by Write and Commit after Commit or Abort.
var errWriterDone = errors.New("dirblob: writer already committed or aborted")

// dirWriter is Dir's Writer. mu serializes Write, Commit and Abort with the
// discard triggered by the Create context.
type dirWriter struct {
	d       *Dir
	ctx     context.Context // Create's: when done, the writer is discarded
	key     string
	tmp     string // relative to root
	tmpBase string // name in the temporary directory
	stop    func() bool

	mu        sync.Mutex
	f         *os.File
	done      bool // committed or discarded
	committed bool
	synced    bool  // the file was fsynced and not written since (Sync)
	cause     error // why it was discarded, if it was
}

func (w *dirWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return 0, w.doneErr("write")
	}
	n, err := w.f.Write(p)
	if n > 0 {
		w.synced = false
	}
	return n, err
}

// discard removes the temporary file if the writer is still open; cause
// says why. The caller must not hold mu.
func (w *dirWriter) discard(cause error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.discardLocked(cause)
}

func (w *dirWriter) discardLocked(cause error) error {
	if w.done {
		return nil
	}
	w.done, w.cause = true, cause
	w.f.Close()
	if err := w.d.root.Remove(w.tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func (w *dirWriter) Abort() error {
	w.stop()
	return w.discard(errors.New("aborted"))
}

// doneErr is the error of operation op on a writer already committed or
// discarded: why it was discarded, or errWriterDone. mu must be held.
func (w *dirWriter) doneErr(op string) error {
	if w.cause != nil {
		return fmt.Errorf("%s: %w", op, w.cause)
	}
	return errWriterDone
}

// Sync fsyncs the temporary file (Syncer): Commit then skips that fsync
// unless more bytes were written since.
func (w *dirWriter) Sync(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return w.doneErr("sync")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := w.f.Sync(); err != nil {
		return err
	}
	w.synced = true
	return nil
}

func (w *dirWriter) Commit(ctx context.Context) error {
	w.stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return w.doneErr("commit")
	}
	fail := func(err error) error {
		w.discardLocked(err)
		return err
	}
	// stop may have lost the race with the discard callback, which then
	// waits for mu: check the Create context ourselves.
	if w.ctx.Err() != nil {
		return fail(context.Cause(w.ctx))
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	if !w.synced {
		if err := w.f.Sync(); err != nil {
			return fail(err)
		}
	}
	if err := w.f.Close(); err != nil {
		return fail(err)
	}
	renamed, err := w.d.publish(w.tmpBase, w.tmp, w.key)
	if !renamed {
		return fail(err)
	}
	w.done, w.committed = true, true
	// The new bytes are visible; only their directory entry's durability
	// is left. If that fsync fails the blob stays (the old version is gone
	// already) and the caller must not count it as durable.
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}
