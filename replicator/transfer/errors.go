package transfer

import (
	"errors"
	"fmt"
	"os"

	"github.com/geoframework/geo/strategy"
)

// ErrRecordNotFound is the sync failure (wrapped) when the
// primary has no such record. It matches strategy.ErrNotFound too.
var ErrRecordNotFound = fmt.Errorf("record not found on primary: %w", strategy.ErrNotFound)

// ErrMissingOnPrimary is the sync failure (wrapped) when the
// record exists on the primary but its bytes do not. It matches
// strategy.ErrBlobMissing too.
var ErrMissingOnPrimary = fmt.Errorf("missing on primary: %w", strategy.ErrBlobMissing)

// TransferPathPrefix is where the transfer endpoint lives on the primary:
// GET and HEAD TransferPathPrefix + "{replicable}/{id}".
const TransferPathPrefix = "/geo/v1/blobs/"

// RepositoryPathPrefix is where the primary serves git repositories: git's
// smart HTTP protocol, upload-pack only (clone and fetch), at
// RepositoryPathPrefix + "{replicable}/{id}" (git appends /info/refs and
// /git-upload-pack), authenticated by the same per-record tokens as blob
// transfers. Push is refused.
const RepositoryPathPrefix = "/geo/v1/repositories/"

// ErrSizeMismatch is the sync failure (wrapped) when the body received is
// shorter or longer than its announced size, for example a truncated
// transfer.
var ErrSizeMismatch = errors.New("size mismatch")

// ErrKeyChanged is the sync failure (wrapped) when the primary served the
// record from another key than the one the secondary asked for: the
// record changed between the secondary's lookup and the transfer. Nothing
// is staged; a retry after the change's event settles it.
var ErrKeyChanged = errors.New("record's key changed on the primary")

// ErrPrimaryAdapter is the sync failure (wrapped) when the
// primary answered adapter_bad_key: the primary's adapter returned an invalid
// storage key for the record, so the primary cannot serve it. It is not an
// outage of the primary, nor a problem of the secondary's key; it lasts
// until the primary's adapter or record is fixed.
var ErrPrimaryAdapter = errors.New("the primary's adapter returned an invalid storage key for the record")

// ErrTimeout is the sync failure (wrapped) when the primary sends no
// response headers, or no body bytes, for the secondary's
// TransferTimeout. It matches os.ErrDeadlineExceeded too.
var ErrTimeout = fmt.Errorf("transfer stalled: %w", os.ErrDeadlineExceeded)
