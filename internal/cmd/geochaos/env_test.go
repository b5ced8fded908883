package main

import (
	"context"
	"errors"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/geoframework/geo/geotest/pgtest"
)

// privateTMPDIR sets TMPDIR to a fresh directory only root may enter
// (0700, owned by root) and returns it: the cluster's account (postgres)
// cannot enter it. It skips unless the test runs as root with a postgres
// user, the only case where the server runs as another account.
func privateTMPDIR(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the server runs as the postgres user only when run as root")
	}
	if _, err := user.Lookup("postgres"); err != nil {
		t.Skipf("needs a postgres system user to run the server as: %v", err)
	}
	base := t.TempDir()
	for _, p := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(base, "private")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", dir)
	return dir
}

// TestNewEnvReportsUnreachableTMPDIR is issue 20 item 17: `make chaos`
// as root with TMPDIR a private (0700) directory panicked with a nil
// pointer in env.close, called from newEnv's cleanup (every "return nil,
// err" had set the named result to nil), instead of saying why the
// cluster did not start. newEnv must return pgtest.ErrUnreachable naming
// TMPDIR, and its cleanup must remove what it made.
func TestNewEnvReportsUnreachableTMPDIR(t *testing.T) {
	dir := privateTMPDIR(t)
	e, err := newEnv(context.Background(), options{out: io.Discard}, envConfig{})
	if err == nil {
		e.close()
		t.Fatalf("newEnv with TMPDIR=%s (0700, root) succeeded, want an error", dir)
	}
	if !errors.Is(err, pgtest.ErrUnreachable) || !strings.Contains(err.Error(), "cannot enter "+dir) ||
		!strings.Contains(err.Error(), "set TMPDIR") {
		t.Fatalf("newEnv = %v, want pgtest.ErrUnreachable naming %s and saying to set TMPDIR", err, dir)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("newEnv's cleanup left %d entries in %s", len(left), dir)
	}
}
