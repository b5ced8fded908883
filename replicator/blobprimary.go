package replicator

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/internal/xfer"
	"github.com/geoframework/geo/strategy"
)

// blobPrimary is the primary side of a blob type: it serves a record's
// bytes from the primary's storage at the strategy's key (or through its
// strategy.Opener) and checksums them (or asks its strategy.Checksummer).
type blobPrimary struct {
	s       strategy.BlobStrategy
	storage *blob.Bucket
	// keys is the endpoint's key batcher when the strategy implements
	// strategy.BatchKeyer (and not strategy.Opener); nil otherwise.
	keys *keyBatcher
}

func newBlobPrimary(s strategy.BlobStrategy, storage *blob.Bucket) *blobPrimary {
	p := &blobPrimary{s: s, storage: storage}
	if _, ok := s.(strategy.Opener); !ok {
		p.keys = newKeyBatcher(s)
	}
	return p
}

// source opens a record's bytes for the transfer endpoint, asking the key
// through the type's keyBatcher when it implements strategy.BatchKeyer
// (concurrent requests share a BlobKeys query), else BlobKey. Their checksum,
// so that the secondary verifies them in transit (R6), is the one the
// secondary sends (the primary's stored checksum, read in the batch of its
// claim), else the stored good checksum from geo_checksums (the handler's
// Checksum: one indexed lookup; a copy corrupted on the primary after it
// was taken is then rejected by the secondary instead of replacing a good
// copy), else the SHA-256 of the bytes computed by the handler, reading
// them once before serving them (a second read of the file, at about 1.4
// GB/s per core, delaying the first byte by size/1.4 GB/s; the page cache
// usually serves the second read).
func (p *blobPrimary) source(ctx context.Context, id int64) (xfer.Source, error) {
	keyOf := p.s.BlobKey
	if p.keys != nil {
		keyOf = p.keys.key
	}
	rc, size, key, err := p.open(ctx, keyOf, id)
	if err != nil {
		return xfer.Source{}, err
	}
	src := xfer.Source{Body: rc, Size: size, Key: key}
	if r, ok := rc.(*blob.Reader); ok {
		src.ModTime = r.ModTime()
	}
	return src, nil
}

// checksum returns record id's SHA-256 and size (-1 when unknown): from
// the strategy's Checksummer, else by reading the bytes from its Opener or
// from the primary's storage at BlobKey. A record that is gone gives an
// error matching strategy.ErrNotFound; missing bytes one matching
// strategy.ErrBlobMissing.
func (p *blobPrimary) checksum(ctx context.Context, id int64) (string, int64, error) {
	if cs, ok := p.s.(strategy.Checksummer); ok {
		sum, err := cs.BlobChecksum(ctx, id)
		return sum, -1, err
	}
	rc, _, _, err := p.open(ctx, p.s.BlobKey, id)
	if err != nil {
		return "", 0, err
	}
	defer rc.Close()
	return blob.SHA256Reader(ctx, rc)
}

// exists asks BlobKey whether record id still exists.
func (p *blobPrimary) exists(ctx context.Context, id int64) error {
	_, err := p.s.BlobKey(ctx, id)
	return err
}

// open opens record id's bytes on the primary: through the strategy's
// Opener, else from storage at the key keyOf gives (s.BlobKey or a
// keyBatcher's key), returned beside them ("" for an Opener). A gone record
// gives an error matching strategy.ErrNotFound, missing bytes one matching
// strategy.ErrBlobMissing.
func (p *blobPrimary) open(ctx context.Context, keyOf func(context.Context, int64) (string, error), id int64) (io.ReadSeekCloser, int64, string, error) {
	if o, ok := p.s.(strategy.Opener); ok {
		rc, size, err := o.OpenBlob(ctx, id)
		return rc, size, "", err
	}
	key, err := keyOf(ctx, id)
	if err != nil {
		return nil, 0, "", err
	}
	if err := strategy.ValidateKey(key); err != nil {
		return nil, 0, "", fmt.Errorf("strategy %s: %w", p.s.Name(), err)
	}
	r, err := p.storage.Open(ctx, key)
	if errors.Is(err, blob.ErrNotExist) {
		return nil, 0, "", fmt.Errorf("%w: %s/%d at %s", strategy.ErrBlobMissing, p.s.Name(), id, key)
	}
	if err != nil {
		return nil, 0, "", err
	}
	return r, r.Size(), key, nil
}
