// Package blob moves bytes for the blob strategy: storage backends (Dir, a
// filesystem root, first), key validation, the primary's transfer endpoint,
// its token authentication, and the secondary's downloader that streams a
// record's bytes into storage while checking their size and SHA-256.
//
// blob knows nothing of registry rows, engines or events: it is the
// byte-moving half of replication, usable and tested on its own.
package blob

import (
	"context"
	"errors"
	"io"
	"iter"
	"time"
)

// ErrNotExist is returned (wrapped) when no blob is stored at a key.
var ErrNotExist = errors.New("blob: not found")

// Info describes a stored blob.
type Info struct {
	Size    int64
	ModTime time.Time
}

// Storage is where one site keeps its blobs, addressed by key. The contract
// is checked for every backend by the shared storage test (see
// blob/storagetest). Methods are safe for concurrent use.
type Storage interface {
	// Open opens the blob at key for reading. It returns an error matching
	// ErrNotExist when there is none and ErrInvalidKey for a bad key.
	Open(ctx context.Context, key string) (Reader, error)

	// Stat describes the blob at key, or returns an error matching
	// ErrNotExist.
	Stat(ctx context.Context, key string) (Info, error)

	// Create starts writing a new version of the blob at key. Nothing is
	// visible at key until Commit returns nil; Abort (or a cancelled ctx)
	// discards the bytes written so far and leaves nothing behind.
	Create(ctx context.Context, key string) (Writer, error)

	// Remove deletes the blob at key. Removing a missing blob is not an
	// error (it is idempotent).
	Remove(ctx context.Context, key string) error
}

// Reader reads one stored blob.
type Reader interface {
	io.ReadSeekCloser
	// Size is the blob's size in bytes.
	Size() int64
	// ModTime is when the blob was last written.
	ModTime() time.Time
}

// Writer receives a new version of a blob. It hashes what it writes.
type Writer interface {
	io.Writer
	// Written returns the number of bytes written so far and their
	// lowercase hex SHA-256.
	Written() (n int64, sha256 string)
	// Commit makes the bytes durable and visible at the key, atomically:
	// a reader sees the old version or the new one, never a mix or a
	// prefix. After a successful Commit the bytes survive a crash.
	// Commit or Abort must be called exactly once; after a failed Commit
	// nothing new is visible at the key and no temporary data remains.
	Commit(ctx context.Context) error
	// Abort discards the bytes. It is safe to call after Commit (then it
	// does nothing).
	Abort() error
}

// Syncer is implemented by Writers that can make the bytes written so far
// durable before Commit, without publishing them. The Downloader calls
// Sync when a transfer has been received and checked, while the sync
// still holds its own budget slot and no registry row is locked, so that
// the Commit that follows (run while the row is locked, and serialised
// with other rows' commits) only publishes: rename and directory fsync.
// Sync does not change Commit's contract: after a successful Commit the
// bytes survive a crash whether or not Sync was called, and bytes written
// after a Sync are made durable by Commit. A failed Sync leaves the
// writer to be aborted.
type Syncer interface {
	Sync(ctx context.Context) error
}

// Lister is implemented by storage that can list its keys in order
// without reading the blobs: a directory walk, an object store's List.
// The secondary's existence scan uses it to find registry rows whose
// bytes are gone, with one pass over the keys instead of a Stat per row.
type Lister interface {
	// Keys yields every key stored, in ascending byte order, that is
	// greater than after ("" for all). Keys being written (not yet
	// committed) and reserved keys are not listed. A listing is not a
	// snapshot: a key committed or removed while it runs may or may not
	// be yielded. The first error ends the sequence.
	Keys(ctx context.Context, after string) iter.Seq2[string, error]
}

// BatchRemover is implemented by storage that removes many blobs more
// cheaply together than one Remove each (a directory is made durable once
// for all the removals in it, instead of once per removal). The
// consistency pass removes orphans with it.
type BatchRemover interface {
	// RemoveBatch removes the blobs at keys; keys with no blob are
	// skipped. When it returns nil they are gone for every reader, but a
	// crash of the machine before SyncRemoved may bring some back (never
	// a partial blob). On error some of them may be gone.
	RemoveBatch(ctx context.Context, keys []string) error
	// SyncRemoved makes the removals of RemoveBatch at keys durable.
	SyncRemoved(ctx context.Context, keys []string) error
}
