package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/blob/cloudblob"
	"github.com/geoframework/geo/geotest/s3test"
)

// Values of -storage.
const (
	storageDir = "dir"
	storageS3  = "s3"
)

// s3Bucket is the bucket the secondary's blobs go to with -storage s3.
const s3Bucket = "geobench"

// s3Site is the secondary's object storage with -storage s3: a throwaway
// versitygw (geotest/s3test) on loopback with one bucket, and a plain S3
// client on it for the raw loops.
type s3Site struct {
	gw     *s3test.Gateway
	client *s3.Client
	url    string // cloudblob.OpenBucket's URL of the bucket
}

// startS3 starts versitygw and creates the bucket. The gateway's
// credentials go into this process's environment, where the SDK's chain
// finds them for cloudblob.OpenBucket and the raw client alike: geo opens
// the bucket by URL as a deployment does.
func startS3(ctx context.Context) (_ *s3Site, err error) {
	gw, err := s3test.StartGateway(ctx)
	if err != nil {
		return nil, fmt.Errorf("versitygw (%s): %w", s3test.InstallCommand, err)
	}
	defer func() {
		if err != nil {
			_ = gw.Stop()
		}
	}()
	for _, kv := range gw.Credentials.Env() {
		k, v, _ := strings.Cut(kv, "=")
		if err := os.Setenv(k, v); err != nil {
			return nil, err
		}
	}
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(s3test.Region))
	if err != nil {
		return nil, err
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(gw.Endpoint)
		o.UsePathStyle = true
	})
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(s3Bucket)}); err != nil {
		return nil, fmt.Errorf("create bucket: %w", err)
	}
	u := fmt.Sprintf("s3://%s?endpoint=%s&region=%s&use_path_style=true", s3Bucket, url.QueryEscape(gw.Endpoint), s3test.Region)
	return &s3Site{gw: gw, client: client, url: u}, nil
}

// open opens the bucket as geo's storage, by URL.
func (s *s3Site) open(ctx context.Context) (*blob.Bucket, error) {
	return cloudblob.OpenBucket(ctx, s.url)
}

// rawKey is where the raw loops put item id's bytes: beside geo's keys,
// never on them.
func rawKey(id int64) string { return "raw/" + itemKey(id) }

// put stores body (whose SHA-256 is sum) at key in one PUT carrying
// x-amz-checksum-sha256, as cloudblob sends an object under
// cloudblob.SinglePartMax.
func (s *s3Site) put(ctx context.Context, key string, body []byte, sum []byte) error {
	_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(s3Bucket), Key: aws.String(key), Body: bytes.NewReader(body),
		ContentLength: aws.Int64(int64(len(body))), ChecksumAlgorithm: s3types.ChecksumAlgorithmSha256,
		ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(sum)),
	})
	return err
}

// rawFetchAllToS3 GETs items 1..n from a plain file server over root with
// conc workers and PUTs each, hashed with SHA-256, to the bucket under
// rawKey: the least any verified transfer into object storage must do,
// without geo. A blob under cloudblob.SinglePartMax is read whole and sent
// in one PUT with its checksum; a larger one streams through the SDK's
// transfer manager in multipart (8 MiB parts, 5 at a time), as cloudblob
// sends it. It returns the elapsed time and the bytes moved.
func (s *s3Site) rawFetchAllToS3(ctx context.Context, root string, n, conc int) (time.Duration, int64, error) {
	base, srv, err := serve(http.FileServer(http.Dir(root)))
	if err != nil {
		return 0, 0, err
	}
	defer srv.Close()
	client := rawClient(conc)
	defer client.CloseIdleConnections()
	tm := transfermanager.New(s.client, func(o *transfermanager.Options) {
		o.MultipartUploadThreshold = cloudblob.SinglePartMax
	})
	var next, total atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, conc)
	start := time.Now()
	for range conc {
		wg.Go(func() {
			var buf bytes.Buffer
			for {
				id := next.Add(1)
				if id > int64(n) || ctx.Err() != nil {
					return
				}
				key := itemKey(id)
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/"+key, nil)
				resp, err := client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				if resp.StatusCode != http.StatusOK {
					resp.Body.Close()
					errs <- fmt.Errorf("raw GET %s: %s", key, resp.Status)
					return
				}
				h := sha256.New()
				var m int64
				if resp.ContentLength >= 0 && resp.ContentLength < cloudblob.SinglePartMax {
					buf.Reset()
					m, err = io.Copy(io.MultiWriter(&buf, h), resp.Body)
					if err == nil {
						err = s.put(ctx, rawKey(id), buf.Bytes(), h.Sum(nil))
					}
				} else {
					cr := &countingReader{r: io.TeeReader(resp.Body, h)}
					_, err = tm.UploadObject(ctx, &transfermanager.UploadObjectInput{
						Bucket: aws.String(s3Bucket), Key: aws.String(rawKey(id)), Body: cr,
					})
					m = cr.n
				}
				resp.Body.Close()
				if err != nil {
					errs <- fmt.Errorf("raw PUT %s: %w", key, err)
					return
				}
				total.Add(m)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return 0, 0, err
	}
	return elapsed, total.Load(), ctx.Err()
}

// rawSHA256 GETs key from the bucket and returns the SHA-256 of its bytes
// (hex) and their number.
func (s *s3Site) rawSHA256(ctx context.Context, key string, buf []byte) (string, int64, error) {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s3Bucket), Key: aws.String(key)})
	if err != nil {
		return "", 0, err
	}
	defer out.Body.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, struct{ io.Reader }{out.Body}, buf)
	if err != nil {
		return "", n, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// uploadBlobs copies items 1..n's files from root into st at their keys,
// 4 at a time: set-up, not measured.
func uploadBlobs(ctx context.Context, root string, st *blob.Bucket, n int) error {
	_, err := forAll(ctx, n, 4, func(id int64) error {
		f, err := os.Open(root + "/" + itemKey(id))
		if err != nil {
			return err
		}
		defer f.Close()
		w, err := st.Create(ctx, itemKey(id), nil)
		if err != nil {
			return err
		}
		if _, err := io.Copy(w, f); err != nil {
			w.Abort()
			return err
		}
		return w.Commit(ctx)
	})
	if err != nil {
		return fmt.Errorf("upload blobs: %w", err)
	}
	return nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// errStorage is returned for a -storage geobench does not know, or a
// scenario that does not support it.
var errStorage = errors.New("geobench: -storage")
