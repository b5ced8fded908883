// Package xfer is the wire side of replicator/transfer, internal to the
// engines: the primary's transfer endpoint (NewHandler), the secondary's
// downloader (Downloader: streams, checks size and SHA-256, honours a
// bandwidth limit and a stall timeout), and the per-record tokens that
// authenticate each request (Authorization, Verifier). The credentials,
// the secrets lookup and the errors a transfer can fail with are public,
// in replicator/transfer.
package xfer
