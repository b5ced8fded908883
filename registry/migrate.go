package registry

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jmoiron/sqlx"
)

//go:embed migrations/tracking/*.sql migrations/primary/*.sql
var migrationFS embed.FS

// Migration set names, as recorded in geo_schema_migrations.set.
const (
	// SetTracking is the secondary's tracking database: geo_registry,
	// geo_paused, geo_event_cursor.
	SetTracking = "tracking"
	// SetPrimary is the primary's database: the geo_events outbox.
	SetPrimary = "primary"
)

// TrackingMigrations returns the tracking database's migrations as SQL
// files named NNNN_name.sql, to be applied in version order, for teams
// that apply migrations with their own tool instead of MigrateTracking.
// Record each version the way that tool does; MigrateTracking keeps its
// own record in geo_schema_migrations.
func TrackingMigrations() fs.FS { return subFS(SetTracking) }

// PrimaryMigrations returns the primary database's migrations, as
// TrackingMigrations does the tracking database's.
func PrimaryMigrations() fs.FS { return subFS(SetPrimary) }

func subFS(set string) fs.FS {
	sub, err := fs.Sub(migrationFS, path.Join("migrations", set))
	if err != nil {
		panic(err) // the embedded directories exist at build time
	}
	return sub
}

// ErrNoSchema is returned (wrapped) by the migrations when the connection
// has no current schema to create tables in (search_path names no existing
// schema).
var ErrNoSchema = errors.New("no current schema")

// MigrateTracking brings the secondary's tracking database up to date: it
// applies every embedded "tracking" migration not yet recorded in
// geo_schema_migrations, in version order, each in its own transaction.
//
// Tables are created unqualified, in the connection's current_schema(). To
// use a schema other than public, create it and name it in the connection
// URL: lib/pq passes unknown URL parameters to the server as run-time
// parameters, so both "...?search_path=geo" and
// "...?options=-c%20search_path%3Dgeo" work (the first is simpler; neither
// works through PgBouncer, which rejects such startup parameters). Every
// connection of the pool must use the same search_path.
//
// It is idempotent and safe to run from several processes at once: each
// migration's transaction takes a transaction-scoped advisory lock (keyed
// by the schema) and re-checks whether its version is applied before
// running it, so each version runs exactly once, in order. A database with
// versions newer than this binary knows is left alone.
func MigrateTracking(ctx context.Context, db *sqlx.DB) error {
	return migrate(ctx, db, SetTracking)
}

// MigratePrimary brings the primary's database up to date with the
// embedded "primary" migrations (the geo_events outbox). It behaves like
// MigrateTracking: same schema rules, same concurrency guarantees.
func MigratePrimary(ctx context.Context, db *sqlx.DB) error {
	return migrate(ctx, db, SetPrimary)
}

type migration struct {
	version int
	name    string
	sql     string
}

// migrations lists the embedded migrations of set in version order.
func migrations(set string) ([]migration, error) {
	dir := path.Join("migrations", set)
	entries, err := fs.ReadDir(migrationFS, dir)
	if err != nil {
		return nil, fmt.Errorf("registry: migrations %s: %w", set, err)
	}
	var ms []migration
	seen := map[int]string{}
	for _, e := range entries {
		name := e.Name()
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v < 1 || !strings.HasSuffix(name, ".sql") {
			return nil, fmt.Errorf("registry: migration %s/%s: name must be NNNN_description.sql", set, name)
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("registry: migrations %s: version %d used by %s and %s", set, v, prev, name)
		}
		seen[v] = name
		b, err := fs.ReadFile(migrationFS, path.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("registry: migration %s/%s: %w", set, name, err)
		}
		ms = append(ms, migration{version: v, name: name, sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}

const migrationsTableSQL = `CREATE TABLE IF NOT EXISTS geo_schema_migrations (
  set text NOT NULL,
  version int NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (set, version)
)`

// migrateLockSQL serializes migrators of one schema of one database.
const migrateLockSQL = `SELECT pg_advisory_xact_lock(hashtext('geo_schema_migrations'), hashtext(current_schema()))`

// migrate applies the embedded migrations of set that db lacks.
func migrate(ctx context.Context, db *sqlx.DB, set string) error {
	if db == nil {
		return fmt.Errorf("registry: migrate %s: nil db", set)
	}
	ms, err := migrations(set)
	if err != nil {
		return err
	}
	var schema *string
	if err := db.GetContext(ctx, &schema, `SELECT current_schema()`); err != nil {
		return fmt.Errorf("registry: migrate %s: %w", set, err)
	}
	if schema == nil {
		return fmt.Errorf("registry: migrate %s: %w: create the schema named by search_path first", set, ErrNoSchema)
	}
	for _, m := range ms {
		if err := applyMigration(ctx, db, set, m); err != nil {
			return fmt.Errorf("registry: migrate %s %s: %w", set, m.name, err)
		}
	}
	return nil
}

// applyMigration runs m in one transaction unless it is already recorded.
func applyMigration(ctx context.Context, db *sqlx.DB, set string, m migration) (err error) {
	// READ COMMITTED whatever the server's default: a migration that
	// locks a table and then reads it (0007 seeds the counts under the
	// triggers' lock) must see the rows committed before its lock.
	tx, err := db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if _, err = tx.ExecContext(ctx, migrateLockSQL); err != nil {
		return err
	}
	// Under the lock, so concurrent first runs do not race on CREATE TABLE.
	if _, err = tx.ExecContext(ctx, migrationsTableSQL); err != nil {
		return err
	}
	var applied bool
	if err = tx.GetContext(ctx, &applied,
		`SELECT EXISTS (SELECT 1 FROM geo_schema_migrations WHERE set = $1 AND version = $2)`,
		set, m.version); err != nil {
		return err
	}
	if applied {
		return tx.Rollback()
	}
	if _, err = tx.ExecContext(ctx, m.sql); err != nil {
		return err
	}
	if _, err = tx.ExecContext(ctx,
		`INSERT INTO geo_schema_migrations (set, version) VALUES ($1, $2)`, set, m.version); err != nil {
		return err
	}
	return tx.Commit()
}
