// Package driver defines the interface a storage backend implements so
// that geo can keep blobs in it: the small "driver" ([Bucket], [Writer],
// [Reader]) under the portable blob.Bucket, as go-cloud's blob/driver is
// under its blob.Bucket.
//
// The portable type does everything once, for every backend: it validates
// keys (strategy.ValidateKey) before any call reaches a driver, hashes
// every byte written (SHA-256) and checks it against the checksum the
// caller expects before it commits, calls Commit or Abort exactly once on
// a Writer, refuses calls after Close, and wraps every error with the
// operation and the key, mapping [Bucket].ErrorCode's [Code] to its
// sentinels ([NotFound] to blob.ErrNotExist, [InvalidKey] to
// blob.ErrInvalidKey). A backend therefore implements only storage, and
// must not repeat any of that. Optional interfaces ([Syncer],
// [BatchDeleter]) let a backend do some things better; the portable type
// finds them by type assertion.
//
// The conformance suite for backends is blob/storagetest: a backend that
// passes it is fit for geo. This package is for backend authors; adopters
// use blob.Bucket and an existing backend (blob/dirblob, blob/cloudblob).
package driver

import (
	"context"
	"io"
	"iter"
	"time"
)

// Code classifies an error returned by a Bucket's methods.
type Code int

const (
	// Unknown is any error not classified below.
	Unknown Code = iota
	// NotFound means no object is stored at the key.
	NotFound
	// InvalidKey means the backend cannot store an object at the key
	// (for example one it reserves for itself), although the key passed
	// strategy.ValidateKey.
	InvalidKey
)

// Attributes describes a stored object.
type Attributes struct {
	// Size is the object's size in bytes.
	Size int64
	// ModTime is when the object was last written.
	ModTime time.Time
}

// WriterOptions are the facts known about an object before it is written.
type WriterOptions struct {
	// SHA256 is the lowercase hex SHA-256 the bytes are expected to have,
	// "" when unknown. The portable type checks it itself before Commit;
	// a backend may also send it to its service (for example S3's
	// x-amz-checksum-sha256) so the service refuses bytes that differ.
	SHA256 string
	// Size is the number of bytes that will be written, -1 when unknown.
	Size int64
}

// Bucket is a backend. Its methods are called concurrently, for the same
// key as well as different ones, and must be safe for concurrent use.
// Every key a method receives has passed strategy.ValidateKey: relative,
// slash-separated, no empty, "." or ".." segments, no NUL or backslash,
// at most strategy.KeyLenMax bytes.
type Bucket interface {
	// Attributes describes the object at key. If there is none it must
	// return an error for which ErrorCode returns NotFound.
	Attributes(ctx context.Context, key string) (Attributes, error)

	// NewRangeReader opens the object at key for reading length bytes
	// from offset (length < 0: to the end). If there is none it must
	// return an error for which ErrorCode returns NotFound. The Reader
	// must read one version of the object: a Commit to the same key
	// while it reads must not change what it returns. offset is at least
	// 0 and at most the object's size.
	NewRangeReader(ctx context.Context, key string, offset, length int64) (Reader, error)

	// NewWriter starts writing a new version of the object at key. Nothing
	// may be visible at key before Commit is called; the old version, if
	// any, stays readable until the new one replaces it. After Abort, when
	// ctx ends before Commit is called, and after a crash before Commit is
	// called, nothing new may be visible at key or at any other key. A
	// Commit that fails, or a crash during Commit, leaves at key the old
	// version or the whole new one, never a mix or a part, and nothing
	// new at any other key: an object store may have published the object
	// although its answer was lost, and the caller must treat a failed
	// Commit as "not known to be written", not as "not written". In every
	// case no temporary data may remain once the backend is opened again
	// (or, for object stores, once a documented lifecycle rule has run).
	//
	// ctx governs the Writer until Commit or Abort: when it ends, a Write
	// in progress (blocked on a stalled service, say) must return, with an
	// error. Abort is never called while a Write is in progress (the
	// portable type serialises them), so ctx is the only way to interrupt
	// one. opts is never nil.
	NewWriter(ctx context.Context, key string, opts *WriterOptions) (Writer, error)

	// Delete removes the object at key. A missing object is not an error:
	// Delete must be idempotent. When it returns nil the removal is
	// durable.
	Delete(ctx context.Context, key string) error

	// List yields every stored key greater than after ("" for all), in
	// ascending byte order of the keys, with no repeats. Objects being
	// written (not committed) and keys the backend reserves are not
	// listed. A listing need not be a snapshot: a key committed or deleted
	// while it runs may or may not be yielded. The first error ends the
	// sequence. The consumer may stop early.
	List(ctx context.Context, after string) iter.Seq2[string, error]

	// ErrorCode classifies an error returned by the other methods (and
	// by their Readers and Writers).
	ErrorCode(err error) Code

	// Close releases the backend's resources. No method is called after
	// it, but Readers and Writers opened before may still be used.
	Close() error
}

// Reader reads one object.
type Reader interface {
	io.ReadCloser
	// Attributes describes the object being read (its whole size, not
	// the range's).
	Attributes() Attributes
}

// Writer receives the bytes of a new version of an object.
type Writer interface {
	io.Writer
	// Commit makes the bytes written durable and visible at the key,
	// atomically: a reader sees the old version or the new one, never a
	// mix or a prefix, and after Commit returns nil the bytes survive a
	// crash. When it returns an error the key holds the old version or
	// the whole new one (see Bucket.NewWriter). It is called at most
	// once, and not after Abort.
	Commit(ctx context.Context) error
	// Abort discards the bytes written. It is called at most once, not
	// after a successful Commit, and never while a Write is in progress:
	// it cannot interrupt a Write blocked on a stalled service (only the
	// end of NewWriter's context can).
	Abort() error
}

// Syncer is an optional interface of a Writer that can make the bytes
// written so far durable before Commit without publishing them, so that
// the Commit that follows only publishes. The portable type calls it when
// its own Writer's Sync is called; Commit must still make durable any
// byte written after Sync.
type Syncer interface {
	Sync(ctx context.Context) error
}

// BatchDeleter is an optional interface of a Bucket that removes many
// objects more cheaply together than one Delete each.
type BatchDeleter interface {
	// DeleteBatch removes the objects at keys (missing ones are skipped).
	// When it returns nil they are gone for every reader, but a crash of
	// the machine before SyncDeletes may bring some back (whole, never a
	// part). On error some may be gone.
	DeleteBatch(ctx context.Context, keys []string) error
	// SyncDeletes makes DeleteBatch's removals at keys durable.
	SyncDeletes(ctx context.Context, keys []string) error
}
