// Package cloudblob is the object-storage backend of blob.Bucket, over
// gocloud.dev/blob: one adapter for every service go-cloud has a driver for.
// OpenBucket opens a bucket by URL, in go-cloud's convention, for the
// schemes geo tests and registers itself (never on a global mux):
//
//	s3://BUCKET?region=REGION                        Amazon S3
//	s3://BUCKET?endpoint=URL&region=R&use_path_style=true   an S3-compatible server (MinIO, versitygw, SeaweedFS)
//	mem://                                            in memory, for tests
//	file:///DIR                                       a directory, through go-cloud's fileblob, for tests
//
// A file URL gets metadata=skip unless it says otherwise: fileblob
// rewrites its metadata sidecar files in place, so a reader racing an
// overwrite could fail, and geo keeps no metadata. New over a fileblob
// bucket needs fileblob.MetadataDontWrite for the same reason.
//
// Every query parameter of gocloud.dev/blob/s3blob's URLOpener and
// gocloud.dev/aws.V2ConfigFromURLParams is accepted (prefix, profile,
// ssetype, request_checksum_calculation, ...). Credentials never come from
// the URL: the AWS SDK finds them in its usual chain (AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY, AWS_PROFILE and the shared files, web identity,
// the instance or task role). They never appear in an error cloudblob
// returns. GCS, Azure and other services: open a *gocloud.dev/blob.Bucket
// with their driver yourself and pass it to New (untested by geo).
//
// How the driver contract (blob/driver) maps onto go-cloud:
//
//   - Staged writes. A go-cloud Writer publishes its object at Close; a
//     Writer whose context ends before Close publishes nothing. Commit is
//     Close; Abort cancels the Writer's context, then closes it; Commit's
//     own context ending during Close cancels it too. On S3 an object
//     under SinglePartMax bytes is sent in one PUT at Commit; a larger one
//     as a multipart upload whose parts go up while it is written and that
//     is completed at Commit only. An aborted multipart upload is aborted
//     on the server (with a fresh context bounded by AbortTimeout, since
//     the Writer's own is cancelled); one abandoned by a crash stays until
//     the bucket's lifecycle rule (AbortIncompleteMultipartUpload, see
//     [Operating geo], "Writes, crashes and abandoned uploads") or
//     [AbortIncompleteUploads] removes it, and is never visible at a key.
//   - Server-side checksum. When the expected SHA-256 and size are known
//     and the object goes in one PUT, it carries x-amz-checksum-sha256: the
//     server refuses bytes that differ. Multipart parts carry the SDK's
//     per-part checksums (CRC32 by default); S3 accepts SHA-256 for a
//     multipart object only as a composite of its parts, which geo does
//     not know in advance. geo's own hash of every byte written (in
//     blob.Bucket) decides either way.
//   - Not found. go-cloud's gcerrors.NotFound is driver.NotFound; so is a
//     path through a file (ENOTDIR, from fileblob).
//   - Delete is idempotent: a missing object (NotFound) is success.
//     Bucket is a driver.BatchDeleter: on S3, DeleteBatch removes up to
//     DeleteBatchMax objects per DeleteObjects request (the orphan removal
//     of the consistency pass uses it); SyncDeletes has nothing to do.
//   - List is in ascending byte order after a key: go-cloud lists in
//     lexicographic order of UTF-8 keys, which is byte order. On S3 the
//     listing starts after the key (StartAfter, through the BeforeList
//     hook); elsewhere keys up to it are skipped. fileblob walks a
//     directory tree, whose order is not byte order ("a/b-" sorts before
//     "a/b/c" but is visited after it), so its listing is sorted in
//     memory. A backend that still lists out of order makes List fail
//     with ErrListOrder rather than yield keys out of order.
//
// Keys. go-cloud escapes, on S3 and in fileblob, some keys that
// strategy.ValidateKey accepts (ASCII control characters, "../", and text
// that looks like its escapes, "__0x"), so the stored name, and its place
// in a listing, would differ from the key. cloudblob refuses those keys
// with driver.InvalidKey (blob.ErrInvalidKey), and keys that are not valid
// UTF-8, which go-cloud refuses: every key it accepts is stored as is. It
// also refuses keys with a segment named ReservedSegment (".sgwtmp"),
// which versitygw writes into its staging directory and never lists. On
// versitygw (a directory tree) a key cannot also be the directory of
// another ("a" and "a/b"): the second write fails cleanly (409
// ObjectParentIsFile); S3 itself allows both.
//
// What go-cloud cannot give: a Commit whose answer is lost (the connection
// breaks after the server published the object) fails although the object
// is visible, whole and exact (with the server-side checksum, or as geo's
// verification will find); geo's engines treat a failed Commit as
// not-synced and write again. fileblob does not fsync and keeps its
// temporary files in os.TempDir: it is for tests (blob/dirblob is the
// durable directory backend).
//
// [Operating geo]: https://github.com/geoframework/geo/blob/main/docs/operations.md
package cloudblob

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/url"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	tmtypes "github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	gcblob "gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"
	"gocloud.dev/blob/memblob"
	"gocloud.dev/blob/s3blob"
	"gocloud.dev/gcerrors"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/blob/driver"
)

const (
	// SinglePartMax is the size below which the S3 transfer manager sends
	// an object in one PUT (its multipart threshold, 16 MiB); from it on,
	// as a multipart upload. Only single-PUT objects carry
	// x-amz-checksum-sha256.
	SinglePartMax = 16 << 20

	// AbortTimeout bounds the clean-up of an aborted or failed multipart
	// upload (AbortMultipartUpload), which runs with a fresh context since
	// the Writer's own is cancelled by then.
	AbortTimeout = 30 * time.Second

	// IncompleteUploadAge is the age after which AbortIncompleteUploads
	// should abort a multipart upload that was neither completed nor
	// aborted, and the one the lifecycle rule of geo's operations guide
	// uses (one day; https://github.com/geoframework/geo/blob/main/docs/operations.md): far
	// longer than any upload geo makes takes.
	IncompleteUploadAge = 24 * time.Hour

	// ListPageSize is how many keys one listing request asks for (S3's
	// maximum).
	ListPageSize = 1000

	// DeleteBatchMax is how many keys one S3 DeleteObjects request
	// removes (S3's maximum).
	DeleteBatchMax = 1000

	// contentType is the type objects are stored with: geo stores bytes.
	contentType = "application/octet-stream"
)

// ErrListOrder is returned (wrapped) by List when the service yields a key
// that is not greater than the one before it: the listing is not in byte
// order, and a consumer merging it with sorted rows would go wrong.
var ErrListOrder = errors.New("cloudblob: the service listed keys out of byte order")

// ReservedSegment is the name versitygw's posix backend keeps for its own
// staging directory at any depth of a bucket: an object under it is
// written there and never listed. cloudblob refuses keys with a segment of
// that name, on every service, as driver.InvalidKey.
const ReservedSegment = ".sgwtmp"

// errReserved is the error for a key with a ReservedSegment segment.
var errReserved = errors.New("cloudblob: keys with a segment named " + ReservedSegment + " are refused (versitygw keeps it for itself)")

// errKey is the error for a key go-cloud would store under another name.
var errKey = errors.New("cloudblob: key would be escaped by go-cloud (control character, \"../\" or \"__0x\") or is not UTF-8")

// OpenBucket opens the bucket at urlstr (see the package documentation for
// the schemes and parameters) as a portable blob.Bucket. For S3 it checks
// that the bucket can be listed, so a missing bucket or refused
// credentials fail here and not as "not found" for every key. Errors never
// hold a credential (a URL with user information is refused, and the SDK's
// errors carry none). The schemes are registered on a mux of OpenBucket's
// own, not on go-cloud's global one (importing go-cloud's drivers still
// registers them there, in their init). Close the Bucket when done.
func OpenBucket(ctx context.Context, urlstr string) (*blob.Bucket, error) {
	gb, u, err := openGoCloud(ctx, urlstr)
	if err != nil {
		return nil, err
	}
	d := New(gb)
	if d.s3 != nil {
		if _, _, err := gb.ListPage(ctx, gcblob.FirstPageToken, 1, nil); err != nil {
			gb.Close()
			return nil, fmt.Errorf("cloudblob: open %s: list the bucket: %w", where(u), err)
		}
	}
	return blob.NewBucket(d), nil
}

// openGoCloud opens the go-cloud bucket at urlstr on a mux of its own.
func openGoCloud(ctx context.Context, urlstr string) (*gcblob.Bucket, *url.URL, error) {
	u, err := url.Parse(urlstr)
	if err != nil {
		return nil, nil, errors.New("cloudblob: open: the bucket URL does not parse")
	}
	if u.User != nil {
		return nil, nil, fmt.Errorf("cloudblob: open %s: credentials do not belong in the URL: the SDK reads them from its usual chain (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, a profile, a role)", u.Scheme+"://"+u.Host)
	}
	if q := u.Query(); u.Scheme == fileblob.Scheme && !q.Has("metadata") {
		// fileblob rewrites its metadata sidecar files in place: a reader
		// racing an overwrite could fail. geo keeps no metadata.
		q.Set("metadata", string(fileblob.MetadataDontWrite))
		u.RawQuery = q.Encode()
	}
	mux := new(gcblob.URLMux)
	mux.RegisterBucket(s3blob.Scheme, new(s3blob.URLOpener))
	mux.RegisterBucket(fileblob.Scheme, new(fileblob.URLOpener))
	mux.RegisterBucket(memblob.Scheme, new(memblob.URLOpener))
	gb, err := mux.OpenBucketURL(ctx, u)
	if err != nil {
		return nil, nil, fmt.Errorf("cloudblob: open %s: %w", where(u), err)
	}
	return gb, u, nil
}

// where names the bucket of u in errors: its scheme, host and path, not
// its query.
func where(u *url.URL) string { return u.Scheme + "://" + u.Host + u.Path }

// Bucket is the driver (a driver.Bucket) over a go-cloud bucket. It is
// safe for concurrent use.
type Bucket struct {
	b *gcblob.Bucket
	// s3 is the S3 client under b, nil for other services.
	s3 *s3.Client
	// s3Bucket and s3Prefix name the S3 bucket and the prefix (as stored)
	// under which b keeps its keys, "" when New could not learn them
	// (batch deletes and AbortIncompleteUploads need them).
	s3Bucket, s3Prefix string
	// sortList is set for fileblob, whose directory walk is not in byte
	// order.
	sortList bool
	// pageSize is ListPageSize; tests lower it.
	pageSize int
}

// New returns the driver over b, an open go-cloud bucket of any service
// (wrap it with blob.NewBucket). The driver owns b: its Close closes b.
// An S3 bucket (s3blob) gets the S3 specifics described in the package
// documentation; New cannot check that the bucket exists (OpenBucket
// does).
func New(b *gcblob.Bucket) *Bucket {
	d := &Bucket{b: b, pageSize: ListPageSize}
	var c *s3.Client
	if b.As(&c) {
		d.s3 = c
		d.s3Bucket, d.s3Prefix = s3Names(b)
	}
	var fi os.FileInfo
	if b.As(&fi) { // only fileblob exposes the directory it walks
		d.sortList = true
	}
	return d
}

var _ driver.BatchDeleter = (*Bucket)(nil)

// errProbe ends the listing s3Names starts before it reaches the network.
var errProbe = errors.New("cloudblob: probe")

// s3Names returns the S3 bucket under b and the prefix its keys are
// stored under (go-cloud's prefix= or PrefixedBucket), as go-cloud puts
// them in a listing request; it sends no request (its BeforeList hook
// ends the listing first). Both are "" when go-cloud does not show them
// (the legacy listing, list_type=1).
func s3Names(b *gcblob.Bucket) (bucket, prefix string) {
	_, _, _ = b.ListPage(context.Background(), gcblob.FirstPageToken, 1, &gcblob.ListOptions{
		BeforeList: func(as func(any) bool) error {
			var in *s3.ListObjectsV2Input
			if as(&in) {
				bucket, prefix = aws.ToString(in.Bucket), aws.ToString(in.Prefix)
			}
			return errProbe
		},
	})
	return bucket, prefix
}

// GoCloud returns the go-cloud bucket under d, for As-style access to the
// service's client.
func (d *Bucket) GoCloud() *gcblob.Bucket { return d.b }

// checkKey refuses the keys go-cloud would not store as themselves, and
// those with a segment named ReservedSegment.
func checkKey(key string) error {
	if !utf8.ValidString(key) || strings.Contains(key, "../") || strings.Contains(key, "__0x") {
		return errKey
	}
	if key == ReservedSegment || strings.HasPrefix(key, ReservedSegment+"/") || strings.HasSuffix(key, "/"+ReservedSegment) || strings.Contains(key, "/"+ReservedSegment+"/") {
		return errReserved
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] == 0x7f {
			return errKey
		}
	}
	return nil
}

// Attributes implements driver.Bucket.
func (d *Bucket) Attributes(ctx context.Context, key string) (driver.Attributes, error) {
	if err := checkKey(key); err != nil {
		return driver.Attributes{}, err
	}
	a, err := d.b.Attributes(ctx, key)
	if err != nil {
		return driver.Attributes{}, err
	}
	return driver.Attributes{Size: a.Size, ModTime: a.ModTime}, nil
}

// NewRangeReader implements driver.Bucket. An S3 GetObject streams one
// version of the object.
func (d *Bucket) NewRangeReader(ctx context.Context, key string, offset, length int64) (driver.Reader, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	r, err := d.b.NewRangeReader(ctx, key, offset, length, nil)
	if err != nil {
		if offset > 0 && d.ErrorCode(err) != driver.NotFound {
			// S3 refuses a range starting at the end (416); the contract
			// allows offset == size.
			if a, aerr := d.Attributes(ctx, key); aerr == nil && a.Size == offset {
				return emptyReader{a}, nil
			}
		}
		return nil, err
	}
	return &reader{r: r, attrs: driver.Attributes{Size: r.Size(), ModTime: r.ModTime()}}, nil
}

// reader is a go-cloud Reader.
type reader struct {
	r     *gcblob.Reader
	attrs driver.Attributes
}

func (r *reader) Read(p []byte) (int, error)    { return r.r.Read(p) }
func (r *reader) Close() error                  { return r.r.Close() }
func (r *reader) Attributes() driver.Attributes { return r.attrs }

// emptyReader reads nothing: a range starting at the object's end.
type emptyReader struct{ attrs driver.Attributes }

func (e emptyReader) Attributes() driver.Attributes { return e.attrs }
func (emptyReader) Read([]byte) (int, error)        { return 0, io.EOF }
func (emptyReader) Close() error                    { return nil }

// NewWriter implements driver.Bucket. The go-cloud Writer gets a context of
// its own, derived from ctx, that Abort cancels.
func (d *Bucket) NewWriter(ctx context.Context, key string, opts *driver.WriterOptions) (driver.Writer, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	gw, err := d.b.NewWriter(wctx, key, &gcblob.WriterOptions{
		ContentType:                 contentType,
		DisableContentTypeDetection: true,
		BeforeWrite:                 func(as func(any) bool) error { return d.beforeWrite(as, opts) },
	})
	if err != nil {
		cancel()
		return nil, err
	}
	return &writer{ctx: wctx, cancel: cancel, w: gw}, nil
}

// beforeWrite sets the S3 specifics of an upload (other services expose
// none of these types, and nothing happens). The transfer manager is
// rebuilt with FailTimeout, so that an aborted multipart upload is aborted
// on the server even though its context is cancelled (the manager's
// default uses the cancelled context, and the abort fails at once), with
// the client's request-checksum setting, as s3blob sets it, and over
// partGrace. A single-PUT object whose SHA-256 is known carries it
// (x-amz-checksum-sha256), and the SDK then adds no other checksum.
func (d *Bucket) beforeWrite(as func(any) bool, opts *driver.WriterOptions) error {
	var tm *transfermanager.Client
	if d.s3 != nil && as(&tm) {
		calc := d.s3.Options().RequestChecksumCalculation
		*tm = *transfermanager.New(partGrace{d.s3}, func(o *transfermanager.Options) {
			o.RequestChecksumCalculation = calc
			o.FailTimeout = AbortTimeout
			o.MultipartUploadThreshold = SinglePartMax
		})
	}
	var in *transfermanager.UploadObjectInput
	if opts.SHA256 != "" && opts.Size >= 0 && opts.Size < SinglePartMax && as(&in) {
		if sum, err := hex.DecodeString(opts.SHA256); err == nil && len(sum) == 32 {
			in.ChecksumAlgorithm = tmtypes.ChecksumAlgorithmSha256
			in.ChecksumSHA256 = aws.String(base64.StdEncoding.EncodeToString(sum))
		}
	}
	return nil
}

// partGrace is the S3 client of the transfer manager: a request that
// writes (a part, a single PUT, the completion of a multipart upload) in
// flight when its context ends (an abort, a Commit's context ending) may
// finish for AbortTimeout more, so that its outcome is settled when the
// call returns. A request the client cancels may still be carried out by
// the server after the client has moved on: a part stored after the abort
// (S3 documents it: "it might be necessary to abort a given multipart
// upload multiple times"; versitygw then keeps the part's file in its
// staging directory, where nothing lists or removes it), or an object
// published after the failed Commit returned, over a version written
// since (storagetest's FailedCommitLeavesOldOrWholeNew saw it). A request
// whose context has ended before it starts is not sent.
type partGrace struct{ *s3.Client }

// graceful runs call with a context that ends AbortTimeout after ctx does.
func graceful[T any](ctx context.Context, call func(context.Context) (T, error)) (T, error) {
	if err := ctx.Err(); err != nil {
		var zero T
		return zero, err
	}
	gctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(AbortTimeout, cancel) })
	defer stop()
	return call(gctx)
}

// UploadPart implements transfermanager.S3APIClient.
func (c partGrace) UploadPart(ctx context.Context, in *s3.UploadPartInput, opts ...func(*s3.Options)) (*s3.UploadPartOutput, error) {
	return graceful(ctx, func(ctx context.Context) (*s3.UploadPartOutput, error) { return c.Client.UploadPart(ctx, in, opts...) })
}

// PutObject implements transfermanager.S3APIClient.
func (c partGrace) PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	return graceful(ctx, func(ctx context.Context) (*s3.PutObjectOutput, error) { return c.Client.PutObject(ctx, in, opts...) })
}

// CompleteMultipartUpload implements transfermanager.S3APIClient.
func (c partGrace) CompleteMultipartUpload(ctx context.Context, in *s3.CompleteMultipartUploadInput, opts ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error) {
	return graceful(ctx, func(ctx context.Context) (*s3.CompleteMultipartUploadOutput, error) {
		return c.Client.CompleteMultipartUpload(ctx, in, opts...)
	})
}

// writer is a go-cloud Writer with the context that aborts it.
type writer struct {
	ctx    context.Context
	cancel context.CancelFunc
	w      *gcblob.Writer
	closed bool
}

// Write implements driver.Writer.
func (w *writer) Write(p []byte) (int, error) { return w.w.Write(p) }

// Commit implements driver.Writer: Close publishes the object. When the
// Writer's context or ctx has ended, it aborts instead; ctx ending during
// Close cancels the upload (it may still have been published, whole).
func (w *writer) Commit(ctx context.Context) error {
	if w.closed {
		return errors.New("cloudblob: commit after commit or abort")
	}
	if err := errors.Join(w.ctx.Err(), ctx.Err()); err != nil {
		w.Abort()
		return fmt.Errorf("cloudblob: commit: %w", err)
	}
	w.closed = true
	stop := context.AfterFunc(ctx, w.cancel)
	err := w.w.Close()
	stop()
	w.cancel()
	return err
}

// Abort implements driver.Writer: cancelling the context before Close
// makes go-cloud publish nothing (and the S3 transfer manager abort a
// multipart upload). The context error Close then returns is the abort
// working; any other error (a failed AbortMultipartUpload) is returned.
func (w *writer) Abort() error {
	if w.closed {
		return nil
	}
	w.closed = true
	w.cancel()
	if err := w.w.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("cloudblob: abort: %w", err)
	}
	return nil
}

// Delete implements driver.Bucket: a missing object is not an error. When
// the service fails otherwise, Delete asks whether an object is there at
// all: a key that names only a "directory" of others (fileblob refuses to
// remove a directory that is not empty) holds no object to remove.
func (d *Bucket) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	err := d.b.Delete(ctx, key)
	if err == nil || d.ErrorCode(err) == driver.NotFound {
		return nil
	}
	if _, aerr := d.b.Attributes(ctx, key); d.ErrorCode(aerr) == driver.NotFound {
		return nil
	}
	return err
}

// DeleteBatch implements driver.BatchDeleter. On S3 it removes the
// objects with DeleteObjects requests of up to DeleteBatchMax keys each
// (quiet: S3 reports only the keys it failed to delete; a missing key is
// deleted as far as S3 is concerned), a round trip per thousand keys
// instead of go-cloud's two per key (HEAD, then DELETE). Elsewhere, and on
// an S3 bucket whose name New could not learn, it calls Delete per key.
// The removals are durable when it returns.
func (d *Bucket) DeleteBatch(ctx context.Context, keys []string) error {
	for _, k := range keys {
		if err := checkKey(k); err != nil {
			return err
		}
	}
	if d.s3 == nil || d.s3Bucket == "" {
		for _, k := range keys {
			if err := d.Delete(ctx, k); err != nil {
				return err
			}
		}
		return nil
	}
	for chunk := range slices.Chunk(keys, DeleteBatchMax) {
		objs := make([]s3types.ObjectIdentifier, len(chunk))
		for i, k := range chunk {
			objs[i] = s3types.ObjectIdentifier{Key: aws.String(d.s3Prefix + k)}
		}
		out, err := d.s3.DeleteObjects(ctx, &s3.DeleteObjectsInput{
			Bucket: aws.String(d.s3Bucket),
			Delete: &s3types.Delete{Objects: objs, Quiet: aws.Bool(true)},
		})
		if err != nil {
			return fmt.Errorf("cloudblob: delete %d objects: %w", len(chunk), err)
		}
		if len(out.Errors) > 0 {
			e := out.Errors[0]
			return fmt.Errorf("cloudblob: delete %d objects: %d not deleted, the first %q: %s: %s",
				len(chunk), len(out.Errors), strings.TrimPrefix(aws.ToString(e.Key), d.s3Prefix), aws.ToString(e.Code), aws.ToString(e.Message))
		}
	}
	return nil
}

// SyncDeletes implements driver.BatchDeleter: an object store's deletes
// are durable when they return, so there is nothing left to do.
func (d *Bucket) SyncDeletes(context.Context, []string) error { return nil }

// List implements driver.Bucket.
func (d *Bucket) List(ctx context.Context, after string) iter.Seq2[string, error] {
	if d.sortList {
		return d.listSorted(ctx, after)
	}
	return func(yield func(string, error) bool) {
		opts := &gcblob.ListOptions{BeforeList: func(as func(any) bool) error {
			var in *s3.ListObjectsV2Input
			if after != "" && as(&in) {
				// in.Prefix is the bucket's own prefix (a prefix=
				// parameter), if any: S3 compares whole keys.
				in.StartAfter = aws.String(aws.ToString(in.Prefix) + after)
			}
			return nil
		}}
		last := after
		for k, err := range d.pages(ctx, opts) {
			if err != nil {
				yield("", err)
				return
			}
			if k <= after {
				continue // a service without StartAfter
			}
			if k <= last {
				yield("", fmt.Errorf("%w: %q after %q", ErrListOrder, k, last))
				return
			}
			last = k
			if !yield(k, nil) {
				return
			}
		}
	}
}

// pages yields every key go-cloud lists with opts, page by page.
func (d *Bucket) pages(ctx context.Context, opts *gcblob.ListOptions) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		token := gcblob.FirstPageToken
		for len(token) > 0 {
			objs, next, err := d.b.ListPage(ctx, token, d.pageSize, opts)
			if err != nil {
				yield("", err)
				return
			}
			for _, o := range objs {
				if o.IsDir {
					continue
				}
				if !yield(o.Key, nil) {
					return
				}
			}
			token = next
		}
	}
}

// listSorted lists every key, sorts them and yields those after after:
// fileblob's directory walk is not in byte order. It holds every key in
// memory, as fits a test backend.
func (d *Bucket) listSorted(ctx context.Context, after string) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		var keys []string
		for k, err := range d.pages(ctx, nil) {
			if err != nil {
				yield("", err)
				return
			}
			if k > after {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range slices.Compact(keys) {
			if !yield(k, nil) {
				return
			}
		}
	}
}

// ErrorCode implements driver.Bucket.
func (d *Bucket) ErrorCode(err error) driver.Code {
	switch {
	case errors.Is(err, errKey), errors.Is(err, errReserved):
		return driver.InvalidKey
	case gcerrors.Code(err) == gcerrors.NotFound, errors.Is(err, syscall.ENOTDIR):
		return driver.NotFound
	}
	return driver.Unknown
}

// Close implements driver.Bucket: it closes the go-cloud bucket.
func (d *Bucket) Close() error { return d.b.Close() }

// AbortIncompleteUploads aborts the multipart uploads under b's bucket (and
// prefix) that began more than olderThan ago and were neither completed
// nor aborted: those abandoned by a crash. It is what the lifecycle rule
// AbortIncompleteMultipartUpload does, for servers without lifecycle rules
// (versitygw); pass IncompleteUploadAge, or an age longer than any upload
// in progress may take, since a live upload aborted fails its Commit. It
// returns how many it aborted. b must be an S3 bucket of this package
// (OpenBucket on an s3:// URL, or New over s3blob); otherwise it returns an
// error matching errors.ErrUnsupported.
func AbortIncompleteUploads(ctx context.Context, b *blob.Bucket, olderThan time.Duration) (int, error) {
	d, ok := b.Driver().(*Bucket)
	if !ok || d.s3 == nil || d.s3Bucket == "" {
		return 0, fmt.Errorf("cloudblob: abort incomplete uploads: only on an S3 bucket: %w", errors.ErrUnsupported)
	}
	before := time.Now().Add(-olderThan)
	in := &s3.ListMultipartUploadsInput{Bucket: aws.String(d.s3Bucket), Prefix: aws.String(d.s3Prefix)}
	n := 0
	for {
		out, err := d.s3.ListMultipartUploads(ctx, in)
		if err != nil {
			return n, fmt.Errorf("cloudblob: abort incomplete uploads: %w", err)
		}
		for _, up := range out.Uploads {
			if up.Initiated != nil && !up.Initiated.Before(before) {
				continue
			}
			if _, err := d.s3.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
				Bucket: aws.String(d.s3Bucket), Key: up.Key, UploadId: up.UploadId,
			}); err != nil {
				return n, fmt.Errorf("cloudblob: abort incomplete uploads: %w", err)
			}
			n++
		}
		if !aws.ToBool(out.IsTruncated) {
			return n, nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}
