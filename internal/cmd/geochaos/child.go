package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/geoframework/geo/blob/dirblob"
	"github.com/geoframework/geo/internal/testtype"
	"github.com/geoframework/geo/replicator"
	"github.com/geoframework/geo/replicator/transfer"
)

// runChild is the hidden `geochaos secondary` mode: one secondary site
// process syncing the campaign's item type, until SIGTERM/SIGINT (a
// graceful stop) or SIGKILL (the point of it).
func runChild(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("geochaos secondary", flag.ContinueOnError)
	fs.SetOutput(stderr)
	trackingURL := fs.String("tracking-url", "", "the secondary's tracking database URL")
	primaryDBURL := fs.String("primary-db-url", "", "the primary's database URL (read only)")
	primaryURL := fs.String("primary-url", "", "the primary's transfer endpoint base URL")
	root := fs.String("root", "", "the secondary's storage root")
	site := fs.String("site", "chaos-secondary", "this secondary's site name")
	key := fs.String("key", "", "access key")
	secretHex := fs.String("secret", os.Getenv("GEOCHAOS_SECRET"), "secret, hex (default $GEOCHAOS_SECRET; the campaign passes it there, not in the process's arguments)")
	owner := fs.String("owner", "", "lease owner name (default hostname-pid-random)")
	lease := fs.Duration("lease", 2*time.Second, "registry lease")
	capacity := fs.Int("capacity", 16, "concurrent syncs")
	verbose := fs.Bool("v", false, "log to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	secret, err := hex.DecodeString(*secretHex)
	if err != nil {
		return fmt.Errorf("--secret: %w", err)
	}
	if *trackingURL == "" || *primaryDBURL == "" || *primaryURL == "" || *root == "" || *key == "" {
		return errors.New("--tracking-url, --primary-db-url, --primary-url, --root, --key and --secret are required")
	}
	log := zap.NewNop()
	if *verbose {
		if log, err = zap.NewDevelopment(); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tracking, err := openDB(*trackingURL, 24)
	if err != nil {
		return fmt.Errorf("tracking database: %w", err)
	}
	defer tracking.Close()
	primaryDB, err := openDB(*primaryDBURL, 24)
	if err != nil {
		return fmt.Errorf("primary database: %w", err)
	}
	defer primaryDB.Close()
	storage, err := dirblob.Open(*root)
	if err != nil {
		return err
	}
	defer storage.Close()
	set := replicator.NewSet()
	set.MustRegister(&testtype.Type{TypeName: typeName, Table: typeTable, DB: primaryDB})
	sec, err := replicator.NewSecondary(replicator.SecondaryConfig{
		Strategies: set, Tracking: tracking, Primary: primaryDB, PrimaryURL: *primaryURL,
		Credentials: transfer.Credentials{Site: *site, AccessKey: *key, Secret: secret},
		Storage:     storage, Logger: log, Owner: *owner,
		PollInterval: 100 * time.Millisecond, EventPollInterval: 50 * time.Millisecond,
		Lease: *lease, ShutdownGrace: 3 * time.Second, TransferTimeout: 5 * time.Second,
		SyncCapacityPerType: *capacity, Retry: fastRetry(),
	})
	if err != nil {
		return err
	}
	return sec.Run(ctx)
}

// procs starts and kills secondary processes (this binary in its child
// mode) against an env.
type procs struct {
	e       *env
	exe     string
	logDir  string
	verbose bool

	mu      sync.Mutex
	started int
}

func newProcs(e *env, verbose bool) (*procs, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this program to run secondaries: %w", err)
	}
	dir := filepath.Join(e.Dir, "logs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return &procs{e: e, exe: exe, logDir: dir, verbose: verbose}, nil
}

// child is one secondary process.
type child struct {
	cmd  *exec.Cmd
	done chan error
	log  string
}

// start runs a new secondary process named name.
func (p *procs) start(name string) (*child, error) {
	p.mu.Lock()
	p.started++
	n := p.started
	p.mu.Unlock()
	logPath := filepath.Join(p.logDir, fmt.Sprintf("%s-%d.log", name, n))
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	args := []string{"secondary",
		"--tracking-url", p.e.TrackingURL, "--primary-db-url", p.e.PrimaryDBURL,
		"--primary-url", p.e.PrimaryURL, "--root", p.e.SecondaryRoot,
		"--site", p.e.Credentials.Site, "--key", p.e.Credentials.AccessKey,
		"--owner", fmt.Sprintf("%s-%d", name, n),
	}
	if p.verbose {
		args = append(args, "-v")
	}
	cmd := exec.Command(p.exe, args...)
	cmd.Env = append(os.Environ(), "GEOCHAOS_SECRET="+hex.EncodeToString(p.e.Credentials.Secret))
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start secondary process: %w", err)
	}
	c := &child{cmd: cmd, done: make(chan error, 1), log: logPath}
	go func() { c.done <- cmd.Wait(); lf.Close() }()
	return c, nil
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *child) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
	c.done <- errors.New("killed")
}

// stop asks the process to shut down gracefully (SIGTERM) and waits; it
// is killed if it takes longer than 20s. It returns an error if the
// process failed.
func (c *child) stop() error {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-c.done:
		c.done <- err
		if err != nil {
			return fmt.Errorf("secondary process: %w (log %s)", err, c.log)
		}
		return nil
	case <-time.After(20 * time.Second):
		c.kill()
		return fmt.Errorf("secondary process did not stop within 20s of SIGTERM (log %s)", c.log)
	}
}

// exited reports whether the process ended by itself, with its error.
func (c *child) exited() (bool, error) {
	select {
	case err := <-c.done:
		c.done <- err
		return true, err
	default:
		return false, nil
	}
}
