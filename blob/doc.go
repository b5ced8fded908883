// Package blob keeps a site's blobs: [Bucket], the portable storage type
// that validates keys, hashes what it writes, checks it against the
// expected checksum, commits once and wraps errors once, over a small
// driver (blob/driver) that a backend implements: blob/dirblob for a
// directory (dirblob.Open), blob/cloudblob for object storage
// (cloudblob.OpenBucket). blob/storagetest is the conformance suite a
// backend must pass.
//
// Writing is [Bucket.Create], then [Writer.Write] and [Writer.Commit] (or
// [Writer.Abort]): nothing is visible at the key until Commit returns nil.
// Errors match [ErrNotExist], [ErrInvalidKey] and [ErrChecksumMismatch].
//
// blob knows nothing of registry rows, engines, events or HTTP: the
// credentials and failures of transfers are replicator/transfer's, the
// endpoint, its tokens and the downloader the engines' own.
package blob
