package pgtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// RewindSettings returns the Options.Settings a cluster needs so that it
// can later be rewound (RewindAsStandby): pg_rewind needs wal_log_hints
// (or data checksums, which initdb here does not enable) and
// full_page_writes, which StartCluster turns off unless Options.Durable,
// and the target's WAL back to the last checkpoint both servers share
// (wal_keep_size keeps it from being recycled; a test writes far less).
func RewindSettings() []string {
	return []string{"wal_log_hints = on", "full_page_writes = on", "wal_keep_size = 512MB"}
}

// RewindAsStandby turns c, a former primary, into a streaming standby of
// source (a standby promoted in c's place): a checkpoint on source (so its
// control file names its new timeline), a fast stop of c, pg_rewind -R
// against source (which writes standby.signal and primary_conninfo), and a
// start with c's own port and socket directory. c must have been started
// with RewindSettings. What c committed
// after source's promotion point is gone afterwards: read it first. Open
// connections to c break.
func (c *Cluster) RewindAsStandby(ctx context.Context, source *Cluster) error {
	if out, err := source.command(ctx, "psql", "-h", source.Host, "-p", fmt.Sprint(source.Port), "-U", "postgres",
		"-d", "postgres", "-c", "CHECKPOINT").CombinedOutput(); err != nil {
		return fmt.Errorf("pgtest: checkpoint the rewind's source: %w: %s", err, out)
	}
	if err := c.pgctl(ctx, "stop", "-m", "fast"); err != nil {
		return err
	}
	conn := fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres", source.Host, source.Port)
	if out, err := c.command(ctx, "pg_rewind", "--target-pgdata", c.dataDir, "--source-server", conn,
		"--write-recovery-conf", "--no-sync").CombinedOutput(); err != nil {
		return fmt.Errorf("pgtest: pg_rewind: %w: %s", err, out)
	}
	// pg_rewind copied source's configuration files, its port and socket
	// directory with them: c's own come after and win.
	f, err := os.OpenFile(filepath.Join(c.dataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	_, werr := fmt.Fprintf(f, "\nport = %d\nunix_socket_directories = '%s'\nhot_standby = on\n", c.Port, filepath.Join(c.Dir, "sock"))
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("pgtest: write postgresql.conf after pg_rewind: %w", werr)
	}
	return c.pgctl(ctx, "start")
}
