package s3test_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/blob/cloudblob"
	"github.com/geoframework/geo/geotest/s3test"
)

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i%251)
	}
	return b
}

func sha(b []byte) string { return fmt.Sprintf("%x", sha256.Sum256(b)) }

// write writes data at key through bk with the checksum geo would pass,
// within d.
func write(bk *blob.Bucket, key string, data []byte, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	w, err := bk.Create(ctx, key, &blob.WriteOptions{SHA256: sha(data), Size: int64(len(data))})
	if err != nil {
		return err
	}
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 1<<20)
		if _, err := w.Write(rest[:n]); err != nil {
			w.Abort()
			return err
		}
		rest = rest[n:]
	}
	return w.Commit(ctx)
}

// read reads key through bk within d.
func read(bk *blob.Bucket, key string, d time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	r, err := bk.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// wantWholeOrNothing fails the test unless key holds exactly one of the
// versions given (nil: no object at all), read past the proxy.
func wantWholeOrNothing(t *testing.T, direct *blob.Bucket, key string, versions ...[]byte) {
	t.Helper()
	got, err := read(direct, key, time.Minute)
	if errors.Is(err, blob.ErrNotExist) {
		for _, v := range versions {
			if v == nil {
				return
			}
		}
		t.Errorf("%s: nothing visible, want one of the versions", key)
		return
	}
	if err != nil {
		t.Fatalf("%s: read past the proxy: %v", key, err)
	}
	for _, v := range versions {
		if v != nil && bytes.Equal(got, v) {
			return
		}
	}
	t.Errorf("%s: a partial or foreign object is visible: %d bytes (sha256 %s)", key, len(got), sha(got))
}

// wantAfterWrite checks key after a write of data over old (nil: none)
// that returned err: data when it succeeded, else old or data whole (a
// lost answer may hide a success).
func wantAfterWrite(t *testing.T, direct *blob.Bucket, key string, err error, old, data []byte) {
	t.Helper()
	if err == nil {
		wantWholeOrNothing(t, direct, key, data)
		return
	}
	wantWholeOrNothing(t, direct, key, old, data)
}

// TestFaultsNeverLeavePartialObjects puts every fault on every request of
// one kind (PutObject for a single-PUT object; UploadPart, or
// CompleteMultipartUpload, for a multipart one), for a new key and for an
// overwrite: each write fails or succeeds, and the key holds the old
// version, the new one whole, or nothing; never a part. Reads through the
// fault fail or return the whole object, never a short one without an
// error.
func TestFaultsNeverLeavePartialObjects(t *testing.T) {
	const small, large = 100_000, cloudblob.SinglePartMax + 1<<20
	targets := []struct {
		op   s3test.Op
		size int
	}{{s3test.OpPutObject, small}, {s3test.OpUploadPart, large}, {s3test.OpCompleteMultipartUpload, large}}
	for _, f := range s3test.Faults() {
		t.Run(f.String(), func(t *testing.T) {
			b := srv.NewBucket(t)
			p, err := s3test.NewFaultProxy(b.Endpoint, s3test.FaultProxyOptions{Stall: 500 * time.Millisecond, SlowRate: 8 << 20})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			direct, faulty := b.Open(t), b.OpenAt(t, p.URL())
			for _, tg := range targets {
				data := pattern(tg.size, byte(f))
				key := "new/" + string(tg.op)
				p.SetPolicy(s3test.Always(f, s3test.OnOps(tg.op)))
				err := write(faulty, key, data, time.Minute)
				p.SetPolicy(nil)
				t.Logf("%s, new key: %v", tg.op, err)
				wantAfterWrite(t, direct, key, err, nil, data)
				if tg.size != small {
					continue // an overwrite makes the same requests: once is enough for large objects
				}
				old, key := pattern(5000, 1), "over/"+string(tg.op)
				if err := write(direct, key, old, time.Minute); err != nil {
					t.Fatal(err)
				}
				p.SetPolicy(s3test.Always(f, s3test.OnOps(tg.op)))
				err = write(faulty, key, data, time.Minute)
				p.SetPolicy(nil)
				t.Logf("%s, overwrite: %v", tg.op, err)
				wantAfterWrite(t, direct, key, err, old, data)
			}
			for _, size := range []int{small, large} {
				data := pattern(size, 2)
				if err := write(direct, "read", data, time.Minute); err != nil {
					t.Fatal(err)
				}
				p.SetPolicy(s3test.Always(f, s3test.OnOps(s3test.OpGetObject, s3test.OpHeadObject)))
				got, err := read(faulty, "read", time.Minute)
				p.SetPolicy(nil)
				if err == nil && !bytes.Equal(got, data) {
					t.Errorf("read of %d bytes through %v = %d bytes and no error", size, f, len(got))
				}
			}
			if n := p.Injected()[f]; n == 0 {
				t.Errorf("no request got %v", f)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if ups, err := b.IncompleteUploads(ctx); err == nil && len(ups) > 0 {
				// The server kept them but the client could not abort
				// them: the lifecycle rule, or
				// cloudblob.AbortIncompleteUploads, removes them.
				t.Logf("multipart uploads left to the lifecycle rule: %d", len(ups))
			}
		})
	}
}

// TestTransientFaultsAreRetried: one 5xx answer, one reset or one lost
// answer on a write is retried inside the SDK, and the write succeeds.
func TestTransientFaultsAreRetried(t *testing.T) {
	for _, f := range []s3test.Fault{s3test.ServerError, s3test.ResetBefore, s3test.ResetAfter, s3test.TruncateRequest} {
		for _, op := range []s3test.Op{s3test.OpPutObject, s3test.OpUploadPart} {
			t.Run(fmt.Sprintf("%v/%s", f, op), func(t *testing.T) {
				b := srv.NewBucket(t)
				p, err := s3test.NewFaultProxy(b.Endpoint, s3test.FaultProxyOptions{})
				if err != nil {
					t.Fatal(err)
				}
				defer p.Close()
				size := 100_000
				if op == s3test.OpUploadPart {
					size = cloudblob.SinglePartMax + 1<<20
				}
				data := pattern(size, 4)
				p.SetPolicy(s3test.FirstN(1, f, s3test.OnOps(op)))
				if err := write(b.OpenAt(t, p.URL()), "retried", data, time.Minute); err != nil {
					t.Fatalf("write with one %v on %s: %v", f, op, err)
				}
				if p.Injected()[f] != 1 {
					t.Errorf("injected %v %d times, want 1", f, p.Injected()[f])
				}
				wantWholeOrNothing(t, b.Open(t), "retried", data)
				if got := p.Requests()[op]; op == s3test.OpPutObject && got < 2 {
					t.Errorf("%d PutObject requests, want a retry (≥ 2)", got)
				}
			})
		}
	}
}

// TestStallPastTheDeadlineLeavesNothing: a write whose requests stall
// past its context's deadline fails and leaves nothing.
func TestStallPastTheDeadlineLeavesNothing(t *testing.T) {
	b := srv.NewBucket(t)
	p, err := s3test.NewFaultProxy(b.Endpoint, s3test.FaultProxyOptions{Stall: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.SetPolicy(s3test.Always(s3test.Stall, s3test.Writes()))
	if err := write(b.OpenAt(t, p.URL()), "stalled", pattern(1000, 1), time.Second); err == nil {
		t.Fatal("write stalled past its deadline = nil error, want one")
	}
	wantWholeOrNothing(t, b.Open(t), "stalled", nil)
}

// TestRandomFaults is a small soak in the way geochaos uses the proxy:
// random faults on every request, then every key holds its whole object
// or nothing.
func TestRandomFaults(t *testing.T) {
	b := srv.NewBucket(t)
	p, err := s3test.NewFaultProxy(b.Endpoint, s3test.FaultProxyOptions{Stall: 200 * time.Millisecond, SlowRate: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	faulty, direct := b.OpenAt(t, p.URL()), b.Open(t)
	p.SetPolicy(s3test.Random(0.3, s3test.Faults(), nil))
	datas := map[string][]byte{}
	for i := range 20 {
		size := 3000 + i*1000
		if i%10 == 9 {
			size = cloudblob.SinglePartMax + 512<<10
		}
		k := fmt.Sprintf("random/%d", i)
		datas[k] = pattern(size, byte(i))
		err := write(faulty, k, datas[k], time.Minute)
		t.Logf("%s (%d bytes): %v", k, size, err)
	}
	p.SetPolicy(nil)
	for k, d := range datas {
		wantWholeOrNothing(t, direct, k, nil, d)
	}
	t.Logf("injected: %v", p.Injected())
}

// TestOperation: requests are named as the S3 API names them.
func TestOperation(t *testing.T) {
	for _, c := range []struct {
		method, target string
		want           s3test.Op
	}{
		{"PUT", "/b/k/x", s3test.OpPutObject},
		{"PUT", "/b/k?partNumber=1&uploadId=u", s3test.OpUploadPart},
		{"POST", "/b/k?uploads=", s3test.OpCreateMultipartUpload},
		{"POST", "/b/k?uploadId=u", s3test.OpCompleteMultipartUpload},
		{"DELETE", "/b/k?uploadId=u", s3test.OpAbortMultipartUpload},
		{"DELETE", "/b/k", s3test.OpDeleteObject},
		{"GET", "/b/k", s3test.OpGetObject},
		{"HEAD", "/b/k", s3test.OpHeadObject},
		{"GET", "/b?list-type=2&prefix=p", s3test.OpListObjects},
		{"POST", "/b?delete=", s3test.OpDeleteObjects},
		{"PUT", "/b", s3test.OpOther},
	} {
		r, err := http.NewRequest(c.method, "http://h"+c.target, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := s3test.Operation(r); got != c.want {
			t.Errorf("Operation(%s %s) = %s, want %s", c.method, c.target, got, c.want)
		}
	}
}
