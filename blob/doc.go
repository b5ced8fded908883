// Package blob keeps a site's blobs: Bucket, the portable storage type that
// validates keys, hashes what it writes, checks it against the expected
// checksum, commits once and wraps errors once, over a small driver
// (blob/driver) that a backend implements: blob/dirblob for a directory,
// blob/cloudblob for object storage. blob/storagetest is the conformance
// suite a backend must pass.
//
// blob knows nothing of registry rows, engines, events or HTTP: the
// transfer endpoint, its tokens and the downloader are replicator/transfer.
package blob
