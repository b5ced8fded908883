// Package s3test gives tests a real S3 server: a throwaway versitygw (an
// Apache-2.0 S3 gateway over a directory) started on a free loopback port
// with a fresh root directory, or the S3 (or MinIO, SeaweedFS) bucket named
// by the GEO_TEST_S3_URL environment variable. Each test gets a bucket of
// its own (Server.NewBucket): a new bucket on versitygw, a new prefix under
// GEO_TEST_S3_URL's bucket; it is emptied and removed when the test ends.
//
// When no server can be had, a test fails if the CI environment variable is
// set and is skipped with the reason (and the install command) otherwise; it
// never passes silently. versitygw is looked for in GEO_TEST_VERSITYGW, on
// PATH, in $GOBIN and in $(go env GOPATH)/bin; install it with
// InstallCommand.
//
// Credentials. versitygw runs with a random access key and secret per
// server. Bucket.Open opens a bucket with them without touching the process
// environment; cloudblob.OpenBucket(Bucket.URL) reads them from the SDK's
// chain, so set Bucket.Env() in the environment first (t.Setenv, or a
// subprocess's Env). With GEO_TEST_S3_URL the credentials come from the
// SDK's usual chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a
// profile), and Env is empty.
//
// FaultProxy stands between a client and the server and injects faults:
// 5xx answers, connection resets, stalls, truncated bodies, slow uploads.
//
// s3test is for tests, benchmarks and chaos runs, not for production use.
//
// Typical wiring in a package's tests:
//
//	var s3srv = s3test.New()
//
//	func TestMain(m *testing.M) { os.Exit(s3srv.Run(m)) }
//
//	func TestSomething(t *testing.T) {
//		b := s3srv.NewBucket(t).Open(t) // *blob.Bucket on a fresh bucket
//		...
//	}
package s3test

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	gcblob "gocloud.dev/blob"
	"gocloud.dev/blob/s3blob"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/blob/cloudblob"
)

const (
	// EnvURL names the environment variable holding the URL of an existing
	// bucket to use instead of a throwaway versitygw, in cloudblob's form
	// (s3://BUCKET?endpoint=...&region=...&use_path_style=true). Its
	// credentials come from the SDK's chain. Tests write under a prefix of
	// their own and remove what they wrote.
	EnvURL = "GEO_TEST_S3_URL"
	// EnvBinary names the environment variable that may hold the path of
	// the versitygw binary.
	EnvBinary = "GEO_TEST_VERSITYGW"
	// InstallCommand installs the versitygw tested with (about 3.5 minutes
	// to build; it lands in $(go env GOPATH)/bin).
	InstallCommand = "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0"
	// Region is the region versitygw answers for.
	Region = "us-east-1"
	// StartTimeout bounds versitygw's start, until it answers HTTP.
	StartTimeout = time.Minute
	// StopTimeout is how long versitygw may take to exit after SIGTERM
	// before it is killed.
	StopTimeout = 10 * time.Second
	// MaxRetryBackoff caps the SDK's backoff between the attempts of a
	// request in the clients Bucket.Open makes (the SDK's default is 20 s),
	// so fault tests run fast. They retry as often as the SDK's default
	// (3 attempts).
	MaxRetryBackoff = 500 * time.Millisecond
	// cleanupTimeout bounds the removal of a test's bucket.
	cleanupTimeout = time.Minute
	// startAttempts is how often a start is tried on a new port when the
	// port chosen was taken in between.
	startAttempts = 3
)

// TB is the part of testing.TB that s3test uses.
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Skip(args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
}

// Credentials are a static access key and secret. String and GoString
// never print the secret.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
}

// Env returns the environment entries that give the SDK's chain these
// credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), for a
// subprocess's Env or t.Setenv.
func (c Credentials) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + c.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + c.SecretAccessKey}
}

// String implements fmt.Stringer without the secret.
func (c Credentials) String() string {
	return fmt.Sprintf("s3test.Credentials{AccessKeyID: %q, SecretAccessKey: <redacted>}", c.AccessKeyID)
}

// GoString implements fmt.GoStringer without the secret.
func (c Credentials) GoString() string { return c.String() }

// provider returns a credentials provider for c.
func (c Credentials) provider() aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, "")
}

// Server is an S3 server for tests: a throwaway versitygw started on first
// use, or the bucket named by GEO_TEST_S3_URL. Its methods are safe for
// concurrent use.
type Server struct {
	once     sync.Once
	startErr error
	gw       *Gateway
	ext      *url.URL // GEO_TEST_S3_URL

	mu  sync.Mutex
	seq int
}

// New returns a Server that starts (or connects) lazily on first use.
func New() *Server { return &Server{} }

// Run runs the tests of m and stops the throwaway gateway, if one was
// started, before returning m's exit code. Call it from TestMain.
func (s *Server) Run(m *testing.M) int {
	code := m.Run()
	if err := s.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "s3test:", err)
	}
	return code
}

// Start starts versitygw, or checks GEO_TEST_S3_URL. NewBucket calls it;
// calling it directly reports the error instead of failing a test. Only
// the first call does any work.
func (s *Server) Start(ctx context.Context) error {
	s.once.Do(func() { s.startErr = s.start(ctx) })
	return s.startErr
}

func (s *Server) start(ctx context.Context) error {
	if raw := os.Getenv(EnvURL); raw != "" {
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != s3blob.Scheme || u.Host == "" {
			return fmt.Errorf("s3test: %s is not an s3://BUCKET?... URL", EnvURL)
		}
		s.ext = u
		return nil
	}
	gw, err := StartGateway(ctx)
	if err != nil {
		return err
	}
	s.gw = gw
	return nil
}

// Stop stops the throwaway gateway and removes its files. It is safe to
// call more than once.
func (s *Server) Stop() error {
	s.mu.Lock()
	gw := s.gw
	s.gw = nil
	s.mu.Unlock()
	if gw == nil {
		return nil
	}
	return gw.Stop()
}

// Gateway returns the throwaway versitygw, or nil when the server is
// GEO_TEST_S3_URL's (or has not started).
func (s *Server) Gateway() *Gateway {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gw
}

// require starts the server or fails the test with the install command,
// under CI and elsewhere alike: a missing server is never a skip.
func (s *Server) require(tb TB) {
	tb.Helper()
	if err := s.Start(context.Background()); err != nil {
		msg := fmt.Sprintf("s3test: no S3 server: %v\n"+
			"fix: install versitygw with `%s` (it lands in $(go env GOPATH)/bin, which s3test searches, or put it on PATH or in %s), "+
			"or set %s to s3://BUCKET?endpoint=...&region=... of a real S3 or MinIO, with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
			err, InstallCommand, EnvBinary, EnvURL)
		tb.Fatal(msg)
	}
}

// NewBucket gives the test a fresh, empty bucket: a new bucket on the
// gateway, or a new prefix in GEO_TEST_S3_URL's bucket. It is emptied and
// removed (multipart uploads included) when the test ends.
func (s *Server) NewBucket(tb TB) *Bucket {
	tb.Helper()
	s.require(tb)
	s.mu.Lock()
	s.seq++
	name := fmt.Sprintf("geotest-%d-%d-%s", os.Getpid(), s.seq, randHex(3))
	gw := s.gw
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	b := &Bucket{}
	if gw != nil {
		b.Name, b.Endpoint, b.creds, b.dir = name, gw.Endpoint, &gw.Credentials, filepath.Join(gw.Root, name)
		b.client = b.newClient(b.Endpoint)
		if _, err := b.client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
			tb.Fatalf("s3test: create bucket %s: %v", name, err)
		}
		b.URL = bucketURL(name, b.Endpoint, "")
		tb.Cleanup(func() {
			if err := os.RemoveAll(b.dir); err != nil {
				tb.Logf("s3test: remove bucket %s: %v", name, err)
			}
		})
		return b
	}
	q := s.ext.Query()
	b.Name, b.Endpoint, b.Prefix = s.ext.Host, q.Get("endpoint"), strings.TrimSuffix(q.Get("prefix"), "/")+"/"+name+"/"
	b.Prefix = strings.TrimPrefix(b.Prefix, "/")
	q.Set("prefix", b.Prefix)
	u := *s.ext
	u.RawQuery = q.Encode()
	b.URL = u.String()
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(cmp.Or(q.Get("region"), Region)))
	if err != nil {
		tb.Fatalf("s3test: load the SDK's configuration: %v", err)
	}
	b.cfg = &cfg
	b.client = b.newClient(b.Endpoint)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if err := b.empty(ctx); err != nil {
			tb.Logf("s3test: empty %s: %v", b.URL, err)
		}
	})
	return b
}

// Bucket is one test's bucket.
type Bucket struct {
	// Name is the S3 bucket's name.
	Name string
	// Prefix is where the test's objects live in the bucket: "" on the
	// gateway, "geotest-.../" under GEO_TEST_S3_URL.
	Prefix string
	// Endpoint is the server's URL ("" for AWS itself).
	Endpoint string
	// URL opens the bucket with cloudblob.OpenBucket, the credentials
	// being in the SDK's chain (see Env).
	URL string

	creds  *Credentials // the gateway's; nil: the SDK's chain
	cfg    *aws.Config  // GEO_TEST_S3_URL's configuration
	dir    string       // the bucket's directory on the gateway
	client *s3.Client
}

// Env returns the environment entries that give cloudblob.OpenBucket(URL)
// the bucket's credentials (nil under GEO_TEST_S3_URL, whose credentials
// are in the environment already).
func (b *Bucket) Env() []string {
	if b.creds == nil {
		return nil
	}
	return b.creds.Env()
}

// Credentials returns the gateway's credentials (false under
// GEO_TEST_S3_URL).
func (b *Bucket) Credentials() (Credentials, bool) {
	if b.creds == nil {
		return Credentials{}, false
	}
	return *b.creds, true
}

// Client returns an S3 client on the bucket's server, for checks the
// portable layer cannot make (multipart uploads, raw objects).
func (b *Bucket) Client() *s3.Client { return b.client }

// Dir returns the bucket's directory on the gateway ("" under
// GEO_TEST_S3_URL).
func (b *Bucket) Dir() string { return b.dir }

// URLAt returns URL with the endpoint replaced, for instance by a
// FaultProxy's.
func (b *Bucket) URLAt(endpoint string) string { return bucketURL(b.Name, endpoint, b.Prefix) }

// Open opens the bucket as a blob.Bucket over cloudblob, with the bucket's
// credentials and without touching the environment. It is closed when the
// test ends.
func (b *Bucket) Open(tb TB) *blob.Bucket {
	tb.Helper()
	return b.OpenAt(tb, b.Endpoint)
}

// OpenAt is Open through another endpoint (a FaultProxy's).
func (b *Bucket) OpenAt(tb TB, endpoint string) *blob.Bucket {
	tb.Helper()
	bk := blob.NewBucket(b.DriverAt(tb, endpoint))
	tb.Cleanup(func() { bk.Close() })
	return bk
}

// DriverAt returns the cloudblob driver on the bucket through endpoint,
// for blob.NewBucket or a wrapper. The caller closes it.
func (b *Bucket) DriverAt(tb TB, endpoint string) *cloudblob.Bucket {
	tb.Helper()
	gb, err := s3blob.OpenBucket(context.Background(), b.newClient(endpoint), b.Name, nil)
	if err != nil {
		tb.Fatalf("s3test: open bucket %s: %v", b.Name, err)
	}
	if b.Prefix != "" {
		gb = gcblob.PrefixedBucket(gb, b.Prefix)
	}
	return cloudblob.New(gb)
}

// newClient returns an S3 client on the bucket's server at endpoint.
func (b *Bucket) newClient(endpoint string) *s3.Client {
	var cfg aws.Config
	if b.cfg != nil {
		cfg = b.cfg.Copy()
	} else {
		cfg = aws.Config{
			Region:      Region,
			Credentials: aws.NewCredentialsCache(b.creds.provider()),
			HTTPClient:  awshttp.NewBuildableClient(),
			Retryer: func() aws.Retryer {
				return retry.NewStandard(func(o *retry.StandardOptions) { o.MaxBackoff = MaxRetryBackoff })
			},
		}
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
			o.UsePathStyle = true
		}
	})
}

// IncompleteUploads returns the keys (whole, with the bucket's prefix) of
// the multipart uploads begun and neither completed nor aborted in the
// bucket.
func (b *Bucket) IncompleteUploads(ctx context.Context) ([]string, error) {
	var keys []string
	in := &s3.ListMultipartUploadsInput{Bucket: aws.String(b.Name), Prefix: aws.String(b.Prefix)}
	for {
		out, err := b.client.ListMultipartUploads(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("s3test: list multipart uploads: %w", err)
		}
		for _, u := range out.Uploads {
			keys = append(keys, aws.ToString(u.Key))
		}
		if !aws.ToBool(out.IsTruncated) {
			return keys, nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}

// StagedFiles returns the files in the gateway's staging area of the
// bucket (versitygw's .sgwtmp: parts of multipart uploads, PUTs in
// progress when O_TMPFILE is unavailable), relative to the bucket's
// directory; nil under GEO_TEST_S3_URL.
func (b *Bucket) StagedFiles() ([]string, error) {
	if b.dir == "" {
		return nil, nil
	}
	var files []string
	err := filepath.WalkDir(filepath.Join(b.dir, ".sgwtmp"), func(p string, e fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if !e.IsDir() {
			rel, _ := filepath.Rel(b.dir, p)
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("s3test: staged files: %w", err)
	}
	return files, nil
}

// empty removes every object and multipart upload under the prefix.
func (b *Bucket) empty(ctx context.Context) error {
	var errs []error
	mp := &s3.ListMultipartUploadsInput{Bucket: aws.String(b.Name), Prefix: aws.String(b.Prefix)}
	if out, err := b.client.ListMultipartUploads(ctx, mp); err == nil {
		for _, u := range out.Uploads {
			_, err := b.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(b.Name), Key: u.Key, UploadId: u.UploadId})
			errs = append(errs, err)
		}
	}
	p := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{Bucket: aws.String(b.Name), Prefix: aws.String(b.Prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		for _, o := range page.Contents {
			_, err := b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b.Name), Key: o.Key})
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// bucketURL is cloudblob's URL of bucket name at endpoint (AWS itself when
// empty) under prefix.
func bucketURL(name, endpoint, prefix string) string {
	q := url.Values{}
	q.Set("region", Region)
	if endpoint != "" {
		q.Set("endpoint", endpoint)
		q.Set("use_path_style", "true")
	}
	if prefix != "" {
		q.Set("prefix", prefix)
	}
	return (&url.URL{Scheme: s3blob.Scheme, Host: name, RawQuery: q.Encode()}).String()
}

// Gateway is a throwaway versitygw serving S3 on a loopback port over a
// fresh root directory, each bucket being a directory under it.
type Gateway struct {
	// Root is the directory served: one subdirectory per bucket.
	Root string
	// Endpoint is the gateway's URL, http://127.0.0.1:PORT.
	Endpoint string
	// Credentials are the gateway's root access key and secret (random).
	Credentials Credentials

	dir     string // Root and the log live below dir
	logFile string
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// StartGateway starts versitygw on a free loopback port with random
// credentials over a fresh root directory, and waits until it answers.
// The credentials go to it in its environment, never on its command line.
func StartGateway(ctx context.Context) (*Gateway, error) {
	bin, err := FindVersitygw()
	if err != nil {
		return nil, err
	}
	var lastErr error
	for range startAttempts {
		g, err := startGateway(ctx, bin)
		if err == nil {
			return g, nil
		}
		lastErr = err
		if !errors.Is(err, errExited) {
			break
		}
	}
	return nil, lastErr
}

// errExited marks a gateway that exited during its start (a port taken
// in between is retried).
var errExited = errors.New("versitygw exited during start")

func startGateway(ctx context.Context, bin string) (*Gateway, error) {
	dir, err := os.MkdirTemp("", "geo-s3test-")
	if err != nil {
		return nil, fmt.Errorf("s3test: %w", err)
	}
	g := &Gateway{dir: dir, Root: filepath.Join(dir, "root"), logFile: filepath.Join(dir, "versitygw.log"), exited: make(chan struct{})}
	g.Credentials = Credentials{AccessKeyID: "geotest" + randHex(6), SecretAccessKey: randHex(20)}
	if err := os.Mkdir(g.Root, 0o755); err != nil {
		return nil, g.fail(fmt.Errorf("s3test: %w", err))
	}
	port, err := freePort()
	if err != nil {
		return nil, g.fail(err)
	}
	g.Endpoint = fmt.Sprintf("http://127.0.0.1:%d", port)
	log, err := os.Create(g.logFile)
	if err != nil {
		return nil, g.fail(fmt.Errorf("s3test: %w", err))
	}
	defer log.Close()
	g.cmd = exec.Command(bin, "--port", fmt.Sprintf("127.0.0.1:%d", port), "--region", Region,
		"--quiet", "--keep-alive", "posix", g.Root)
	g.cmd.Env = append(baseEnv(), "ROOT_ACCESS_KEY_ID="+g.Credentials.AccessKeyID, "ROOT_SECRET_ACCESS_KEY="+g.Credentials.SecretAccessKey)
	g.cmd.Stdout, g.cmd.Stderr = log, log
	g.cmd.SysProcAttr = sysProcAttr()
	if err := g.cmd.Start(); err != nil {
		return nil, g.fail(fmt.Errorf("s3test: start %s: %w", bin, err))
	}
	go func() {
		g.waitErr = g.cmd.Wait()
		close(g.exited)
	}()
	if err := g.waitReady(ctx); err != nil {
		g.Stop()
		return nil, err
	}
	return g, nil
}

// waitReady polls the gateway until it answers HTTP (any status), it
// exits, or StartTimeout passes.
func (g *Gateway) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	client := &http.Client{Timeout: 5 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.Endpoint+"/", nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-g.exited:
			return fmt.Errorf("s3test: %w (%v): %s", errExited, g.waitErr, g.logTail())
		case <-ctx.Done():
			return fmt.Errorf("s3test: versitygw did not answer at %s within %v: %s", g.Endpoint, StartTimeout, g.logTail())
		case <-tick.C:
		}
	}
}

// logTail returns the end of the gateway's log.
func (g *Gateway) logTail() string {
	b, _ := os.ReadFile(g.logFile)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// fail removes the gateway's directory and returns err.
func (g *Gateway) fail(err error) error {
	os.RemoveAll(g.dir)
	return err
}

// Stop stops the gateway (SIGTERM, then SIGKILL after StopTimeout) and
// removes its directory. It is safe to call more than once.
func (g *Gateway) Stop() error {
	if g.cmd != nil && g.cmd.Process != nil {
		select {
		case <-g.exited:
		default:
			g.cmd.Process.Signal(stopSignal())
			select {
			case <-g.exited:
			case <-time.After(StopTimeout):
				g.cmd.Process.Kill()
				<-g.exited
			}
		}
	}
	if err := os.RemoveAll(g.dir); err != nil {
		return fmt.Errorf("s3test: remove %s: %w", g.dir, err)
	}
	return nil
}

// FindVersitygw returns the path of the versitygw binary: GEO_TEST_VERSITYGW,
// else versitygw on PATH, in $GOBIN, or in bin/ of each $(go env GOPATH)
// entry.
func FindVersitygw() (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("s3test: %s: %w", EnvBinary, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	var dirs []string
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		dirs = append(dirs, gobin)
	}
	for _, gp := range filepath.SplitList(goPath()) {
		dirs = append(dirs, filepath.Join(gp, "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, "versitygw")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("s3test: versitygw not found on PATH nor in %s", strings.Join(dirs, ", "))
}

// goPath returns $GOPATH, else `go env GOPATH`, else ~/go.
func goPath() string {
	if gp := os.Getenv("GOPATH"); gp != "" {
		return gp
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		if gp := strings.TrimSpace(string(out)); gp != "" {
			return gp
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, "go")
	}
	return ""
}

// baseEnv is the gateway's environment: only what a process needs, so no
// VGW_* or AWS_* setting of the test's environment changes it.
func baseEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "LANG"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("s3test: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
