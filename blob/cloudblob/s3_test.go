package cloudblob_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/blob/cloudblob"
	"github.com/geoframework/geo/blob/driver"
	"github.com/geoframework/geo/blob/storagetest"
	"github.com/geoframework/geo/geotest/s3test"
)

var s3srv = s3test.New()

func TestMain(m *testing.M) { os.Exit(s3srv.Run(m)) }

// setCredentials puts the bucket's credentials in the environment, where
// cloudblob.OpenBucket's SDK chain finds them (t.Setenv: not parallel).
func setCredentials(t *testing.T, b *s3test.Bucket) {
	t.Helper()
	for _, kv := range b.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// TestConformanceS3 runs the driver contract against S3 (versitygw, or
// GEO_TEST_S3_URL), each subtest on a fresh bucket opened by URL with the
// credentials from the SDK's chain, as geo opens it. No multipart upload
// and no staged file may remain after a subtest.
func TestConformanceS3(t *testing.T) {
	setCredentials(t, s3srv.NewBucket(t))
	storagetest.RunConformanceTests(t, func(t *testing.T) driver.Bucket {
		b := s3srv.NewBucket(t)
		bk, err := cloudblob.OpenBucket(t.Context(), b.URL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { wantNoLeftovers(t, b) })
		return bk.Driver()
	})
}

// wantNoLeftovers fails the test if the bucket holds a multipart upload or
// a file in the gateway's staging area.
func wantNoLeftovers(t *testing.T, b *s3test.Bucket) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if ups, err := b.IncompleteUploads(ctx); err != nil || len(ups) > 0 {
		t.Errorf("multipart uploads left behind: %q (err %v)", ups, err)
	}
	if files, err := b.StagedFiles(); err != nil || len(files) > 0 {
		t.Errorf("staged files left behind: %q (err %v)", files, err)
	}
}

// writeAll writes data to w in 1 MiB chunks.
func writeAll(t *testing.T, w *blob.Writer, data []byte) {
	t.Helper()
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 1<<20)
		if _, err := w.Write(rest[:n]); err != nil {
			t.Fatalf("Write: %v", err)
		}
		rest = rest[n:]
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestUnfinishedWritesLeaveNothing: a write ended before Commit (its
// context cancelled, Abort, or Commit's own context cancelled) leaves
// nothing visible, no multipart upload and no staged file, for a
// single-PUT object (10 MiB) and for a multipart one (24 MiB) whose upload
// has begun on the server.
func TestUnfinishedWritesLeaveNothing(t *testing.T) {
	for _, size := range []int{10 << 20, 24 << 20} {
		for _, how := range []string{"cancel", "abort", "commit-ctx"} {
			t.Run(fmt.Sprintf("%dMiB/%s", size>>20, how), func(t *testing.T) {
				b := s3srv.NewBucket(t)
				bk := b.Open(t)
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				data := pattern(size, 7)
				w, err := bk.Create(ctx, "unfinished/blob", &blob.WriteOptions{SHA256: sum(data), Size: int64(size)})
				if err != nil {
					t.Fatal(err)
				}
				writeAll(t, w, data)
				if size >= cloudblob.SinglePartMax {
					waitFor(t, "the multipart upload to begin", time.Minute, func() bool {
						ups, err := b.IncompleteUploads(t.Context())
						return err == nil && len(ups) == 1
					})
				}
				switch how {
				case "cancel":
					cancel()
					if err := w.Commit(t.Context()); err == nil {
						t.Fatal("Commit after the Create context was cancelled = nil, want an error")
					}
				case "abort":
					if err := w.Abort(); err != nil {
						t.Fatalf("Abort: %v", err)
					}
				case "commit-ctx":
					done, stop := context.WithCancel(t.Context())
					stop()
					if err := w.Commit(done); err == nil {
						t.Fatal("Commit with a cancelled context = nil, want an error")
					}
				}
				if _, err := bk.Stat(t.Context(), "unfinished/blob"); !errors.Is(err, blob.ErrNotExist) {
					t.Errorf("Stat after an unfinished write = %v, want ErrNotExist", err)
				}
				wantNoLeftovers(t, b)
			})
		}
	}
}

// TestMultipartWriteCommits: an object of SinglePartMax bytes or more goes
// up in parts and is visible, whole, after Commit only.
func TestMultipartWriteCommits(t *testing.T) {
	b := s3srv.NewBucket(t)
	bk := b.Open(t)
	data := pattern(cloudblob.SinglePartMax+3<<20, 3)
	w, err := bk.Create(t.Context(), "multi/part", &blob.WriteOptions{SHA256: sum(data), Size: int64(len(data))})
	if err != nil {
		t.Fatal(err)
	}
	writeAll(t, w, data)
	if _, err := bk.Stat(t.Context(), "multi/part"); !errors.Is(err, blob.ErrNotExist) {
		t.Errorf("Stat before Commit = %v, want ErrNotExist", err)
	}
	if err := w.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	r, err := bk.Open(t.Context(), "multi/part")
	if err != nil {
		t.Fatal(err)
	}
	got, sz, err := blob.SHA256Reader(t.Context(), r)
	r.Close()
	if err != nil || got != sum(data) || sz != int64(len(data)) {
		t.Fatalf("read back %d bytes sha256 %s (err %v), want %d bytes %s", sz, got, err, len(data), sum(data))
	}
	wantNoLeftovers(t, b)
}

// TestServerChecksSHA256: a single-PUT object sent with the SHA-256 the
// caller expects carries x-amz-checksum-sha256, so the server itself
// refuses bytes that differ (the driver is used directly, past the
// portable layer's own check) and stores the checksum of the bytes it
// accepts.
func TestServerChecksSHA256(t *testing.T) {
	b := s3srv.NewBucket(t)
	d := b.DriverAt(t, b.Endpoint)
	defer d.Close()
	ctx := t.Context()
	data := pattern(100_000, 1)
	put := func(key, sha string) error {
		w, err := d.NewWriter(ctx, key, &driver.WriterOptions{SHA256: sha, Size: int64(len(data))})
		if err != nil {
			return err
		}
		if _, err := w.Write(data); err != nil {
			w.Abort()
			return err
		}
		return w.Commit(ctx)
	}
	if err := put("sum/wrong", sum([]byte("other bytes"))); err == nil {
		t.Fatal("Commit of bytes whose SHA-256 differs from WriterOptions.SHA256 = nil: the server did not check it")
	}
	if _, err := d.Attributes(ctx, "sum/wrong"); d.ErrorCode(err) != driver.NotFound {
		t.Errorf("Attributes after the server refused = %v, want NotFound", err)
	}
	if err := put("sum/right", sum(data)); err != nil {
		t.Fatalf("Commit with the right SHA-256: %v", err)
	}
	out, err := b.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(b.Name), Key: aws.String(b.Prefix + "sum/right"), ChecksumMode: types.ChecksumModeEnabled})
	if err != nil {
		t.Fatal(err)
	}
	raw := sha256.Sum256(data)
	if got, want := aws.ToString(out.ChecksumSHA256), base64.StdEncoding.EncodeToString(raw[:]); got != want {
		t.Errorf("stored x-amz-checksum-sha256 = %q, want %q", got, want)
	}
	wantNoLeftovers(t, b)
}

// Environment of the crash helper process (TestCrashHelper).
const (
	envCrashURL  = "CLOUDBLOB_CRASH_URL"
	envCrashSize = "CLOUDBLOB_CRASH_SIZE"
)

// TestCrashHelper is the process TestCrashLeavesNothingVisible kills: it
// writes a blob, says so on stdout, and waits to be killed. It does
// nothing in a normal run.
func TestCrashHelper(t *testing.T) {
	u := os.Getenv(envCrashURL)
	if u == "" {
		return
	}
	size, _ := strconv.Atoi(os.Getenv(envCrashSize))
	bk, err := cloudblob.OpenBucket(context.Background(), u)
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	w, err := bk.Create(context.Background(), "crashed/blob", nil)
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	data := pattern(size, 9)
	for rest := data; len(rest) > 0; rest = rest[min(len(rest), 1<<20):] {
		if _, err := w.Write(rest[:min(len(rest), 1<<20)]); err != nil {
			fmt.Println("error:", err)
			return
		}
	}
	fmt.Println("written")
	select {} // until killed
}

// TestCrashLeavesNothingVisible: a process killed (SIGKILL) in the middle
// of a write leaves nothing visible at the key, for a single-PUT object
// (nothing was sent) and a multipart one (its parts went up). The
// abandoned multipart upload stays until a lifecycle rule or
// AbortIncompleteUploads removes it, which leaves nothing staged.
func TestCrashLeavesNothingVisible(t *testing.T) {
	for _, size := range []int{10 << 20, 24 << 20} {
		t.Run(fmt.Sprintf("%dMiB", size>>20), func(t *testing.T) {
			b := s3srv.NewBucket(t)
			cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
			cmd.Env = append(append(os.Environ(), b.Env()...), envCrashURL+"="+b.URL, envCrashSize+"="+strconv.Itoa(size))
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Wait()
			defer cmd.Process.Kill()
			line, err := bufio.NewReader(out).ReadString('\n')
			if strings.TrimSpace(line) != "written" {
				t.Fatalf("helper said %q (%v), want \"written\"", line, err)
			}
			multipart := size >= cloudblob.SinglePartMax
			if multipart {
				waitFor(t, "the multipart upload to begin", time.Minute, func() bool {
					ups, err := b.IncompleteUploads(t.Context())
					return err == nil && len(ups) == 1
				})
			}
			cmd.Process.Kill()
			cmd.Wait()

			setCredentials(t, b)
			bk := openURL(t, b.URL)
			if _, err := bk.Stat(t.Context(), "crashed/blob"); !errors.Is(err, blob.ErrNotExist) {
				t.Errorf("Stat after the crash = %v, want ErrNotExist", err)
			}
			for k, err := range bk.Keys(t.Context(), "") {
				t.Errorf("Keys after the crash yielded %q, %v, want nothing", k, err)
			}
			n, err := cloudblob.AbortIncompleteUploads(t.Context(), bk, 0)
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]int{true: 1, false: 0}[multipart]; n != want {
				t.Errorf("AbortIncompleteUploads = %d, want %d", n, want)
			}
			wantNoLeftovers(t, b)
		})
	}
}

// TestAbortIncompleteUploadsSparesYoungOnes: uploads younger than the age
// given are left alone (they may be live).
func TestAbortIncompleteUploadsSparesYoungOnes(t *testing.T) {
	b := s3srv.NewBucket(t)
	setCredentials(t, b)
	bk := openURL(t, b.URL)
	if _, err := b.Client().CreateMultipartUpload(t.Context(), &s3.CreateMultipartUploadInput{Bucket: aws.String(b.Name), Key: aws.String(b.Prefix + "young")}); err != nil {
		t.Fatal(err)
	}
	if n, err := cloudblob.AbortIncompleteUploads(t.Context(), bk, cloudblob.IncompleteUploadAge); err != nil || n != 0 {
		t.Errorf("AbortIncompleteUploads(IncompleteUploadAge) = %d, %v, want 0, nil", n, err)
	}
	if n, err := cloudblob.AbortIncompleteUploads(t.Context(), bk, -time.Minute); err != nil || n != 1 {
		t.Errorf("AbortIncompleteUploads(-1m) = %d, %v, want 1, nil", n, err)
	}
	mem, err := cloudblob.OpenBucket(t.Context(), "mem://")
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	if _, err := cloudblob.AbortIncompleteUploads(t.Context(), mem, 0); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("AbortIncompleteUploads(mem) = %v, want ErrUnsupported", err)
	}
}

// TestSecretNeverInErrors: with a wrong secret, and with an endpoint where
// nothing listens, every operation fails with an error that contains
// neither the secret used nor the right one.
func TestSecretNeverInErrors(t *testing.T) {
	b := s3srv.NewBucket(t)
	creds, ok := b.Credentials()
	if !ok {
		t.Skip("needs the gateway's credentials (not under " + s3test.EnvURL + ")")
	}
	wrong := "wrongsecret" + strconv.FormatInt(time.Now().UnixNano(), 36)
	dead := "http://127.0.0.1:1"
	for _, c := range []struct {
		name, url, secret string
	}{
		{"wrong secret", b.URL, wrong},
		{"dead endpoint", b.URLAt(dead), creds.SecretAccessKey},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("AWS_ACCESS_KEY_ID", creds.AccessKeyID)
			t.Setenv("AWS_SECRET_ACCESS_KEY", c.secret)
			t.Setenv("AWS_MAX_ATTEMPTS", "1")
			check := func(op string, err error) {
				t.Helper()
				if err == nil {
					t.Errorf("%s = nil error, want one", op)
					return
				}
				for _, s := range []string{wrong, creds.SecretAccessKey} {
					if strings.Contains(err.Error(), s) || strings.Contains(fmt.Sprintf("%+v", err), s) {
						t.Errorf("%s error contains a secret: %v", op, err)
					}
				}
				if strings.Contains(err.Error(), creds.AccessKeyID) {
					t.Logf("%s error names the access key ID (not a secret): %v", op, err)
				}
			}
			_, err := cloudblob.OpenBucket(t.Context(), c.url)
			check("OpenBucket", err)

			bk := blob.NewBucket(badDriver(t, c.url))
			defer bk.Close()
			_, err = bk.Stat(t.Context(), "k")
			check("Stat", err)
			_, err = bk.Open(t.Context(), "k")
			check("Open", err)
			w, err := bk.Create(t.Context(), "k", nil)
			if err == nil {
				w.Write([]byte("x"))
				err = w.Commit(t.Context())
			}
			check("Commit", err)
			check("Remove", bk.Remove(t.Context(), "k"))
			for _, err := range bk.Keys(t.Context(), "") {
				check("Keys", err)
			}
		})
	}
}

// badDriver opens urlstr without OpenBucket's check that the bucket can be
// listed, so each operation meets the bad setting itself.
func badDriver(t *testing.T, urlstr string) driver.Bucket {
	t.Helper()
	gb, err := cloudblob.OpenGoCloudForTest(t.Context(), urlstr)
	if err != nil {
		t.Fatal(err)
	}
	return cloudblob.New(gb)
}

// TestOpenBucketErrors: a missing bucket fails at OpenBucket (not as "not
// found" for every key later); credentials in the URL are refused without
// being echoed; an unknown scheme fails.
func TestOpenBucketErrors(t *testing.T) {
	b := s3srv.NewBucket(t)
	setCredentials(t, b)
	if _, err := cloudblob.OpenBucket(t.Context(), strings.Replace(b.URL, b.Name, b.Name+"-missing", 1)); err == nil {
		t.Error("OpenBucket of a missing bucket = nil error, want one")
	}
	if _, err := cloudblob.OpenBucket(t.Context(), "s3://AKIDX:hunter2secret@bucket?region=us-east-1"); err == nil || strings.Contains(err.Error(), "hunter2secret") {
		t.Errorf("OpenBucket with credentials in the URL = %v, want an error without them", err)
	}
	if _, err := cloudblob.OpenBucket(t.Context(), "nosuch://bucket"); err == nil {
		t.Error("OpenBucket of an unknown scheme = nil error, want one")
	}
}

func TestOddKeysS3(t *testing.T) {
	b := s3srv.NewBucket(t)
	testOddKeys(t, b.Open(t))
	wantNoLeftovers(t, b)
}

// TestListPagesWithPrefix: a listing crosses page boundaries and starts
// after any key, on a bucket opened with a prefix= parameter (S3's
// StartAfter then names the whole key, prefix included); keys outside the
// prefix are not listed.
func TestListPagesWithPrefix(t *testing.T) {
	b := s3srv.NewBucket(t)
	setCredentials(t, b)
	whole := openURL(t, b.URL)
	bk := openURL(t, b.URL+"&prefix=pre/fix/")
	cloudblob.SetPageSize(bk.Driver().(*cloudblob.Bucket), 3)
	// No key is another's directory: versitygw keeps objects as files.
	keys := []string{"a-b", "a.c", "a/b-", "a/b/c", "b", "c.d", "c/d", "x/y/z", "zz", "é"} // byte order
	for _, k := range keys {
		put(t, bk, k, []byte(k))
	}
	put(t, whole, "outside", []byte("o"))
	put(t, whole, "pre/fiw", []byte("o"))
	for i, after := range append([]string{""}, keys...) {
		var got []string
		for k, err := range bk.Keys(t.Context(), after) {
			if err != nil {
				t.Fatalf("Keys(%q): %v", after, err)
			}
			got = append(got, k)
		}
		if want := keys[i:]; !slices.Equal(got, want) {
			t.Errorf("Keys(%q) = %q, want %q", after, got, want)
		}
	}
}

// TestRangeFromTheEnd: a range starting at the object's end (which the
// contract allows and S3 refuses with 416) reads nothing.
func TestRangeFromTheEnd(t *testing.T) {
	b := s3srv.NewBucket(t)
	d := b.DriverAt(t, b.Endpoint)
	defer d.Close()
	bk := blob.NewBucket(d)
	put(t, bk, "ten", []byte("0123456789"))
	r, err := d.NewRangeReader(t.Context(), "ten", 10, -1)
	if err != nil {
		t.Fatalf("NewRangeReader(offset = size): %v", err)
	}
	defer r.Close()
	if got, err := io.ReadAll(r); err != nil || len(got) != 0 || r.Attributes().Size != 10 {
		t.Errorf("read from the end = %q, %v, size %d, want nothing and size 10", got, err, r.Attributes().Size)
	}
	if _, err := d.NewRangeReader(t.Context(), "missing", 10, -1); d.ErrorCode(err) != driver.NotFound {
		t.Errorf("NewRangeReader(missing, 10) = %v, want NotFound", err)
	}
}
