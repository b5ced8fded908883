package pgtest_test

import (
	"context"
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/geoframework/geo/geotest/pgtest"
)

// privateTMPDIR makes a fresh directory only root may enter (0700, owned
// by root), for TMPDIR. It skips unless the tests run as
// root with a "postgres" user: only then does the server run as another
// account than the test's.
func privateTMPDIR(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the server runs as the postgres user only when the tests run as root")
	}
	if _, err := user.Lookup("postgres"); err != nil {
		t.Skipf("needs a postgres system user to run the server as: %v", err)
	}
	base := t.TempDir()
	// The testing package makes base and its parent 0700: open them, so
	// the private directory is the one that blocks.
	for _, p := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(base, "private")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o700); err != nil { // whatever the umask
		t.Fatal(err)
	}
	return dir
}

// TestStartClusterNamesUnreachableTMPDIR is issue 20 item 17: as root,
// with TMPDIR a private (0700) directory, the throwaway cluster's account
// (postgres) cannot enter it. StartCluster must fail with ErrUnreachable,
// naming that directory, why (mode and owner) and what to do, and leave
// nothing behind in it; a Server reports the same through Start.
func TestStartClusterNamesUnreachableTMPDIR(t *testing.T) {
	dir := privateTMPDIR(t)
	t.Setenv("TMPDIR", dir)
	c, err := pgtest.StartCluster(context.Background(), pgtest.Options{})
	if err == nil {
		c.Stop()
		t.Fatalf("StartCluster with TMPDIR=%s (0700, root) succeeded, want ErrUnreachable", dir)
	}
	if !errors.Is(err, pgtest.ErrUnreachable) {
		t.Fatalf("StartCluster = %v, want an error matching ErrUnreachable", err)
	}
	msg := err.Error()
	// dir blocks, unless the test's own TMPDIR (an ancestor) already does.
	blocked := dir
	if i := strings.Index(msg, "cannot enter "); i >= 0 {
		if j := strings.Index(msg[i:], " ("); j >= 0 {
			if p := msg[i+len("cannot enter ") : i+j]; p != dir && strings.HasPrefix(dir, p+"/") {
				t.Logf("an ancestor of TMPDIR blocks: %s", p)
				blocked = p
			}
		}
	}
	for _, want := range []string{`"postgres" user`, "cannot enter " + blocked + " (", "drwx", "owner root", "set TMPDIR to a directory"} {
		if !strings.Contains(msg, want) {
			t.Errorf("StartCluster error %q does not say %q", msg, want)
		}
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("StartCluster left %d entries in %s", len(left), dir)
	}

	t.Setenv(pgtest.EnvURL, "")
	s := pgtest.New(pgtest.Options{})
	if err := s.Start(context.Background()); !errors.Is(err, pgtest.ErrUnreachable) || !strings.Contains(err.Error(), pgtest.EnvURL) {
		t.Errorf("Server.Start = %v, want ErrUnreachable naming %s as the other way out", err, pgtest.EnvURL)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("Server.Stop after a failed start = %v", err)
	}
}

// TestStartStandbyNamesUnreachableTMPDIR: StartStandby makes its data
// directory under TMPDIR too, and checks it the same way.
func TestStartStandbyNamesUnreachableTMPDIR(t *testing.T) {
	dir := privateTMPDIR(t)
	ctx := context.Background()
	primary, err := pgtest.StartCluster(ctx, pgtest.Options{})
	if err != nil {
		t.Fatalf("StartCluster: %v", err)
	}
	defer primary.Stop()
	t.Setenv("TMPDIR", dir)
	standby, err := primary.StartStandby(ctx)
	if err == nil {
		standby.Stop()
		t.Fatalf("StartStandby with TMPDIR=%s (0700, root) succeeded, want ErrUnreachable", dir)
	}
	if !errors.Is(err, pgtest.ErrUnreachable) || !strings.Contains(err.Error(), "set TMPDIR to a directory") {
		t.Fatalf("StartStandby = %v, want ErrUnreachable saying to set TMPDIR", err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("StartStandby left %d entries in %s", len(left), dir)
	}
}
