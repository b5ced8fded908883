package blob

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"iter"
	"sync"
	"time"

	"github.com/geoframework/geo/blob/driver"
	"github.com/geoframework/geo/strategy"
)

// ErrNotExist is returned (wrapped) when no blob is stored at a key.
var ErrNotExist = errors.New("not found")

// ErrInvalidKey is returned (wrapped) for a key that fails
// strategy.ValidateKey, or that the backend reserves for itself. Such a key
// never reaches the storage. It is strategy.ErrInvalidKey itself, so
// errors.Is works with either name.
var ErrInvalidKey = strategy.ErrInvalidKey

// ErrChecksumMismatch is returned (wrapped) when bytes do not have the
// SHA-256 they were expected to have: by a Writer's Commit given
// WriteOptions.SHA256, and by the engines wherever a copy differs from the
// primary's checksum (in transit or at rest). It is geo's one sentinel for
// that condition.
var ErrChecksumMismatch = errors.New("checksum mismatch")

// ErrClosed is returned (wrapped) by every method of a Bucket after Close.
var ErrClosed = errors.New("bucket is closed")

// ErrWriterDone is returned (wrapped) by a Writer's methods after Commit or
// Abort.
var ErrWriterDone = errors.New("writer already committed or aborted")

// Info describes a stored blob.
type Info struct {
	Size    int64
	ModTime time.Time
}

// Bucket is where one site keeps its blobs, addressed by key: the portable
// type over a storage backend (a driver.Bucket: blob/dirblob for a
// directory, blob/cloudblob for object storage). It does for every backend
// what a backend must not repeat: it validates every key before any call
// reaches the backend, hashes what is written and checks it against the
// expected checksum before committing, commits or aborts a write exactly
// once, refuses calls after Close, and wraps every error once with the
// operation and the key, mapping the backend's not-found and invalid-key
// errors to ErrNotExist and ErrInvalidKey.
//
// A Bucket is safe for concurrent use.
type Bucket struct {
	d driver.Bucket

	mu     sync.RWMutex
	closed bool
}

// NewBucket returns the portable Bucket over backend d. Backend packages
// call it (dirblob.Open, cloudblob.OpenBucket); tests wrap a backend's
// driver to inject faults and call it themselves.
func NewBucket(d driver.Bucket) *Bucket { return &Bucket{d: d} }

// Driver returns the backend under b, for tests and for backends' own
// helpers (As-style access to the driver type by assertion).
func (b *Bucket) Driver() driver.Bucket { return b.d }

// check validates key and that b is open; the caller holds b.mu for
// reading until its driver call returns.
func (b *Bucket) check(op, key string) error {
	if b.closed {
		return fmt.Errorf("blob: %s %q: %w", op, key, ErrClosed)
	}
	if err := strategy.ValidateKey(key); err != nil {
		return fmt.Errorf("blob: %s: %w", op, err)
	}
	return nil
}

// wrap wraps a backend's error of op on key once, with the sentinel its
// code maps to.
func (b *Bucket) wrap(op, key string, err error) error {
	if err == nil {
		return nil
	}
	switch b.d.ErrorCode(err) {
	case driver.NotFound:
		return fmt.Errorf("blob: %s %q: %w: %w", op, key, ErrNotExist, err)
	case driver.InvalidKey:
		return fmt.Errorf("blob: %s %q: %w: %w", op, key, ErrInvalidKey, err)
	}
	return fmt.Errorf("blob: %s %q: %w", op, key, err)
}

// Open opens the blob at key for reading. It returns an error matching
// ErrNotExist when there is none and ErrInvalidKey for a bad key. The
// Reader reads one version of the blob: a later Commit to the key does not
// change what it reads.
func (b *Bucket) Open(ctx context.Context, key string) (*Reader, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if err := b.check("open", key); err != nil {
		return nil, err
	}
	r, err := b.d.NewRangeReader(ctx, key, 0, -1)
	if err != nil {
		return nil, b.wrap("open", key, err)
	}
	return &Reader{b: b, key: key, ctx: ctx, r: r, attrs: r.Attributes()}, nil
}

// Stat describes the blob at key, or returns an error matching ErrNotExist.
func (b *Bucket) Stat(ctx context.Context, key string) (Info, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if err := b.check("stat", key); err != nil {
		return Info{}, err
	}
	a, err := b.d.Attributes(ctx, key)
	if err != nil {
		return Info{}, b.wrap("stat", key, err)
	}
	return Info{Size: a.Size, ModTime: a.ModTime}, nil
}

// WriteOptions are what a writer knows about a blob before writing it. The
// zero value (or nil) means nothing is known.
type WriteOptions struct {
	// SHA256 is the lowercase hex SHA-256 the bytes must have; "" means
	// unknown. When set, Commit refuses bytes that differ (an error
	// matching ErrChecksumMismatch, nothing published), and the backend
	// may have its service check it too.
	SHA256 string
	// Size is the number of bytes to be written when positive; 0 means
	// unknown.
	Size int64
}

// Create starts writing a new version of the blob at key. Nothing is
// visible at key before Commit; Abort, or ctx ending before Commit,
// discard the bytes and leave nothing behind. A Commit that fails leaves
// the old version or the whole new one at key (see Writer.Commit). ctx
// governs the Writer until Commit or Abort: ending it is how a Write
// blocked on a stalled service is interrupted (Abort waits for it).
func (b *Bucket) Create(ctx context.Context, key string, opts *WriteOptions) (*Writer, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if err := b.check("create", key); err != nil {
		return nil, err
	}
	var o WriteOptions
	if opts != nil {
		o = *opts
	}
	dopts := &driver.WriterOptions{SHA256: o.SHA256, Size: -1}
	if o.Size > 0 {
		dopts.Size = o.Size
	}
	w, err := b.d.NewWriter(ctx, key, dopts)
	if err != nil {
		return nil, b.wrap("create", key, err)
	}
	return &Writer{b: b, key: key, w: w, want: o.SHA256, h: sha256.New()}, nil
}

// Remove deletes the blob at key, durably. Removing a missing blob is not
// an error.
func (b *Bucket) Remove(ctx context.Context, key string) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if err := b.check("remove", key); err != nil {
		return err
	}
	return b.wrap("remove", key, b.d.Delete(ctx, key))
}

// RemoveBatch deletes the blobs at keys, not yet durably when the backend
// removes many at once more cheaply (driver.BatchDeleter): they are gone
// for every reader, and SyncRemoved makes their removal durable. With other
// backends each is removed durably, one by one. Missing blobs are skipped.
func (b *Bucket) RemoveBatch(ctx context.Context, keys []string) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, k := range keys {
		if err := b.check("remove", k); err != nil {
			return err
		}
	}
	if bd, ok := b.d.(driver.BatchDeleter); ok {
		if err := bd.DeleteBatch(ctx, keys); err != nil {
			return fmt.Errorf("blob: remove %d blobs: %w", len(keys), err)
		}
		return nil
	}
	for _, k := range keys {
		if err := b.d.Delete(ctx, k); err != nil {
			return b.wrap("remove", k, err)
		}
	}
	return nil
}

// SyncRemoved makes the removals of RemoveBatch at keys durable.
func (b *Bucket) SyncRemoved(ctx context.Context, keys []string) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return fmt.Errorf("blob: sync removals: %w", ErrClosed)
	}
	if bd, ok := b.d.(driver.BatchDeleter); ok {
		if err := bd.SyncDeletes(ctx, keys); err != nil {
			return fmt.Errorf("blob: sync removals: %w", err)
		}
	}
	return nil
}

// Keys yields every stored key greater than after ("" for all), in
// ascending byte order, as the backend lists them (blobs being written
// and keys the backend reserves are not listed; a listing is not a
// snapshot). The first error ends the sequence. The secondary's existence
// scan merges it with the registry's synced rows in the same order.
func (b *Bucket) Keys(ctx context.Context, after string) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		b.mu.RLock()
		closed := b.closed
		b.mu.RUnlock()
		if closed {
			yield("", fmt.Errorf("blob: list: %w", ErrClosed))
			return
		}
		for k, err := range b.d.List(ctx, after) {
			if err != nil {
				yield("", fmt.Errorf("blob: list after %q: %w", after, err))
				return
			}
			if !yield(k, nil) {
				return
			}
		}
	}
}

// Close closes the backend. Readers and Writers opened before may still
// be used; every other call fails with ErrClosed.
func (b *Bucket) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	if err := b.d.Close(); err != nil {
		return fmt.Errorf("blob: close: %w", err)
	}
	return nil
}

// Reader reads one stored blob. It is an io.ReadSeekCloser (Seek reopens
// the blob at the offset, so http.ServeContent can serve ranges) and an
// io.WriterTo when the backend's reader is one (a file's copy goes through
// the kernel).
type Reader struct {
	b     *Bucket
	key   string
	ctx   context.Context
	r     driver.Reader
	attrs driver.Attributes
	off   int64 // of the next byte r returns
	pos   int64 // the position Seek set; r is reopened when they differ
}

// Size is the blob's size in bytes.
func (r *Reader) Size() int64 { return r.attrs.Size }

// ModTime is when the blob was last written.
func (r *Reader) ModTime() time.Time { return r.attrs.ModTime }

// Read implements io.Reader.
func (r *Reader) Read(p []byte) (int, error) {
	if err := r.reopen(); err != nil {
		return 0, err
	}
	n, err := r.r.Read(p)
	r.off += int64(n)
	r.pos = r.off
	if err != nil && err != io.EOF {
		return n, r.b.wrap("read", r.key, err)
	}
	return n, err
}

// reopen opens the backend's reader at the position Seek set.
func (r *Reader) reopen() error {
	if r.pos == r.off && r.r != nil {
		return nil
	}
	if r.r != nil {
		r.r.Close()
		r.r = nil
	}
	if r.pos >= r.attrs.Size {
		r.r, r.off = eofReader{r.attrs}, r.pos
		return nil
	}
	nr, err := r.b.d.NewRangeReader(r.ctx, r.key, r.pos, -1)
	if err != nil {
		return r.b.wrap("read", r.key, err)
	}
	r.r, r.off = nr, r.pos
	return nil
}

// Seek implements io.Seeker.
func (r *Reader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = r.pos + offset
	case io.SeekEnd:
		abs = r.attrs.Size + offset
	default:
		return 0, fmt.Errorf("blob: seek %q: bad whence %d", r.key, whence)
	}
	if abs < 0 {
		return 0, fmt.Errorf("blob: seek %q: negative position %d", r.key, abs)
	}
	r.pos = abs
	return abs, nil
}

// WriteTo implements io.WriterTo, through the backend's reader when it
// is one.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	if err := r.reopen(); err != nil {
		return 0, err
	}
	var n int64
	var err error
	if wt, ok := r.r.(io.WriterTo); ok {
		n, err = wt.WriteTo(w)
	} else {
		n, err = io.CopyBuffer(w, onlyReader{r.r}, make([]byte, bufSizeFor(r)))
	}
	r.off += n
	r.pos = r.off
	if err != nil {
		return n, r.b.wrap("read", r.key, err)
	}
	return n, nil
}

// Close implements io.Closer.
func (r *Reader) Close() error {
	if r.r == nil {
		return nil
	}
	err := r.r.Close()
	r.r = nil
	return err
}

// onlyReader hides a reader's WriterTo from io.CopyBuffer.
type onlyReader struct{ io.Reader }

// eofReader is an empty reader past a blob's end.
type eofReader struct{ attrs driver.Attributes }

func (eofReader) Read([]byte) (int, error)        { return 0, io.EOF }
func (eofReader) Close() error                    { return nil }
func (e eofReader) Attributes() driver.Attributes { return e.attrs }

// Writer receives a new version of a blob and hashes what it writes.
type Writer struct {
	b    *Bucket
	key  string
	w    driver.Writer
	want string

	mu   sync.Mutex
	h    hash.Hash
	n    int64
	done bool
}

// Write implements io.Writer.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return 0, fmt.Errorf("blob: write %q: %w", w.key, ErrWriterDone)
	}
	n, err := w.w.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	if err != nil {
		return n, w.b.wrap("write", w.key, err)
	}
	return n, nil
}

// Written returns the number of bytes written so far and their lowercase
// hex SHA-256.
func (w *Writer) Written() (n int64, sha256 string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n, hex.EncodeToString(w.h.Sum(nil))
}

// Sync makes the bytes written so far durable before Commit, without
// publishing them, when the backend can (driver.Syncer; otherwise it does
// nothing): Commit then only publishes. Bytes written after Sync are made
// durable by Commit.
func (w *Writer) Sync(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return fmt.Errorf("blob: sync %q: %w", w.key, ErrWriterDone)
	}
	if s, ok := w.w.(driver.Syncer); ok {
		return w.b.wrap("sync", w.key, s.Sync(ctx))
	}
	return nil
}

// Commit makes the bytes durable and visible at the key, atomically: a
// reader sees the old version or the new one, never a mix or a prefix.
// When the Writer was created with WriteOptions.SHA256 and the bytes have
// another checksum, it aborts and returns an error matching
// ErrChecksumMismatch (nothing new is visible). Commit or Abort must be
// called exactly once.
//
// Any other failed Commit leaves the old version or the whole new one at
// the key, never a part: an object store may have published the object
// although its answer was lost (a connection reset after the upload, the
// Commit's context ending while the service completes it). Treat a failed
// Commit as "not known to be written": write again, or read what is there
// (geo's sync engine retries the sync, and its skip-download finds the
// whole new version already in place).
func (w *Writer) Commit(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return fmt.Errorf("blob: commit %q: %w", w.key, ErrWriterDone)
	}
	w.done = true
	if w.want != "" {
		if got := hex.EncodeToString(w.h.Sum(nil)); got != w.want {
			w.w.Abort()
			return fmt.Errorf("blob: commit %q: %w: got %s, want %s", w.key, ErrChecksumMismatch, got, w.want)
		}
	}
	return w.b.wrap("commit", w.key, w.w.Commit(ctx))
}

// Abort discards the bytes. It is safe to call after Commit (then it does
// nothing) and more than once. It waits for a Write in progress to return,
// so it cannot interrupt a Write blocked on a stalled service: end the
// context given to Create for that.
func (w *Writer) Abort() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return nil
	}
	w.done = true
	return w.b.wrap("abort", w.key, w.w.Abort())
}
