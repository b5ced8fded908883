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

// TestNewBenchReportsUnreachableTMPDIR is issue 20 item 17 for geobench:
// its set-up had geochaos's bug (the cleanup called close on the nil
// named result). newBench must return pgtest.ErrUnreachable naming the
// directory and the ways out (TMPDIR, -url), without a panic.
func TestNewBenchReportsUnreachableTMPDIR(t *testing.T) {
	dir := privateTMPDIR(t)
	b, err := newBench(context.Background(), options{}, io.Discard)
	if err == nil {
		_ = b.close()
		t.Fatalf("newBench with TMPDIR=%s (0700, root) succeeded, want an error", dir)
	}
	msg := err.Error()
	if !errors.Is(err, pgtest.ErrUnreachable) || !strings.Contains(msg, "cannot enter "+dir) ||
		!strings.Contains(msg, "set TMPDIR") || !strings.Contains(msg, "-url") {
		t.Fatalf("newBench = %v, want pgtest.ErrUnreachable naming %s, TMPDIR and -url", err, dir)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("newBench's cleanup left %d entries in %s", len(left), dir)
	}
}
