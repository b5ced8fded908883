// Package testtype is a small blob type for geo's own tests, benchmarks and
// fault campaigns: a table of items on the primary, each with bytes in the
// primary's storage, a region column that a secondary's scope can select
// on, and application helpers that create, update and delete items and
// publish their events in the same transaction (the outbox).
//
// It is not an example for adopters (see examples/packagefile for that).
package testtype

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/geoframework/geo/blob"
	"github.com/geoframework/geo/events"
	"github.com/geoframework/geo/internal/stmtcache"
	"github.com/geoframework/geo/strategy"
)

// Schema creates the items table (named by Type.Table) on the primary.
func Schema(table string) string {
	return fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %[1]s (
	id bigserial PRIMARY KEY,
	blob_key text NOT NULL,
	region int NOT NULL DEFAULT 0,
	version int NOT NULL DEFAULT 1
)`, pq.QuoteIdentifier(table))
}

// Type is a BlobStrategy over an items table.
type Type struct {
	TypeName string
	Table    string
	DB       *sqlx.DB
	// Regions narrows the scope: only items whose region is listed. Nil
	// means every item.
	Regions []int
	// KeyPrefix starts every key; "" means the table name.
	KeyPrefix string

	mu    sync.Mutex
	stmts *stmtcache.Cache // made on first use
}

// stmt returns q prepared on t.DB (internal/stmtcache), bound to tx
// when tx is not nil. The endpoint asks BlobKey once per blob it serves
// (BlobKeys under load): unprepared, PostgreSQL planned the lookup on
// every call (docs/performance.md).
func (t *Type) stmt(ctx context.Context, tx *sqlx.Tx, q string) (*sqlx.Stmt, error) {
	t.mu.Lock()
	if t.stmts == nil {
		t.stmts = stmtcache.New(t.DB)
	}
	c := t.stmts
	t.mu.Unlock()
	return c.Prepared(ctx, tx, q)
}

// Name implements strategy.BlobStrategy.
func (t *Type) Name() string { return t.TypeName }

func (t *Type) scopeSQL(arg int) (string, []any) {
	if t.Regions == nil {
		return "", nil
	}
	r := make([]int64, len(t.Regions))
	for i, v := range t.Regions {
		r[i] = int64(v)
	}
	return fmt.Sprintf(" AND region = ANY($%d)", arg), []any{pq.Array(r)}
}

// IDs implements strategy.BlobStrategy.
func (t *Type) IDs(ctx context.Context, after int64, limit int) ([]int64, error) {
	scope, extra := t.scopeSQL(3)
	q := fmt.Sprintf(`SELECT id FROM %s WHERE id > $1%s ORDER BY id LIMIT $2`, pq.QuoteIdentifier(t.Table), scope)
	var ids []int64
	err := t.DB.SelectContext(ctx, &ids, q, append([]any{after, limit}, extra...)...)
	return ids, err
}

// BlobKey implements strategy.BlobStrategy.
func (t *Type) BlobKey(ctx context.Context, id int64) (string, error) {
	scope, extra := t.scopeSQL(2)
	q := fmt.Sprintf(`SELECT blob_key FROM %s WHERE id = $1%s`, pq.QuoteIdentifier(t.Table), scope)
	var key string
	st, err := t.stmt(ctx, nil, q)
	if err == nil {
		err = st.GetContext(ctx, &key, append([]any{id}, extra...)...)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("%s %d: %w", t.TypeName, id, strategy.ErrNotFound)
	}
	return key, err
}

// BlobKeys implements strategy.BatchKeyer: the keys of the items among ids
// in scope, in one query.
func (t *Type) BlobKeys(ctx context.Context, ids []int64) (map[int64]string, error) {
	scope, extra := t.scopeSQL(2)
	q := fmt.Sprintf(`SELECT id, blob_key FROM %s WHERE id = ANY($1::bigint[])%s`, pq.QuoteIdentifier(t.Table), scope)
	st, err := t.stmt(ctx, nil, q)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx, append([]any{pq.Array(ids)}, extra...)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	keys := make(map[int64]string, len(ids))
	for rows.Next() {
		var id int64
		var key string
		if err := rows.Scan(&id, &key); err != nil {
			return nil, err
		}
		keys[id] = key
	}
	return keys, rows.Err()
}

// App is the primary application's side: it changes items and their bytes
// and publishes events in the same transaction.
type App struct {
	Type      *Type // unscoped
	Storage   *blob.Bucket
	Publisher *events.Publisher
	// ContentAddressed stores every item at a key derived from the
	// SHA-256 of its bytes (prefix/cas/<2 hex>/<64 hex>), as LFS servers
	// and deduplicating stores do: items with equal bytes share one key,
	// and a key comes back when its bytes do. The application then
	// removes bytes only when no other item names their key.
	ContentAddressed bool
}

func (a *App) prefix() string {
	if a.Type.KeyPrefix != "" {
		return a.Type.KeyPrefix
	}
	return a.Type.Table
}

// Create inserts an item in region with data and publishes "created".
func (a *App) Create(ctx context.Context, region int, data []byte) (int64, error) {
	tx, err := a.Type.DB.BeginTxx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	var id int64
	ins, err := a.Type.stmt(ctx, tx, fmt.Sprintf(`INSERT INTO %s (blob_key, region) VALUES ('', $1) RETURNING id`, pq.QuoteIdentifier(a.Type.Table)))
	if err != nil {
		return 0, err
	}
	if err := ins.GetContext(ctx, &id, region); err != nil {
		return 0, err
	}
	key := a.keyFor(id, 1, data)
	if err := a.lockKey(ctx, tx, key); err != nil {
		return 0, err
	}
	set, err := a.Type.stmt(ctx, tx, fmt.Sprintf(`UPDATE %s SET blob_key = $2 WHERE id = $1`, pq.QuoteIdentifier(a.Type.Table)))
	if err != nil {
		return 0, err
	}
	if _, err := set.ExecContext(ctx, id, key); err != nil {
		return 0, err
	}
	if err := a.write(ctx, key, data); err != nil {
		return 0, err
	}
	if _, err := a.Publisher.Publish(ctx, tx, a.Type.TypeName, events.OpCreated, id, key); err != nil {
		return 0, err
	}
	return id, tx.Commit()
}

func (a *App) key(id int64, version int) string {
	return a.prefix() + "/" + strconv.FormatInt(id%100, 10) + "/" + strconv.FormatInt(id, 10) + "-v" + strconv.Itoa(version)
}

// keyFor is the key of version of item id holding data.
func (a *App) keyFor(id int64, version int, data []byte) string {
	if !a.ContentAddressed {
		return a.key(id, version)
	}
	sum := sha256.Sum256(data)
	h := hex.EncodeToString(sum[:])
	return a.prefix() + "/cas/" + h[:2] + "/" + h
}

// removeUnreferenced removes the bytes at key unless an item still names
// it (content-addressed items share keys). It runs after the change that
// dropped the reference committed, holding the key's lock (casLockSQL)
// from the check to the removal; a Create or Update of content-addressed
// bytes holds the same lock from its write until its row commits, so one
// of them sees the other.
func (a *App) removeUnreferenced(ctx context.Context, key string) error {
	if !a.ContentAddressed {
		return a.Storage.Remove(ctx, key)
	}
	tx, err := a.Type.DB.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, casLockSQL, key); err != nil {
		return err
	}
	var n int
	q := fmt.Sprintf(`SELECT count(*) FROM %s WHERE blob_key = $1`, pq.QuoteIdentifier(a.Type.Table))
	if err := tx.GetContext(ctx, &n, q, key); err != nil {
		return err
	}
	if n == 0 {
		if err := a.Storage.Remove(ctx, key); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// casLockSQL takes the transaction-level lock of a content-addressed key
// on the primary.
const casLockSQL = `SELECT pg_advisory_xact_lock(hashtextextended('testtype_cas:' || $1, 0))`

// lockKey takes key's lock in tx when items are content-addressed.
func (a *App) lockKey(ctx context.Context, tx *sqlx.Tx, key string) error {
	if !a.ContentAddressed {
		return nil
	}
	_, err := tx.ExecContext(ctx, casLockSQL, key)
	return err
}

func (a *App) write(ctx context.Context, key string, data []byte) error {
	w, err := a.Storage.Create(ctx, key, nil)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		w.Abort()
		return err
	}
	return w.Commit(ctx)
}

// Update replaces an item's bytes (under a new key, as an application
// writing versioned files would) and publishes "updated".
func (a *App) Update(ctx context.Context, id int64, data []byte) error {
	tx, err := a.Type.DB.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var version int
	q := fmt.Sprintf(`UPDATE %s SET version = version + 1 WHERE id = $1 RETURNING version`, pq.QuoteIdentifier(a.Type.Table))
	if err := tx.GetContext(ctx, &version, q, id); err != nil {
		return fmt.Errorf("update %d: %w", id, err)
	}
	var old string
	if err := tx.GetContext(ctx, &old, fmt.Sprintf(`SELECT blob_key FROM %s WHERE id = $1`, pq.QuoteIdentifier(a.Type.Table)), id); err != nil {
		return err
	}
	key := a.keyFor(id, version, data)
	if err := a.lockKey(ctx, tx, key); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`UPDATE %s SET blob_key = $2 WHERE id = $1`, pq.QuoteIdentifier(a.Type.Table)), id, key); err != nil {
		return err
	}
	if err := a.write(ctx, key, data); err != nil {
		return err
	}
	if _, err := a.Publisher.Publish(ctx, tx, a.Type.TypeName, events.OpUpdated, id, key); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	if a.ContentAddressed && old != key {
		return a.removeUnreferenced(ctx, old)
	}
	return nil
}

// UpdateInPlace rewrites an item's bytes at the same key and publishes
// "updated".
func (a *App) UpdateInPlace(ctx context.Context, id int64, data []byte) error {
	key, err := a.Type.BlobKey(ctx, id)
	if err != nil {
		return err
	}
	tx, err := a.Type.DB.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`UPDATE %s SET version = version + 1 WHERE id = $1`, pq.QuoteIdentifier(a.Type.Table)), id); err != nil {
		return err
	}
	if err := a.write(ctx, key, data); err != nil {
		return err
	}
	if _, err := a.Publisher.Publish(ctx, tx, a.Type.TypeName, events.OpUpdated, id, key); err != nil {
		return err
	}
	return tx.Commit()
}

// Delete removes an item and its bytes and publishes "deleted" with the
// key. With publish false it deletes silently (a missed event).
func (a *App) Delete(ctx context.Context, id int64, publish bool) error {
	tx, err := a.Type.DB.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var key string
	q := fmt.Sprintf(`DELETE FROM %s WHERE id = $1 RETURNING blob_key`, pq.QuoteIdentifier(a.Type.Table))
	if err := tx.GetContext(ctx, &key, q, id); err != nil {
		return fmt.Errorf("delete %d: %w", id, err)
	}
	if publish {
		if _, err := a.Publisher.Publish(ctx, tx, a.Type.TypeName, events.OpDeleted, id, key); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	return a.removeUnreferenced(ctx, key)
}

// SetRegion moves an item to another region (in or out of a scope).
func (a *App) SetRegion(ctx context.Context, id int64, region int) error {
	_, err := a.Type.DB.ExecContext(ctx, fmt.Sprintf(`UPDATE %s SET region = $2 WHERE id = $1`, pq.QuoteIdentifier(a.Type.Table)), id, region)
	return err
}

// BulkCreate inserts n items quickly without events (pre-existing data for
// backfill), each with data(i) as bytes. It returns the ids.
func (a *App) BulkCreate(ctx context.Context, n int, region int, data func(i int) []byte) ([]int64, error) {
	ids := make([]int64, 0, n)
	for i := 0; i < n; i++ {
		var id int64
		q := fmt.Sprintf(`INSERT INTO %s (blob_key, region) VALUES ('', $1) RETURNING id`, pq.QuoteIdentifier(a.Type.Table))
		if err := a.Type.DB.GetContext(ctx, &id, q, region); err != nil {
			return ids, err
		}
		b := data(i)
		key := a.keyFor(id, 1, b)
		if err := a.write(ctx, key, b); err != nil {
			return ids, err
		}
		if _, err := a.Type.DB.ExecContext(ctx, fmt.Sprintf(`UPDATE %s SET blob_key = $2 WHERE id = $1`, pq.QuoteIdentifier(a.Type.Table)), id, key); err != nil {
			return ids, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}
