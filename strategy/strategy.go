// Package strategy holds the contracts a replicable data type implements,
// and the retry policy the engines apply to every type.
//
// An adopter adding a blob type implements [BlobStrategy] (a [Strategy]
// plus [BlobStrategy.BlobKey]) in one small file: the type's stable name,
// how to list its record ids, and where a record's bytes live. Optional
// interfaces add what some types know better: [Checksummer] (a stored
// SHA-256), [Opener] (bytes from elsewhere than the site's storage) and
// [BatchKeyer] (many keys in one query). A git repository type implements
// [RepositoryStrategy] (a [Strategy] plus [RepositoryStrategy.RepositoryPath])
// the same way. Everything about moving bytes
// safely (atomic writes, checksums, retries, leases, deletes,
// verification) belongs to the framework, not to the strategy.
//
// [ValidateKey] and [ValidateName] are the rules for storage keys and type
// names that the publisher, the storage and the engines share; [Backoff]
// is the default [RetryPolicy].
//
// strategy is not where engines, storage backends or HTTP live; it depends
// on nothing else in geo.
package strategy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
)

// ErrNotFound is returned (possibly wrapped) by BlobStrategy.BlobKey when a
// record does not exist or lies outside the strategy's scope. Either way it
// must not be on the secondary: the engines remove its bytes and registry
// row.
var ErrNotFound = errors.New("record not found")

// ErrUnknownReplicable is returned (wrapped) wherever a replicable name is
// not registered: by the primary's transfer endpoint (and so the
// secondary's download), by the event consumer for an outbox row of a type
// this secondary does not know, and by the admin calls for an unknown type.
var ErrUnknownReplicable = errors.New("unknown replicable")

// ErrInvalidName is returned by ValidateName for a name that cannot be a
// replicable name.
var ErrInvalidName = errors.New("invalid replicable name")

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// ValidateName reports whether name can identify a replicable type: 1 to 63
// characters, lowercase ASCII letters, digits and underscores, starting with
// a letter ("package_file"). The error wraps ErrInvalidName.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w %q: want 1-63 characters of [a-z0-9_] starting with a letter", ErrInvalidName, name)
	}
	return nil
}

// Strategy is what the adapter of every kind of replicable provides: a
// stable name and the type's record ids. A kind adds what it needs to find
// a record's data: BlobStrategy adds the storage key of a record's bytes,
// RepositoryStrategy the path of a record's git repository.
// replicator.Set.Register takes a Strategy and refuses one that is of no
// kind this version of geo replicates.
//
// One value serves one site: on the primary it reads the application's
// database; on a secondary it reads the primary's database through a
// read-only replica and may narrow what it lists to a scope (selective sync,
// local files only). Methods are called concurrently and must be safe for
// concurrent use. They must not write to the database they read.
type Strategy interface {
	// Name identifies the type. It is persisted in registry rows and events,
	// so it must never change and never be reused for another type. It must
	// pass ValidateName.
	Name() string

	// IDs returns up to limit record ids greater than after, in strictly
	// ascending order, restricted to the strategy's scope. Fewer than limit
	// ids (possibly none) means there are no more. limit is at least 1.
	IDs(ctx context.Context, after int64, limit int) ([]int64, error)
}

// BlobStrategy is what an adopter implements for one blob type: a Strategy
// that says where a record's bytes live. The rules of Strategy (one site
// per value, safe for concurrent use, read-only) hold for BlobKey too.
type BlobStrategy interface {
	Strategy

	// BlobKey returns the storage key of record id's bytes. It returns an
	// error matching ErrNotFound when the record does not exist or lies
	// outside the scope. A key must pass ValidateKey: relative and
	// slash-separated, without "." or ".." segments, NUL bytes,
	// backslashes, empty segments or a trailing slash, at most KeyLenMax
	// bytes; the directory backend also refuses keys starting with
	// ".geo-tmp" (blob/dirblob.ReservedPrefix). It must be stable (the same
	// record gives the same key until the application changes it).
	//
	// Keys may be shared and reused: records with equal bytes may name one
	// key (a content-addressed layout, such as Git LFS objects at their
	// oid), and a key may come back after every record naming it was
	// deleted or moved. The one rule is that records naming the same key
	// at the same time name the same bytes. A secondary removes the bytes
	// at a key only when none of its registry rows (of any type) records
	// or stages that key; the application keeps the same rule for its own
	// storage on the primary ("Content-addressed storage" in
	// https://github.com/geoframework/geo/blob/main/docs/adding-a-blob-type.md).
	BlobKey(ctx context.Context, id int64) (string, error)
}

// BatchKeyer is an optional interface of a BlobStrategy that looks up the
// keys of many records in one query. A secondary's sync engine claims
// records in batches and, when the strategy implements it, resolves each
// batch's keys with one BlobKeys call instead of one BlobKey call per
// record (one round trip to the primary's replica instead of dozens). The
// primary's transfer endpoint answers the lookups of requests that arrive
// while one BlobKeys call runs with the next call, and asks BlobKey what
// a call leaves out or every id of a call that fails.
type BatchKeyer interface {
	// BlobKeys returns the key of each of ids that BlobKey would give a
	// key for, exactly that key, under the same rules (scope, validity,
	// stability). An id it leaves out is looked up again with BlobKey, so
	// omitting a record costs a query but is never wrong; an error fails
	// the whole lookup the same way. ids are distinct, in no particular
	// order, and at most a few hundred.
	BlobKeys(ctx context.Context, ids []int64) (map[int64]string, error)
}

// Checksummer is an optional interface of a BlobStrategy that knows the
// SHA-256 of a record's bytes itself (for example from an upload-time
// digest column). The primary's verification uses it instead of reading
// the bytes when present.
type Checksummer interface {
	// BlobChecksum returns the lowercase hex SHA-256 of record id's bytes,
	// or an error matching ErrNotFound.
	BlobChecksum(ctx context.Context, id int64) (string, error)
}

// Opener is an optional interface of a BlobStrategy whose bytes on the
// primary do not come from the site's storage backend (for example a
// generated file). The primary's transfer endpoint and verification use it
// when present.
type Opener interface {
	// OpenBlob opens record id's bytes for reading and returns their size.
	// It returns an error matching ErrNotFound when the record is gone, and
	// one matching ErrBlobMissing when the record exists but its bytes do not.
	OpenBlob(ctx context.Context, id int64) (io.ReadSeekCloser, int64, error)
}

// ErrBlobMissing means a record exists but its bytes do not ("missing on
// primary" when it happens there).
var ErrBlobMissing = errors.New("blob missing")

// RepositoryStrategy is what an adopter implements for one type of git
// repository (project repositories, wikis, snippets): a Strategy that says
// where a record's bare repository lives, as a path under the site's
// repository root (replicator.PrimaryConfig.RepositoryRoot on the primary,
// SecondaryConfig.RepositoryRoot on a secondary). The rules of Strategy
// (one site per value, safe for concurrent use, read-only) hold for
// RepositoryPath too. A type is of one kind: a strategy implementing both
// BlobKey and RepositoryPath is refused at registration.
type RepositoryStrategy interface {
	Strategy

	// RepositoryPath returns the path of record id's bare repository,
	// relative to the repository root ("groups/42/project-7.git"). It
	// returns an error matching ErrNotFound when the record does not exist
	// or lies outside the scope. A path follows the storage key rule
	// (ValidateKey: relative and slash-separated, no "." or ".." segment,
	// no NUL byte, backslash, empty segment or trailing slash, at most
	// KeyLenMax bytes) and must not start with ".geo-tmp", the site's
	// reserved temporary directory. It must be stable: the same record
	// gives the same path until the application moves the repository (a
	// rename is an update: the application publishes an updated event, and
	// the secondary fetches the repository at its new path).
	//
	// Paths are not shared: two records existing at the same time must not
	// name the same path, nor one a path inside the other's repository.
	// A path may be reused once the record naming it is deleted (a project
	// deleted and another created under the same name); the secondary
	// removes a repository only when no registry row of a repository type
	// records or stages its path.
	RepositoryPath(ctx context.Context, id int64) (string, error)
}
