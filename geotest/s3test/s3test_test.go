package s3test_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/geoframework/geo/geotest/s3test"
)

var srv = s3test.New()

func TestMain(m *testing.M) { os.Exit(srv.Run(m)) }

// recTB records how a test ended, for tests of s3test's own messages.
type recTB struct {
	fatal, skip string
}

func (r *recTB) Helper()                           {}
func (r *recTB) Fatal(args ...any)                 { r.fatal = fmt.Sprint(args...); panic(r) }
func (r *recTB) Fatalf(format string, args ...any) { r.fatal = fmt.Sprintf(format, args...); panic(r) }
func (r *recTB) Skip(args ...any)                  { r.skip = fmt.Sprint(args...); panic(r) }
func (r *recTB) Logf(string, ...any)               {}
func (r *recTB) Cleanup(func())                    {}

// end runs f with r, returning when r ends the test.
func (r *recTB) end(f func(s3test.TB)) {
	defer func() {
		if v := recover(); v != nil && v != r {
			panic(v)
		}
	}()
	f(r)
}

// TestMissingGatewayFails: with no versitygw and no GEO_TEST_S3_URL a
// test fails, under CI and elsewhere, with a message that gives the
// install command; it is never skipped.
func TestMissingGatewayFails(t *testing.T) {
	t.Setenv(s3test.EnvURL, "")
	t.Setenv(s3test.EnvBinary, t.TempDir()+"/no-versitygw")
	for _, ci := range []string{"true", ""} {
		t.Setenv("CI", ci)
		r := &recTB{}
		r.end(func(tb s3test.TB) { s3test.New().NewBucket(tb) })
		msg := r.fatal
		if msg == "" || r.skip != "" {
			t.Fatalf("CI=%q: want a failure, got fatal %q, skip %q", ci, r.fatal, r.skip)
		}
		if !strings.Contains(msg, s3test.InstallCommand) || !strings.Contains(msg, s3test.EnvURL) {
			t.Errorf("CI=%q: message %q lacks the install command or %s", ci, msg, s3test.EnvURL)
		}
	}
}

// TestCredentialsNeverPrinted: formatting Credentials never shows the
// secret.
func TestCredentialsNeverPrinted(t *testing.T) {
	c := s3test.Credentials{AccessKeyID: "AKID", SecretAccessKey: "s3cr3t-value"}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		if out := fmt.Sprintf(verb, c); strings.Contains(out, c.SecretAccessKey) {
			t.Errorf("Sprintf(%q) = %q shows the secret", verb, out)
		}
	}
}

// TestGatewayCredentials: the gateway refuses a wrong secret, and its
// bucket works with its own.
func TestGatewayCredentials(t *testing.T) {
	b := srv.NewBucket(t)
	if _, ok := b.Credentials(); !ok {
		t.Skip("not on the throwaway gateway (" + s3test.EnvURL + " is set)")
	}
	bk := b.Open(t)
	if _, err := bk.Stat(t.Context(), "missing"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("Stat(missing) = %v, want not found", err)
	}
	if b.Dir() == "" || !strings.HasPrefix(b.Dir(), srv.Gateway().Root) {
		t.Errorf("Dir() = %q, want a directory under the gateway's root %q", b.Dir(), srv.Gateway().Root)
	}
}
