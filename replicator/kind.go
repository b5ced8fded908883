package replicator

import (
	"context"
	"fmt"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/internal/xfer"
	"github.com/geoframework/geo/strategy"
)

// kind is the seam one kind of replicable plugs into the engines through
// ("Kinds of replicable" in https://github.com/geoframework/geo/blob/main/docs/architecture.md). A kind provides its
// secondary side, a Replicator (sync into a stage, commit under the row
// lock, remove, verify), and its primary side (serve, checksum). The
// engines drive every registered type through its kind alone, with no
// branch on which kind it is.
//
// The seam is internal in v0.1.0: the kinds ship with geo (blobs now, git
// repositories next), and adopters register strategies of those kinds.
// What a kind must provide is written down so that a new kind is added
// without an engine change; it becomes public once two kinds have shaped
// it.
type kind interface {
	// name is the kind's name in errors and docs ("blob").
	name() string
	// replicator builds the secondary side of type s (a strategy of this
	// kind).
	replicator(s strategy.Strategy, env secondaryEnv) Replicator
	// primary builds the primary side of type s.
	primary(s strategy.Strategy, env primaryEnv) primarySide
}

// primarySide is a kind's part on the primary site, for one type: the
// transfer endpoint serves through it and the primary's verification
// checksums through it.
type primarySide interface {
	// source opens record id's data for the transfer endpoint. A gone
	// record gives an error matching strategy.ErrNotFound, missing data
	// one matching strategy.ErrBlobMissing.
	source(ctx context.Context, id int64) (xfer.Source, error)
	// checksum returns record id's checksum (lowercase hex SHA-256) and
	// size (-1 when unknown), with the errors of source.
	checksum(ctx context.Context, id int64) (string, int64, error)
	// exists returns nil when record id exists (in the primary's scope),
	// an error matching strategy.ErrNotFound when it is gone.
	exists(ctx context.Context, id int64) error
}

// primaryEnv is what a primary site gives the kinds' primary sides.
type primaryEnv struct {
	storage *blob.Bucket
}

// secondaryEnv is what a secondary site gives the kinds' replicators.
type secondaryEnv struct {
	storage    *blob.Bucket
	downloader *xfer.Downloader
}

// kindOf returns the kind of s: the one kind whose strategy interface s
// implements. It is an error wrapping ErrUnsupportedKind when s
// implements none, or more than one.
func kindOf(s strategy.Strategy) (kind, error) {
	var found []kind
	if _, ok := s.(strategy.BlobStrategy); ok {
		found = append(found, blobKind{})
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return nil, fmt.Errorf("%w: %T implements no kind's strategy interface (strategy.BlobStrategy)", ErrUnsupportedKind, s)
	default:
		return nil, fmt.Errorf("%w: %T implements the strategy interfaces of several kinds", ErrUnsupportedKind, s)
	}
}

// blobKind is the kind of strategy.BlobStrategy types: files in the
// site's storage at a key per record.
type blobKind struct{}

func (blobKind) name() string { return "blob" }

func (blobKind) replicator(s strategy.Strategy, env secondaryEnv) Replicator {
	return newBlobReplicator(s.(strategy.BlobStrategy), env.storage, env.downloader)
}

func (blobKind) primary(s strategy.Strategy, env primaryEnv) primarySide {
	return newBlobPrimary(s.(strategy.BlobStrategy), env.storage)
}
